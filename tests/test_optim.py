"""MXNet-exact weight decay: the one-step figure, momentum steps against a NumPy MXNet
update, and the classifier-only multiplier (fc7_wd_mult)."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from distill.train.optim import GradientWeightDecay, build_optimizer
from distill.train.recipe import OptimizerConfig


def mxnet_sgd(weight, grads, lr, wd, momentum):
    """MXNet's SGD update: mom = momentum·mom − lr·(g + wd·w); w += mom."""
    w, mom = np.array(weight, dtype=np.float64), np.zeros_like(weight, dtype=np.float64)
    for g in grads:
        mom = momentum * mom - lr * (g + wd * w)
        w = w + mom
    return w


def step(config, weights, grads_per_step, lr, mult=None):
    variables = [keras.Variable(np.array(w, dtype=np.float32), name="kernel") for w in weights]
    optimizer = build_optimizer(config, lr)
    decay = GradientWeightDecay(config.weight_decay, variables,
                                classifier_variables=variables[1:] if mult else (),
                                classifier_mult=mult or 1.0)
    for grads in grads_per_step:
        grads = [tf.constant(g, dtype=tf.float32) for g in grads]
        optimizer.apply_gradients(zip(decay(grads, variables), variables))
    return [v.numpy() for v in variables]


def test_one_step_weight_decay_figure():
    config = OptimizerConfig(name="sgd", momentum=0.0, weight_decay=5e-4)
    (w,) = step(config, [np.ones(1)], [[np.ones(1)]], lr=0.1)
    assert w[0] == pytest.approx(0.89995, abs=1e-7)   # TF Addons SGDW gave 0.8995


def test_three_momentum_steps_match_mxnet():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(4, 3))
    grads = [rng.normal(size=(4, 3)) for _ in range(3)]
    config = OptimizerConfig(name="sgd", momentum=0.9, weight_decay=5e-4)
    (w,) = step(config, [w0], [[g] for g in grads], lr=0.1)
    np.testing.assert_allclose(w, mxnet_sgd(w0, grads, 0.1, 5e-4, 0.9), rtol=1e-5, atol=1e-6)


def test_classifier_multiplier_acts_on_classifier_only():
    config = OptimizerConfig(name="sgd", momentum=0.0, weight_decay=5e-4)
    body, head = step(config, [np.ones(2), np.ones(2)], [[np.zeros(2), np.zeros(2)]], lr=0.1, mult=10)
    np.testing.assert_allclose(body, 1 - 0.1 * 5e-4, rtol=1e-6)
    np.testing.assert_allclose(head, 1 - 0.1 * 5e-4 * 10, rtol=1e-6)


def test_bias_and_beta_are_not_decayed():
    names = ["kernel", "bias", "gamma", "beta", "depthwise_kernel"]
    variables = [keras.Variable(np.ones(1, np.float32), name=n) for n in names]
    decay = GradientWeightDecay(0.1, variables)
    assert decay.multipliers == [1.0, 0.0, 1.0, 0.0, 1.0]
