"""Verification metrics against plain-loop / sklearn / scipy references."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import interpolate
from scipy.optimize import brentq
from sklearn import metrics as skm
from sklearn.model_selection import KFold

from distill.evals import metrics as M


# ---------------------------------------------------------------- plain references (InsightFace code shape)
def ref_accuracy_loop(dist, issame, n_folds=10, thresholds=np.arange(0, 4, 0.01)):
    def acc(t, d, s):
        pred = d < t
        return (np.sum(pred & s) + np.sum(~pred & ~s)) / d.size

    accs, best_ts = [], []
    for train, test in KFold(n_splits=n_folds, shuffle=False).split(np.arange(dist.size)):
        train_acc = np.zeros(len(thresholds))
        for i, t in enumerate(thresholds):
            train_acc[i] = acc(t, dist[train], issame[train])
        best = thresholds[np.argmax(train_acc)]
        accs.append(acc(best, dist[test], issame[test]))
        best_ts.append(best)
    return np.mean(accs), np.std(accs), np.mean(best_ts)


def ref_val_loop(dist, issame, far_target, n_folds=10, thresholds=np.arange(0, 4, 0.001)):
    def val_far(t, d, s):
        pred = d < t
        return np.sum(pred & s) / np.sum(s), np.sum(pred & ~s) / np.sum(~s)

    vals = []
    for train, test in KFold(n_splits=n_folds, shuffle=False).split(np.arange(dist.size)):
        far_train = np.array([val_far(t, dist[train], issame[train])[1] for t in thresholds])
        if np.max(far_train) >= far_target:
            threshold = float(interpolate.interp1d(far_train, thresholds, kind="linear")(far_target))
        else:
            threshold = 0.0
        vals.append(val_far(threshold, dist[test], issame[test])[0])
    return np.mean(vals), np.std(vals)


def make_pairs(n, rng, separation=1.2, dim=16):
    issame = rng.random(n) < 0.5
    base = rng.normal(size=(n, dim))
    other = np.where(issame[:, None], base + rng.normal(size=(n, dim)) / separation, rng.normal(size=(n, dim)))
    return base, other, issame


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize("n, seed, n_folds", [(600, 0, 10), (1003, 1, 10), (257, 2, 5), (120, 3, 1)])
def test_kfold_accuracy_equals_plain_loop(n, seed, n_folds):
    rng = np.random.default_rng(seed)
    e1, e2, issame = make_pairs(n, rng)
    dist = M.pair_distances(e1, e2)
    got = M.kfold_accuracy(dist, issame, n_folds=n_folds)
    if n_folds == 1:  # InsightFace LFold: train on everything, test on everything
        thresholds = np.arange(0, 4, 0.01)
        accs = [np.mean((dist < t) == issame) for t in thresholds]
        want = (max(accs), 0.0, thresholds[int(np.argmax(accs))])
    else:
        want = ref_accuracy_loop(dist, issame, n_folds)
    assert got["accuracy"] == pytest.approx(want[0], abs=1e-12)
    assert got["std"] == pytest.approx(want[1], abs=1e-12)
    assert got["threshold"] == pytest.approx(want[2], abs=1e-12)


def test_kfold_accuracy_with_ties_on_threshold_grid():
    rng = np.random.default_rng(5)
    dist = np.round(rng.uniform(0, 4, 500), 2)  # many distances exactly on a threshold
    issame = dist + rng.normal(0, 0.7, 500) < 2.0
    got = M.kfold_accuracy(dist, issame)
    want = ref_accuracy_loop(dist, issame)
    assert (got["accuracy"], got["std"], got["threshold"]) == pytest.approx(want, abs=1e-12)


def test_fold_ids_match_sklearn_kfold():
    for n, k in [(10, 10), (23, 10), (6000, 10), (7, 3)]:
        ids = M.fold_ids(n, k)
        for fold, (_, test) in enumerate(KFold(n_splits=k).split(np.arange(n))):
            np.testing.assert_array_equal(np.flatnonzero(ids == fold), test)


def test_pair_distances_is_squared_l2_of_normalised():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 8)), rng.normal(size=(50, 8)) * 3
    want = [np.sum((x / np.linalg.norm(x) - y / np.linalg.norm(y)) ** 2) for x, y in zip(a, b)]
    np.testing.assert_allclose(M.pair_distances(a, b), want, rtol=1e-12)


@pytest.mark.parametrize("far_target", [1e-3, 1e-2, 0.1])
def test_val_at_far_equals_scipy_interp_loop(far_target):
    rng = np.random.default_rng(7)
    e1, e2, issame = make_pairs(1200, rng, separation=0.8)
    dist = M.pair_distances(e1, e2)
    got = M.val_at_far(dist, issame, far_target=far_target)
    want = ref_val_loop(dist, issame, far_target)
    assert got["val"] == pytest.approx(want[0], abs=1e-12)
    assert got["std"] == pytest.approx(want[1], abs=1e-12)


def test_roc_curve_matches_sklearn():
    rng = np.random.default_rng(3)
    scores = np.round(rng.normal(size=2000), 2)  # with ties
    issame = rng.random(2000) < 0.3
    fpr, tpr, thr = M.roc_curve(scores, issame)
    s_fpr, s_tpr, s_thr = skm.roc_curve(issame, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, s_fpr)
    np.testing.assert_allclose(tpr, s_tpr)
    np.testing.assert_allclose(thr[1:], s_thr[1:])
    for got, want in zip(M.roc_curve(scores, issame, drop_intermediate=True), skm.roc_curve(issame, scores)):
        np.testing.assert_allclose(got[1:], want[1:])
    assert M.roc_auc(scores, issame) == pytest.approx(skm.roc_auc_score(issame, scores), abs=1e-12)


def test_tar_at_far_matches_sklearn_roc():
    rng = np.random.default_rng(4)
    n = 20000
    issame = rng.random(n) < 0.5
    scores = rng.normal(size=n) + 2.0 * issame
    fars = (1e-4, 1e-3, 1e-2, 1e-1)
    got = M.tar_at_far(scores, issame, fars)
    s_fpr, s_tpr, _ = skm.roc_curve(issame, scores)  # default drop_intermediate=True
    for far in fars:
        assert got[far] == pytest.approx(np.max(s_tpr[s_fpr <= far]), abs=1e-12)
    nearest = M.tar_at_far(scores, issame, fars, mode="nearest")
    for far in fars:  # InsightFace IJB: min over (|fpr - far|, index) on sklearn's default ROC
        _, index = min(zip(np.abs(s_fpr - far), range(len(s_fpr))))
        assert nearest[far] == pytest.approx(s_tpr[index], abs=1e-12)
    # distances: same ROC as negated scores
    by_dist = M.tar_at_far(-scores, issame, fars, is_distance=True)
    assert by_dist == pytest.approx(got)


def test_eer_matches_brentq_reference():
    rng = np.random.default_rng(8)
    issame = rng.random(3000) < 0.5
    scores = rng.normal(size=3000) + 1.5 * issame
    fpr, tpr, _ = skm.roc_curve(issame, scores)
    want = brentq(lambda x: 1.0 - x - interpolate.interp1d(fpr, tpr)(x), 0.0, 1.0)
    assert M.eer(scores, issame) == pytest.approx(want, abs=1e-6)


def test_perfect_and_random_embeddings():
    rng = np.random.default_rng(0)
    n, dim = 600, 64
    issame = np.arange(n) % 2 == 0
    e1 = np.eye(dim)[np.arange(n) % dim]
    e2 = np.where(issame[:, None], e1, np.eye(dim)[(np.arange(n) + 1) % dim])  # orthogonal if different
    perfect = M.verification_metrics(e1, e2, issame)
    assert perfect["accuracy"] == 1.0 and perfect["accuracy_std"] == 0.0
    assert perfect["auc"] == 1.0 and perfect["eer"] == 0.0
    assert perfect["val_at_far_1e-3"] == 1.0
    assert all(perfect[f"tar_at_far_{k}"] == 1.0 for k in ("1e-4", "1e-3", "1e-2", "1e-1"))
    random = M.verification_metrics(rng.normal(size=(6000, 128)), rng.normal(size=(6000, 128)), rng.random(6000) < 0.5)
    assert abs(random["accuracy"] - 0.5) < 0.03
    assert abs(random["auc"] - 0.5) < 0.03 and abs(random["eer"] - 0.5) < 0.03
    assert set(random) >= {"accuracy", "accuracy_std", "threshold", "val_at_far_1e-3", "tar_at_far_1e-4", "auc", "eer"}


def test_verification_metrics_is_fast():
    import time

    rng = np.random.default_rng(1)
    e1, e2, issame = make_pairs(6000, rng, dim=128)
    M.verification_metrics(e1, e2, issame)  # warm up
    start = time.perf_counter()
    M.verification_metrics(e1, e2, issame)
    assert time.perf_counter() - start < 0.2


def test_errors_are_clear():
    with pytest.raises(ValueError, match="boolean"):
        M.kfold_accuracy(np.zeros(10), np.zeros(10, int))
    with pytest.raises(ValueError, match="differ in length"):
        M.kfold_accuracy(np.zeros(10), np.zeros(9, bool))
    with pytest.raises(ValueError, match="both same"):
        M.kfold_accuracy(np.zeros(10), np.ones(10, bool))
    with pytest.raises(ValueError, match="NaN"):
        M.pair_distances(np.full((2, 3), np.nan), np.ones((2, 3)))
    with pytest.raises(ValueError, match="n_folds"):
        M.kfold_accuracy(np.zeros(4), np.array([True, False] * 2), n_folds=10)
    assert M.far_key(1e-3) == "1e-3" and M.far_key(1e-6) == "1e-6" and M.far_key(0.1) == "1e-1"
