"""Distillation losses against NumPy formulas (atol 1e-5), projection, float64 gradients."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from distill import losses

SHAPES = [(1, 4), (3, 8), (16, 128)]


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def pair(batch, dim, seed=0, teacher_dim=None):
    rng = np.random.default_rng(seed + batch * dim)
    return rng.normal(size=(batch, dim)) * 3, rng.normal(size=(batch, teacher_dim or dim))


@pytest.mark.parametrize("batch,dim", SHAPES)
def test_l2_and_cosine(batch, dim):
    s, t = pair(batch, dim)
    l2 = losses.get("l2")(s, t)
    assert l2.shape == (batch,) and l2.dtype == tf.float32
    np.testing.assert_allclose(l2.numpy(), ((unit(s) - unit(t)) ** 2).sum(axis=1), atol=1e-5)
    np.testing.assert_allclose(losses.get("cosine")(s, t).numpy(), 1 - (unit(s) * unit(t)).sum(axis=1), atol=1e-5)
    np.testing.assert_allclose(l2.numpy(), 2 * losses.get("cosine")(s, t).numpy(), atol=1e-5)


@pytest.mark.parametrize("batch,dim", SHAPES)
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kl(batch, dim, temperature):
    s, t = pair(batch, dim)
    log_p_t, log_p_s = log_softmax(t / temperature), log_softmax(s / temperature)
    expected = temperature ** 2 * (np.exp(log_p_t) * (log_p_t - log_p_s)).sum(axis=1)
    got = losses.get("kl", temperature=temperature)(s, t)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)
    assert np.all(losses.get("kl", temperature=temperature)(t, t).numpy() < 1e-5)


@pytest.mark.parametrize("name", ["l2", "cosine", "kl"])
def test_projection_when_dims_differ(name):
    s, t = pair(5, 6, teacher_dim=10)
    loss = losses.get(name)
    assert loss.trainable_variables == []
    loss.build(embedding_dim=6, teacher_dim=10)
    (kernel,) = loss.trainable_variables
    assert tuple(kernel.shape) == (6, 10)
    projected = s @ kernel.numpy()
    same = losses.get(name)(projected.astype(np.float32), t).numpy()
    np.testing.assert_allclose(loss(s, t).numpy(), same, rtol=1e-5, atol=1e-5)
    with tf.GradientTape() as tape:
        total = tf.reduce_mean(loss(s, t))
    assert np.all(np.isfinite(tape.gradient(total, kernel.value).numpy()))
    losses.get(name).build(embedding_dim=6, teacher_dim=6)  # equal dims: no projection
    with pytest.raises(ValueError, match="projection"):
        losses.get(name, projection=False)(s, t)


def test_projection_built_lazily_inside_tf_function():
    loss = losses.get("l2")
    s, t = pair(4, 6, teacher_dim=3)
    value = tf.function(loss.__call__)(tf.constant(s, tf.float32), tf.constant(t, tf.float32))
    assert value.shape == (4,) and len(loss.trainable_variables) == 1


@pytest.mark.parametrize("name", ["l2", "cosine", "kl"])
def test_gradients_float64(name):
    s, t = pair(4, 5, seed=2)
    loss = losses.get(name, **({"temperature": 2.0} if name == "kl" else {}))
    teacher = tf.constant(t)

    def f(x):
        return tf.reduce_sum(loss(x, teacher) * tf.constant([1.0, 2.0, 0.5, 1.5], tf.float64))

    theoretical, numerical = tf.test.compute_gradient(f, [tf.constant(s)], delta=1e-6)
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6)
