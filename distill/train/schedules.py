"""Learning-rate schedules, evaluated every batch.

A stage's ``lr`` is the base rate; the recipe's ``schedule`` shapes it within the run:

* ``constant`` – the stage's lr (stages alone give MXNet-style step drops);
* ``step`` – × ``factor`` at each (global) epoch in ``epochs``;
* ``exponential`` – × ``decay_rate`` every ``decay_epochs`` since the stage started;
* ``cosine_restarts`` – SGDR within each stage: period ``first_epochs``, ×``t_mul`` per
  restart, peak ×``m_mul``, floor ``alpha``·lr.

``warmup_steps`` ramps linearly from 0 over the first steps of the run.
"""
from __future__ import annotations

import math

from distill.registry import Registry

#: name → f(config, base_lr, epoch_in_stage (float), global_epoch (float)) → lr
SCHEDULES = Registry("lr schedule", skip=("config", "lr", "stage_epoch", "global_epoch"))
register_schedule = SCHEDULES.register


@register_schedule("constant")
def constant(config, lr, stage_epoch, global_epoch):
    return lr


@register_schedule("step")
def step(config, lr, stage_epoch, global_epoch):
    drops = sum(1 for boundary in config.epochs if global_epoch >= boundary)
    return lr * config.factor ** drops


@register_schedule("exponential")
def exponential(config, lr, stage_epoch, global_epoch):
    return lr * config.decay_rate ** (stage_epoch / config.decay_epochs)


@register_schedule("cosine_restarts")
def cosine_restarts(config, lr, stage_epoch, global_epoch):
    period, start, peak = config.first_epochs, 0.0, 1.0
    while stage_epoch >= start + period:
        start, period, peak = start + period, period * config.t_mul, peak * config.m_mul
    progress = (stage_epoch - start) / period
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return lr * ((1 - config.alpha) * cosine * peak + config.alpha)


def learning_rate(config, base_lr: float, stage_first_epoch: int, global_step: int,
                  steps_per_epoch: int) -> float:
    """The lr of one batch, with warmup applied."""
    schedule = SCHEDULES.builder(config.name, "schedule.name")
    global_epoch = global_step / max(steps_per_epoch, 1)
    lr = schedule(config, base_lr, global_epoch - stage_first_epoch, global_epoch)
    if config.warmup_steps and global_step < config.warmup_steps:
        lr *= (global_step + 1) / config.warmup_steps
    return float(lr)
