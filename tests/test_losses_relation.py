"""Relation-based distillation terms against independent NumPy computations (loops over
pairs and triplets, written from the papers' formulas)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import tensorflow as tf

from distill import losses


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def huber(a, b):
    d = abs(a - b)
    return 0.5 * d * d if d < 1 else d - 0.5


def batch(seed=0, b=7, ds=5, dt=9):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(b, ds)), rng.normal(size=(b, dt))


def rkd_distance_reference(s, t):
    s, t = unit(s), unit(t)
    b = len(s)
    pairs = [(i, j) for i in range(b) for j in range(b) if i != j]
    ds = {p: np.linalg.norm(s[p[0]] - s[p[1]]) for p in pairs}
    dt = {p: np.linalg.norm(t[p[0]] - t[p[1]]) for p in pairs}
    mu_s, mu_t = np.mean(list(ds.values())), np.mean(list(dt.values()))
    return np.array([np.mean([huber(ds[(i, j)] / mu_s, dt[(i, j)] / mu_t) for j in range(b) if j != i])
                     for i in range(b)])


def rkd_angle_reference(s, t):
    s, t = unit(s), unit(t)
    b = len(s)

    def cos_angle(x, i, j, k):
        u, v = x[j] - x[i], x[k] - x[i]
        nu, nv = np.linalg.norm(u), np.linalg.norm(v)
        return 0.0 if nu == 0 or nv == 0 else float(u @ v / (nu * nv))

    out = []
    for i in range(b):
        others = [j for j in range(b) if j != i]
        out.append(np.mean([huber(cos_angle(s, i, j, k), cos_angle(t, i, j, k))
                            for j, k in itertools.product(others, others)]))
    return np.array(out)


def similarity_reference(s, t):
    s, t = unit(s), unit(t)
    gs, gt = unit(s @ s.T), unit(t @ t.T)
    return ((gs - gt) ** 2).sum(axis=1) / len(s)


def critical_rank_kl_reference(s, t, fraction, temperature):
    s, t = unit(s), unit(t)
    b = len(s)
    ss, st = s @ s.T, t @ t.T
    off = [(i, j) for i in range(b) for j in range(b) if i != j]

    def threshold(sim):
        values = sorted((sim[p] for p in off), reverse=True)
        return values[int(np.ceil(fraction * len(values))) - 1]

    ts, tt = threshold(ss), threshold(st)
    out = []
    for i in range(b):
        crit = [j for j in range(b) if j != i and (st[i, j] >= tt or ss[i, j] >= ts)]
        if len(crit) < 2:
            out.append(0.0)
            continue
        pt = np.exp(st[i, crit] / temperature)
        pt /= pt.sum()
        ps = np.exp(ss[i, crit] / temperature)
        ps /= ps.sum()
        out.append(float(np.sum(pt * (np.log(pt) - np.log(ps)))))
    return np.array(out)


CASES = {
    "rkd_distance": (rkd_distance_reference, {}),
    "rkd_angle": (rkd_angle_reference, {}),
    "similarity": (similarity_reference, {}),
    "critical_rank_kl": (lambda s, t: critical_rank_kl_reference(s, t, 0.3, 0.5),
                         {"critical_fraction": 0.3, "temperature": 0.5}),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_relation_terms_match_numpy(name, seed):
    reference, params = CASES[name]
    s, t = batch(seed)
    got = losses.get(name, **params)(tf.constant(s, tf.float64), tf.constant(t, tf.float64)).numpy()
    assert got.shape == (len(s),)
    np.testing.assert_allclose(got, reference(s, t), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", list(CASES))
def test_relation_terms_are_zero_for_the_teacher_itself_and_rotation_invariant(name):
    """A student whose space is the teacher's, rotated, has nothing left to learn."""
    _, params = CASES[name]
    _, t = batch(3, dt=6)
    rotation, _ = np.linalg.qr(np.random.default_rng(4).normal(size=(6, 6)))
    loss = losses.get(name, **params)
    assert np.abs(loss(tf.constant(t @ rotation, tf.float64), tf.constant(t, tf.float64)).numpy()).max() < 1e-9
    s, _ = batch(5, ds=6)
    assert loss(tf.constant(s, tf.float64), tf.constant(t, tf.float64)).numpy().mean() > 1e-4


@pytest.mark.parametrize("name", list(CASES))
def test_relation_gradients_are_finite_and_match_finite_differences(name):
    _, params = CASES[name]
    s, t = batch(6, b=5, ds=4, dt=3)
    loss = losses.get(name, **params)
    student = tf.Variable(s)
    with tf.GradientTape() as tape:
        value = tf.reduce_mean(loss(student, tf.constant(t)))
    gradient = tape.gradient(value, student).numpy()
    assert np.all(np.isfinite(gradient))
    eps, numeric = 1e-6, np.zeros_like(s)
    for index in np.ndindex(s.shape):
        up, down = s.copy(), s.copy()
        up[index] += eps
        down[index] -= eps
        numeric[index] = (np.mean(loss(tf.constant(up), tf.constant(t)).numpy())
                          - np.mean(loss(tf.constant(down), tf.constant(t)).numpy())) / (2 * eps)
    np.testing.assert_allclose(gradient, numeric, rtol=1e-4, atol=1e-7)


def test_relation_terms_work_in_the_objective_with_unlabelled_samples():
    """Distillation terms see every sample; classification only the labelled ones."""
    from distill.losses.objective import build_objective

    rng = np.random.default_rng(0)
    labels = np.array([0, 1, -1, 0, -1, 1], np.int64)
    emb = rng.normal(size=(6, 4)).astype(np.float32)
    teacher = rng.normal(size=(6, 8)).astype(np.float32)
    cosine = (unit(emb) @ unit(rng.normal(size=(2, 4))).T).astype(np.float32)
    objective = build_objective({"name": "cosface", "weight": 0.5}, {"name": "l2", "weight": 2.0},
                                terms={"rkd": {"name": "rkd_distance", "weight": 3.0}},
                                embedding_dim=4, teacher_dim=8)
    out = objective(labels, cosine, emb, teacher_embeddings=teacher)
    labelled = labels >= 0
    cls = losses.get("cosface")(labels[labelled], cosine[labelled]).numpy().mean()
    rkd = rkd_distance_reference(emb, teacher).mean()
    assert float(out["classification"]) == pytest.approx(cls, rel=1e-5)
    assert float(out["rkd"]) == pytest.approx(rkd, rel=1e-4)
    assert float(out["total"]) == pytest.approx(0.5 * cls + 2 * float(out["distill"]) + 3 * rkd, rel=1e-4)
    with pytest.raises(ValueError, match="terms.distill: 'distill' is a recipe section"):
        build_objective({"name": "cosface"}, terms={"distill": {"name": "l2"}})


def test_classification_off_is_distillation_alone():
    from distill.losses.objective import build_objective

    rng = np.random.default_rng(1)
    emb, teacher = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(4, 3)).astype(np.float32)
    objective = build_objective({"name": "arcface", "weight": 0}, {"name": "cosine", "weight": 1.0})
    out = objective(np.full(4, -1), None, emb, teacher_embeddings=teacher)
    assert list(out) == ["total", "distill"]
    assert float(out["total"]) == pytest.approx(float(np.mean(1 - np.sum(unit(emb) * unit(teacher), 1))), rel=1e-5)
