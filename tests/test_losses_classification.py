"""Classification losses against independent NumPy implementations of their formulas.

Tolerance: float32 TF vs float64 NumPy, rtol 1e-4 / atol 1e-3 on losses of magnitude up
to ~100 (scale 64); gradient checks in float64 to 1e-5.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from distill import losses

SHAPES = [(1, 2), (5, 2), (7, 11), (16, 40)]
RTOL, ATOL = 1e-4, 1e-3


def sample(batch, classes, seed=0, low=-0.95, high=0.95):
    rng = np.random.default_rng(seed + 97 * batch + classes)
    labels = rng.integers(0, classes, batch).astype(np.int32)
    cosine = rng.uniform(low, high, (batch, classes))
    norms = rng.uniform(5.0, 120.0, batch)
    return labels, cosine, norms


# ---------------------------------------------------------------- NumPy references
def np_ce(logits, labels, smoothing=0.0):
    c = logits.shape[1]
    target = np.eye(c)[labels] * (1 - smoothing) + smoothing / c
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -(target * log_p).sum(axis=1)


def with_target(cosine, labels, target):
    out = cosine.copy()
    out[np.arange(len(labels)), labels] = target
    return out


def np_combined_target(c, m1, m2, m3, easy=False):
    theta = np.arccos(c)
    value = np.cos(m1 * theta + m2)
    if easy:
        value = np.where(c > 0, value, c)
    else:
        theta_th = min((math.pi - m2) / m1, math.pi)
        penalty = math.sin(theta_th) * ((m1 - 1) * theta_th + m2)
        value = np.where(m1 * theta + m2 < math.pi, value, c - penalty)
    return value - m3


def np_arcface_insightface(c, m):
    """InsightFace's ArcFace: cosθ·cos m − sinθ·sin m where cosθ > cos(π−m), else cosθ − sin(π−m)·m."""
    body = c * math.cos(m) - np.sqrt(1 - c ** 2) * math.sin(m)
    return np.where(c > math.cos(math.pi - m), body, c - math.sin(math.pi - m) * m)


def np_margin_softmax(labels, cosine, scale, power, k, smoothing=0.0):
    z = scale * cosine
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    rows = np.arange(len(labels))
    p[rows, labels] = (p[rows, labels] ** power + k * p[rows, labels]) / 2
    q = p / p.sum(axis=1, keepdims=True)
    target = np.eye(cosine.shape[1])[labels] * (1 - smoothing) + smoothing / cosine.shape[1]
    return -(target * np.log(q)).sum(axis=1)


def np_adacos(labels, cosine, previous):
    rows = np.arange(len(labels))
    theta = np.arccos(cosine[rows, labels])
    others = np.exp(previous * cosine)
    others[rows, labels] = 0
    b_avg = others.sum() / len(labels)
    theta_med = np.sort(theta)[(len(theta) - 1) // 2]
    scale = np.log(b_avg) / np.cos(min(math.pi / 4, theta_med))
    return scale, np_ce(scale * cosine, labels)


def np_curricular(labels, cosine, t_prev, m=0.5, s=64.0, momentum=0.01):
    rows = np.arange(len(labels))
    target = cosine[rows, labels]
    t = momentum * target.mean() + (1 - momentum) * t_prev
    cos_m = np.cos(np.arccos(target) + m)
    logits = np.where(cosine > cos_m[:, None], cosine * (t + cosine), cosine)
    final = np.where(target > math.cos(math.pi - m), cos_m, target - math.sin(math.pi - m) * m)
    return t, np_ce(s * with_target(logits, labels, final), labels)


def np_magface(labels, cosine, norms, s=64., la=10., ua=110., lm=.45, um=.8, lg=35.):
    a = np.clip(norms, la, ua)
    m = (um - lm) / (ua - la) * (a - la) + lm
    target = cosine[np.arange(len(labels)), labels]
    theta = np.arccos(target)
    new = np.where(theta + m < math.pi, np.cos(theta + m), target - np.sin(math.pi - m) * m)
    return np_ce(s * with_target(cosine, labels, new), labels) + lg * (a / ua ** 2 + 1 / a)


def np_adaface(labels, cosine, norms, mean_prev, std_prev, m=.4, h=.333, s=64., alpha=.01, eps=1e-3):
    safe = np.clip(norms, 0.001, 100)
    std = safe.std(ddof=1) if len(safe) > 1 else 0.0
    mean = alpha * safe.mean() + (1 - alpha) * mean_prev
    std = alpha * std + (1 - alpha) * std_prev
    scaler = np.clip((safe - mean) / (std + eps) * h, -1, 1)
    c = np.clip(cosine, -1 + eps, 1 - eps)
    theta = np.arccos(c[np.arange(len(labels)), labels])
    theta = np.clip(theta - m * scaler, eps, math.pi - eps)
    new = np.cos(theta) - (m + m * scaler)
    return (mean, std), np_ce(s * with_target(c, labels, new), labels)


# ------------------------------------------------------------------------ tests
@pytest.mark.parametrize("batch,classes", SHAPES)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_softmax_family(batch, classes, smoothing):
    labels, cosine, _ = sample(batch, classes)
    got = losses.get("softmax", label_smoothing=smoothing)(labels, cosine.astype(np.float32))
    np.testing.assert_allclose(got.numpy(), np_ce(cosine, labels, smoothing), rtol=RTOL, atol=ATOL)
    got = losses.get("scale_softmax", scale=30.0, label_smoothing=smoothing)(labels, cosine)
    assert got.dtype == tf.float32 and got.shape == (batch,)
    np.testing.assert_allclose(got.numpy(), np_ce(30 * cosine, labels, smoothing), rtol=RTOL, atol=ATOL)
    for scale, power, k in [(64.0, 2.0, 0.4), (8.0, 3.0, 0.0), (16.0, 1.0, 0.2)]:
        loss = losses.get("margin_softmax", scale=scale, power=power, margin_scale=k,
                          label_smoothing=smoothing)
        np.testing.assert_allclose(loss(labels, cosine).numpy(),
                                   np_margin_softmax(labels, cosine, scale, power, k, smoothing),
                                   rtol=RTOL, atol=ATOL)


MARGINS = {"arcface": (1, .5, 0), "cosface": (1, 0, .35), "sphereface": (1.35, 0, 0),
           "sphere_arc": (1.2, .4, 0), "cm1": (1, .3, .2), "cm2": (.9, .4, .15)}


@pytest.mark.parametrize("batch,classes", SHAPES)
@pytest.mark.parametrize("name", list(MARGINS))
def test_margin_presets(name, batch, classes):
    labels, cosine, _ = sample(batch, classes, low=-0.999, high=0.999)
    loss = losses.get(name)
    assert (loss.m1, loss.m2, loss.m3, loss.scale) == (*map(float, MARGINS[name]), 64.0)
    target = np_combined_target(cosine[np.arange(batch), labels], *MARGINS[name])
    expected = np_ce(64 * with_target(cosine, labels, target), labels)
    np.testing.assert_allclose(loss(labels, cosine).numpy(), expected, rtol=RTOL, atol=ATOL)
    by_params = losses.get("combined_margin", m1=MARGINS[name][0], m2=MARGINS[name][1], m3=MARGINS[name][2])
    np.testing.assert_allclose(by_params(labels, cosine).numpy(), expected, rtol=RTOL, atol=ATOL)


def test_arcface_matches_insightface_fallback_and_never_raises_target():
    from distill.losses.margin import margin_target

    c = np.cos(np.linspace(0.01, math.pi - 0.01, 2001))
    for m in (0.3, 0.5, 0.7):
        np.testing.assert_allclose(margin_target(c, 1.0, m).numpy(), np_arcface_insightface(c, m), atol=2e-5)
    for m1, m2, m3 in MARGINS.values():
        target = margin_target(c, m1, m2, m3).numpy()
        assert np.all(target <= c + 1e-6), (m1, m2, m3)
    easy = margin_target(c, 1.0, 0.5, 0.0, easy_margin=True).numpy()
    np.testing.assert_allclose(easy[c <= 0], c[c <= 0], atol=1e-6)
    np.testing.assert_allclose(easy, np_combined_target(c, 1, .5, 0, easy=True), atol=2e-5)


def test_margin_aliases_take_margin_and_easy_margin():
    labels, cosine, _ = sample(6, 9)
    rows = np.arange(6)
    loss = losses.get("arcface", margin=0.3, scale=32.0, easy_margin=True)
    target = np_combined_target(cosine[rows, labels], 1, 0.3, 0, easy=True)
    np.testing.assert_allclose(loss(labels, cosine).numpy(),
                               np_ce(32 * with_target(cosine, labels, target), labels), rtol=RTOL, atol=ATOL)
    loss = losses.get("cosface", margin=0.2)
    np.testing.assert_allclose(loss(labels, cosine).numpy(),
                               np_ce(64 * with_target(cosine, labels, cosine[rows, labels] - 0.2), labels),
                               rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("batch,classes", SHAPES)
def test_adacos_scale_closed_form(batch, classes):
    loss = losses.get("adacos")
    previous = math.sqrt(2) * math.log(classes - 1) if classes > 2 else 0.0
    for step in range(3):
        labels, cosine, _ = sample(batch, classes, seed=step)
        scale, expected = np_adacos(labels, cosine, previous)
        got = loss(labels, cosine.astype(np.float32))
        assert float(loss.scale.numpy()) == pytest.approx(scale, rel=1e-4, abs=1e-5)
        np.testing.assert_allclose(got.numpy(), expected, rtol=RTOL, atol=ATOL)
        previous = scale


def test_adacos_fixed_initial_scale_and_num_classes_param():
    assert losses.get("adacos", num_classes=1001).scale.numpy() == pytest.approx(math.sqrt(2) * math.log(1000))
    assert losses.get("adacos").scale.numpy() == -1.0  # set on the first batch


@pytest.mark.parametrize("batch,classes", SHAPES)
def test_curricularface(batch, classes):
    loss, t = losses.get("curricularface"), 0.0
    for step in range(2):
        labels, cosine, _ = sample(batch, classes, seed=step)
        t, expected = np_curricular(labels, cosine, t)
        np.testing.assert_allclose(loss(labels, cosine).numpy(), expected, rtol=RTOL, atol=ATOL)
        assert float(loss.t.numpy()) == pytest.approx(t, abs=1e-6)


@pytest.mark.parametrize("batch,classes", SHAPES)
def test_magface(batch, classes):
    labels, cosine, norms = sample(batch, classes)
    loss = losses.get("magface")
    assert loss.needs_norms
    np.testing.assert_allclose(loss(labels, cosine, norms).numpy(), np_magface(labels, cosine, norms),
                               rtol=RTOL, atol=ATOL)
    with pytest.raises(ValueError, match="norms"):
        loss(labels, cosine, None)


@pytest.mark.parametrize("batch,classes", SHAPES)
def test_adaface(batch, classes):
    loss, stats = losses.get("adaface"), (20.0, 100.0)
    assert loss.needs_norms
    for step in range(3):
        labels, cosine, norms = sample(batch, classes, seed=step)
        norms = norms / (1 + 3 * step)  # vary the norm statistics
        stats, expected = np_adaface(labels, cosine, norms, *stats)
        np.testing.assert_allclose(loss(labels, cosine, norms).numpy(), expected, rtol=RTOL, atol=ATOL)
        assert float(loss.batch_mean.numpy()) == pytest.approx(stats[0], rel=1e-5)
        assert float(loss.batch_std.numpy()) == pytest.approx(stats[1], rel=1e-5)


ALL_CLASSIFICATION = [n for n, s in losses.available().items() if s.kind == "classification"]


@pytest.mark.parametrize("name", ALL_CLASSIFICATION)
def test_finite_at_extremes_in_tf_function(name):
    """cosθ exactly ±1 and labels [B, 1]: finite losses and gradients inside tf.function."""
    loss = losses.get(name)
    cosine = tf.constant([[1.0, -1.0, 0.2], [-1.0, 1.0, 0.0], [0.0, 0.3, -1.0]])
    labels = tf.constant([[0], [0], [2]])
    norms = tf.constant([1.0, 50.0, 200.0])

    @tf.function
    def run(c):
        with tf.GradientTape() as tape:
            tape.watch(c)
            values = loss(labels, c, norms)
            mean = tf.reduce_mean(values)
        return values, tape.gradient(mean, c)

    values, grad = run(cosine)
    assert values.shape == (3,) and values.dtype == tf.float32
    assert np.all(np.isfinite(values.numpy())) and np.all(np.isfinite(grad.numpy()))


@pytest.mark.parametrize("name,params", [
    ("softmax", {}), ("scale_softmax", {"scale": 4.0}), ("margin_softmax", {"scale": 4.0}),
    ("arcface", {"scale": 4.0}), ("cosface", {"scale": 4.0}), ("sphere_arc", {"scale": 4.0}),
    ("cm2", {"scale": 4.0}), ("magface", {"scale": 4.0, "lambda_g": 1.0}),
    ("adaface", {"scale": 4.0, "t_alpha": 0.0}),
])
def test_gradients_float64(name, params):
    """Analytic vs numeric (central differences) gradients w.r.t. the cosines, float64."""
    labels, cosine, norms = sample(4, 5, seed=3, low=-0.8, high=0.8)
    loss = losses.get(name, **params)
    weights = tf.constant(np.linspace(0.5, 1.5, 4))

    def f(c):
        return tf.reduce_sum(loss(labels, c, tf.constant(norms)) * weights)

    theoretical, numerical = tf.test.compute_gradient(f, [tf.constant(cosine)], delta=1e-6)
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-5, rtol=1e-5)
