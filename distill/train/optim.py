"""Optimizers with MXNet-exact weight decay.

MXNet's ``SGD(wd)`` adds ``wd·w`` to the gradient *before* momentum (an L2 term
``wd/2·‖w‖²``): ``mom = μ·mom − lr·(g + wd·w); w += mom``. Keras 3's ``weight_decay`` is
decoupled instead, so for ``sgd``, ``adam`` and ``nadam`` we add ``wd·mult·w`` to each
gradient ourselves (:class:`GradientWeightDecay`); ``adamw`` keeps Keras's decoupled decay.
As in MXNet, only weights are decayed (kernels, BN gamma, PReLU alpha, classifier), never
biases, BN beta or statistics; ``classifier_wd_mult`` is MXNet's ``fc7_wd_mult``.
"""
from __future__ import annotations

from distill.registry import Registry

DECAYED_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel", "gamma", "alpha", "embeddings")

#: name → builder(config, learning_rate) → keras optimizer; ``decoupled`` ones skip the L2 term.
OPTIMIZERS = Registry("optimizer", skip=("config", "learning_rate"))
DECOUPLED = {"adamw"}
register_optimizer = OPTIMIZERS.register


@register_optimizer("sgd")
def _sgd(config, learning_rate):
    import keras

    return keras.optimizers.SGD(learning_rate=learning_rate, momentum=config.momentum,
                                nesterov=config.nesterov)


@register_optimizer("adam")
def _adam(config, learning_rate):
    import keras

    return keras.optimizers.Adam(learning_rate=learning_rate)


@register_optimizer("nadam")
def _nadam(config, learning_rate):
    import keras

    return keras.optimizers.Nadam(learning_rate=learning_rate)


@register_optimizer("adamw")
def _adamw(config, learning_rate):
    import keras

    optimizer = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=config.weight_decay)
    optimizer.exclude_from_weight_decay(var_names=["bias", "beta", "moving_mean", "moving_variance"])
    return optimizer


def build_optimizer(config, learning_rate: float):
    return OPTIMIZERS.builder(config.name, "optimizer.name")(config, learning_rate)


def is_decayed(variable) -> bool:
    return variable.name.split(":")[0].split("/")[-1] in DECAYED_NAMES


class GradientWeightDecay:
    """Adds ``wd·mult·w`` to each gradient (MXNet semantics); multipliers fixed at build."""

    def __init__(self, weight_decay: float, variables, classifier_variables=(), classifier_mult=1.0):
        classifier_ids = {id(v) for v in classifier_variables}
        self.weight_decay = float(weight_decay)
        self.multipliers = [
            (classifier_mult if id(v) in classifier_ids else 1.0) if is_decayed(v) else 0.0
            for v in variables
        ]

    def __call__(self, gradients, variables, scale: float = 1.0):
        """Gradients plus ``scale·wd·mult·w`` (``scale`` = 1/replicas when they are summed)."""
        if self.weight_decay == 0.0:
            return list(gradients)
        return [g if (g is None or m == 0.0) else g + (scale * self.weight_decay * m) * v
                for g, v, m in zip(gradients, variables, self.multipliers)]

    def penalty(self, variables):
        """The same decay as a loss term, ``wd/2·Σ mult·‖w‖²`` (for loss-scaled training)."""
        import tensorflow as tf

        terms = [0.5 * self.weight_decay * m * tf.reduce_sum(tf.square(tf.cast(v, tf.float32)))
                 for v, m in zip(variables, self.multipliers) if m]
        return tf.add_n(terms) if terms and self.weight_decay else tf.constant(0.0)
