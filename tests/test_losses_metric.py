"""Triplet losses against brute-force enumeration in NumPy, center-loss state, mining.

Tolerance: float32 TF vs float64 NumPy, atol 1e-5 (distances are O(1)); gradient checks
in float64 to 1e-6.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import tensorflow as tf

from distill import losses
from distill.losses.mining import mine_triplets

ATOL = 1e-5
DISTANCES = ["cosine", "euclidean", "squared_euclidean"]


def np_distances(x, distance, normalize):
    x = np.asarray(x, np.float64)
    if normalize or distance == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    b = len(x)
    d = np.zeros((b, b))
    for i, j in itertools.product(range(b), range(b)):
        if i == j:
            continue
        if distance == "cosine":
            d[i, j] = max(1.0 - x[i] @ x[j], 0.0)
        else:
            squared = ((x[i] - x[j]) ** 2).sum()
            d[i, j] = squared if distance == "squared_euclidean" else np.sqrt(squared)
    return d


def triplets(labels):
    b = len(labels)
    return [(a, p, n) for a, p, n in itertools.product(range(b), repeat=3)
            if a != p and labels[a] == labels[p] and labels[n] != labels[a]]


def np_batch_hard(d, labels, margin):
    out = np.zeros(len(labels))
    for a in range(len(labels)):
        pos = [d[a, p] for p in range(len(labels)) if p != a and labels[p] == labels[a]]
        neg = [d[a, n] for n in range(len(labels)) if labels[n] != labels[a]]
        if pos and neg:
            out[a] = max(max(pos) - min(neg) + margin, 0.0)
    return out


def np_batch_all(d, labels, margin, average):
    values = {t: max(d[t[0], t[1]] - d[t[0], t[2]] + margin, 0.0) for t in triplets(labels)}
    count = sum(v > 1e-16 for v in values.values()) if average == "active" else len(values)
    out = np.zeros(len(labels))
    for (a, _, _), v in values.items():
        out[a] += v
    return out * len(labels) / max(count, 1), sum(values.values()) / max(count, 1)


def np_semihard(d, labels, margin):
    """TF-Addons semantics, per positive pair: smallest d_an > d_ap, else the largest d_an."""
    b = len(labels)
    hinges, out = [], np.zeros(b)
    for a, p in itertools.product(range(b), repeat=2):
        if a == p or labels[a] != labels[p]:
            continue
        negatives = [d[a, n] for n in range(b) if labels[n] != labels[a]]
        harder = [v for v in negatives if v > d[a, p]]
        d_an = min(harder) if harder else (max(negatives) if negatives else 0.0)
        hinge = max(d[a, p] - d_an + margin, 0.0)
        hinges.append(hinge)
        out[a] += hinge
    mean = np.mean(hinges) if hinges else 0.0
    return out * b / max(len(hinges), 1), mean


def batch(size, classes, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size).astype(np.int32)
    return labels, rng.normal(size=(size, 5)).astype(np.float32)


CASES = [(1, 1), (2, 1), (2, 2), (6, 2), (12, 3), (12, 12), (16, 4)]


@pytest.mark.parametrize("size,classes", CASES)
@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("normalize", [True, False])
def test_triplets_brute_force(size, classes, distance, normalize):
    labels, x = batch(size, classes, seed=size * 7 + classes)
    d = np_distances(x, distance, normalize)
    margin = 0.4
    params = dict(margin=margin, distance=distance, normalize=normalize)
    hard = losses.get("triplet_batch_hard", **params)(labels, x)
    np.testing.assert_allclose(hard.numpy(), np_batch_hard(d, labels, margin), atol=ATOL)
    for average in ("active", "all"):
        got = losses.get("triplet_batch_all", average=average, **params)(labels, x).numpy()
        per_anchor, mean = np_batch_all(d, labels, margin, average)
        np.testing.assert_allclose(got, per_anchor, atol=ATOL * size)
        assert got.mean() == pytest.approx(mean, abs=ATOL)
    got = losses.get("triplet_semihard", **params)(labels, x).numpy()
    per_anchor, mean = np_semihard(d, labels, margin)
    assert got.shape == (size,) and got.dtype == np.float32
    np.testing.assert_allclose(got, per_anchor, atol=ATOL * size)
    assert got.mean() == pytest.approx(mean, abs=ATOL)


def test_semihard_tfa_defaults_and_quirks():
    """TF-Addons defaults (margin 1, euclidean, unnormalised); no negatives → d_an = 0."""
    labels, x = batch(10, 3, seed=5)
    loss = losses.get("triplet_semihard", margin=1.0, distance="euclidean", normalize=False)
    _, mean = np_semihard(np_distances(x, "euclidean", False), labels, 1.0)
    assert float(tf.reduce_mean(loss(labels, x))) == pytest.approx(mean, abs=ATOL)
    same = np.zeros(4, np.int32)
    d = np_distances(x[:4], "euclidean", False)
    expected = np.mean([1.0 + d[a, p] for a in range(4) for p in range(4) if a != p])
    assert float(tf.reduce_mean(loss(same, x[:4]))) == pytest.approx(expected, abs=ATOL)
    assert float(tf.reduce_mean(loss(np.arange(4), x[:4]))) == 0.0  # no positive pair: 0, not NaN


def test_soft_margin_batch_hard():
    _, x = batch(8, 2, seed=1)
    labels = np.array([0, 1] * 4)
    d = np_distances(x, "cosine", True)
    got = losses.get("triplet_batch_hard", soft=True)(labels, x).numpy()
    expected = []
    for a in range(8):
        pos = max(d[a, p] for p in range(8) if p != a and labels[p] == labels[a])
        neg = min(d[a, n] for n in range(8) if labels[n] != labels[a])
        expected.append(np.log1p(np.exp(pos - neg)))
    np.testing.assert_allclose(got, expected, atol=ATOL)


@pytest.mark.parametrize("name", ["triplet_batch_hard", "triplet_batch_all", "triplet_semihard"])
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_triplet_gradients_float64(name, distance):
    labels, x = batch(8, 3, seed=11)
    loss = losses.get(name, margin=0.5, distance=distance)

    def f(e):
        return tf.reduce_mean(loss(labels, e))

    theoretical, numerical = tf.test.compute_gradient(f, [tf.constant(x, tf.float64)], delta=1e-6)
    assert np.abs(theoretical[0]).sum() > 0
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6)


def test_triplet_in_tf_function_and_bad_distance():
    labels, x = batch(8, 2, seed=2)
    loss = losses.get("triplet_batch_hard")
    eager = loss(labels, x)
    np.testing.assert_allclose(tf.function(loss.__call__)(tf.constant(labels), tf.constant(x)), eager, atol=1e-6)
    with pytest.raises(ValueError, match="euclidean"):
        losses.get("triplet_batch_hard", distance="manhattan")


def np_center_step(centers, labels, x, alpha):
    loss = 0.5 * ((x - centers[labels]) ** 2).sum(axis=1)
    new = centers.copy()
    for j in np.unique(labels):
        members = labels == j
        new[j] -= alpha * (centers[j] - x[members]).sum(axis=0) / (1 + members.sum())
    return loss, new


@pytest.mark.parametrize("normalize", [True, False])
def test_center_loss_state_update(normalize):
    rng = np.random.default_rng(0)
    loss = losses.get("center", alpha=0.3, normalize=normalize, num_classes=6, embedding_dim=4)
    centers = np.zeros((6, 4))
    assert loss.kind == "metric" and loss.state[0].shape == (6, 4) and not loss.trainable_variables

    step = tf.function(loss.__call__)
    for size in (1, 7, 12):
        labels = rng.integers(0, 6, size).astype(np.int32)
        labels[:2 if size > 1 else 1] = 3  # a repeated class
        x = rng.normal(size=(size, 4))
        xn = x / np.linalg.norm(x, axis=1, keepdims=True) if normalize else x
        expected_loss, centers = np_center_step(centers, labels, xn, 0.3)
        np.testing.assert_allclose(step(labels, x.astype(np.float32)).numpy(), expected_loss, atol=1e-5)
        np.testing.assert_allclose(loss.centers.numpy(), centers, atol=1e-5)


def test_center_loss_needs_build_and_gradient():
    loss = losses.get("center", normalize=False)
    with pytest.raises(ValueError, match="build"):
        loss([0], np.zeros((1, 3)))
    loss.build(num_classes=3, embedding_dim=2)
    loss.centers.assign([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    x = tf.Variable([[2.0, 1.0], [0.0, 3.0]])
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(loss([0, 1], x))
    np.testing.assert_allclose(tape.gradient(total, x).numpy(), [[1.0, 1.0], [0.0, 2.0]], atol=1e-6)


@pytest.mark.parametrize("size,classes", [(1, 1), (2, 2), (9, 3), (20, 4), (6, 1)])
def test_mine_triplets_brute_force(size, classes):
    rng = np.random.default_rng(size)
    labels = rng.integers(0, classes, size)
    x = rng.normal(size=(size, 4))
    anchor, positive, negative = mine_triplets(x, labels, rng)
    expected = {(a, p) for a, p, _ in triplets(labels)}
    assert set(zip(anchor.tolist(), positive.tolist())) == expected
    assert len(anchor) == len(expected)
    assert np.all(labels[negative] != labels[anchor]) and np.all(labels[positive] == labels[anchor])
    assert anchor.dtype == positive.dtype == negative.dtype == np.int64


def test_mine_triplets_random_and_margin():
    labels = np.array([0, 0, 1, 2, 3])
    rng = np.random.default_rng(0)
    seen = {int(mine_triplets(np.eye(5), labels, rng)[2][0]) for _ in range(200)}
    assert seen == {2, 3, 4}  # uniform over all valid negatives
    x = np.array([[1.0, 0.0], [0.9, 0.1], [0.95, 0.05], [-1.0, 0.0], [0.0, 1.0]])
    for _ in range(20):  # only sample 2 is closer than the positive + margin
        a, p, n = mine_triplets(x, labels, rng, margin=0.05)
        assert np.all(n == 2)
    with pytest.raises(ValueError, match="labels"):
        mine_triplets(x, labels[:3])
