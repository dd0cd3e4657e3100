"""LR schedules against their closed forms, balanced N×K batches, eval every N steps."""
from __future__ import annotations

import math

import numpy as np
import pytest

from distill.train.recipe import ScheduleConfig
from distill.train.schedules import learning_rate


def lr_at(config, base, stage_first, step, steps=10):
    return learning_rate(config, base, stage_first, step, steps)


def test_constant_and_step_schedules():
    assert lr_at(ScheduleConfig(), 0.1, 0, 57) == pytest.approx(0.1)
    step = ScheduleConfig(name="step", epochs=[2, 4], factor=0.1)
    assert [lr_at(step, 0.1, 0, s) for s in (0, 19, 20, 39, 40, 99)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_exponential_is_per_batch_within_stage():
    config = ScheduleConfig(name="exponential", decay_rate=0.5, decay_epochs=2.0)
    # stage starts at epoch 3; step 45 = epoch 4.5 → 1.5 epochs into the stage
    assert lr_at(config, 0.2, 3, 45) == pytest.approx(0.2 * 0.5 ** (1.5 / 2.0))


def test_cosine_with_restarts_closed_form():
    config = ScheduleConfig(name="cosine_restarts", first_epochs=2.0, t_mul=2.0, m_mul=0.5, alpha=0.1)

    def reference(epoch):
        start, period, peak = 0.0, 2.0, 1.0
        while epoch >= start + period:
            start, period, peak = start + period, period * 2.0, peak * 0.5
        cos = 0.5 * (1 + math.cos(math.pi * (epoch - start) / period))
        return 1.0 * ((1 - 0.1) * cos * peak + 0.1)

    for step in (0, 5, 19, 20, 31, 59, 60, 95):
        assert lr_at(config, 1.0, 0, step) == pytest.approx(reference(step / 10))


def test_warmup_ramps_linearly():
    config = ScheduleConfig(warmup_steps=4)
    assert [lr_at(config, 0.4, 0, s) for s in range(6)] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4])


def test_unknown_schedule_refused():
    with pytest.raises(ValueError, match="unknown lr schedule 'linear'"):
        lr_at(ScheduleConfig(name="linear"), 0.1, 0, 0)


def test_balanced_batches_hold_n_identities_times_k():
    from distill.train.pipeline import balanced_order

    labels = np.repeat(np.arange(12), [10, 10, 10, 3, 10, 10, 10, 10, 2, 10, 10, 10])
    ids = np.arange(len(labels))
    order = balanced_order(ids, labels, batch_size=12, per_identity=4, seed=0, epoch=1)
    assert len(order) % 12 == 0 and len(order) >= 12 * 6
    for batch in order.reshape(-1, 12):
        classes, counts = np.unique(labels[batch], return_counts=True)
        assert len(classes) == 3 and set(counts) == {4}
    again = balanced_order(ids, labels, batch_size=12, per_identity=4, seed=0, epoch=1)
    np.testing.assert_array_equal(order, again)                        # a function of (seed, epoch)
    with pytest.raises(ValueError, match="must be a multiple"):
        balanced_order(ids, labels, batch_size=10, per_identity=4, seed=0, epoch=0)
