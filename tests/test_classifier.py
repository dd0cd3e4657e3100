"""CosineClassifier: cosines against NumPy (atol 1e-6), sub-centres, float32 under mixed
precision, serialisation."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from distill.models.classifier import CosineClassifier


def np_cosine(x, kernel, classes, k):
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    w = kernel / np.linalg.norm(kernel, axis=0, keepdims=True)
    return (x @ w).reshape(len(x), classes, k).max(axis=2)


@pytest.mark.parametrize("batch,dim,classes,k", [(1, 4, 2, 1), (5, 8, 3, 3), (16, 32, 10, 2)])
def test_cosines_match_numpy(batch, dim, classes, k):
    layer = CosineClassifier(classes, sub_centers=k)
    x = np.random.default_rng(batch).normal(size=(batch, dim)).astype(np.float32) * 5
    out = layer(x)
    assert layer.kernel.path.endswith("kernel") and tuple(layer.kernel.shape) == (dim, classes * k)
    assert out.shape == (batch, classes) and out.dtype == tf.float32
    expected = np_cosine(x.astype(np.float64), layer.kernel.numpy().astype(np.float64), classes, k)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)
    assert np.all(np.abs(out.numpy()) <= 1.0)


def test_float32_under_mixed_precision_and_zero_embedding():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        layer = CosineClassifier(4, name="head")
        out = layer(tf.constant(np.ones((2, 6)), tf.float16))
        assert layer.dtype_policy.name == "float32" and layer.kernel.dtype == "float32"
        assert out.dtype == tf.float32
    finally:
        keras.config.set_dtype_policy(previous)
    x = tf.Variable(np.zeros((1, 6), np.float32))
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(layer(x))
    assert np.all(np.isfinite(tape.gradient(y, x).numpy()))


def test_serialisation_round_trip(tmp_path):
    inputs = keras.Input((8,))
    model = keras.Model(inputs, CosineClassifier(5, sub_centers=2, name="classifier")(inputs))
    path = tmp_path / "m.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    x = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    np.testing.assert_allclose(restored(x).numpy(), model(x).numpy(), atol=1e-6)
    config = restored.get_layer("classifier").get_config()
    assert config["num_classes"] == 5 and config["sub_centers"] == 2
    assert CosineClassifier.from_config(config).sub_centers == 2
    with pytest.raises(ValueError, match="sub_centers"):
        CosineClassifier(3, sub_centers=0)


def test_trainable_in_tf_function():
    layer = CosineClassifier(3, kernel_initializer="random_normal")
    layer.build((None, 4))
    x = tf.constant(np.random.default_rng(1).normal(size=(6, 4)), tf.float32)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(1.0 - layer(x)[:, 0])
        return tape.gradient(loss, layer.trainable_variables)

    (grad,) = step()
    assert grad.shape == (4, 3) and np.all(np.isfinite(grad.numpy()))
