"""Verification metrics, vectorised NumPy, following the InsightFace protocol.

Distances are squared L2 distances of L2-normalised embeddings (0 … 4); a pair is predicted
"same" when ``distance < threshold``. Folds are contiguous, like
``sklearn.model_selection.KFold(n_splits, shuffle=False)``, when every such fold holds both
kinds of pair (as in LFW View 2 and InsightFace's ``.bin`` files); a set laid out otherwise
(e.g. all matched pairs first) gets stratified folds and a warning (:func:`verification_folds`),
because one-sided folds make the threshold search meaningless. ROC functions take *scores*
(higher = more likely the same person); pass ``is_distance=True`` to use distances instead.
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

ACCURACY_THRESHOLDS = np.arange(0, 4, 0.01)
VAL_THRESHOLDS = np.arange(0, 4, 0.001)
DEFAULT_FARS = (1e-4, 1e-3, 1e-2, 1e-1)


def far_key(far: float) -> str:
    """``1e-3`` → ``'1e-3'`` (used in metric names such as ``tar_at_far_1e-3``)."""
    mantissa, exponent = f"{far:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows divided by their L2 norm (float64)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def pair_distances(emb1, emb2) -> np.ndarray:
    """Squared L2 distance between the L2-normalised rows of ``emb1`` and ``emb2``."""
    emb1, emb2 = np.asarray(emb1), np.asarray(emb2)
    if emb1.ndim != 2 or emb1.shape != emb2.shape:
        raise ValueError(f"emb1 {emb1.shape} and emb2 {emb2.shape} must be 2-D arrays of the same shape")
    if not (np.all(np.isfinite(emb1)) and np.all(np.isfinite(emb2))):
        raise ValueError("embeddings contain NaN or inf")
    diff = l2_normalize(emb1) - l2_normalize(emb2)
    return np.sum(diff * diff, axis=1)


def _check(values, issame, name: str = "distances"):
    values = np.asarray(values, dtype=np.float64).ravel()
    issame = np.asarray(issame)
    if issame.dtype != bool:
        raise ValueError(f"issame: expected a boolean array, got dtype {issame.dtype}")
    issame = issame.ravel()
    if values.shape != issame.shape:
        raise ValueError(f"{name} ({values.size}) and issame ({issame.size}) differ in length")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} contain NaN or inf")
    n_same = int(issame.sum())
    if n_same == 0 or n_same == issame.size:
        raise ValueError("issame must contain both same (True) and different (False) pairs")
    return values, issame


def fold_ids(n: int, n_folds: int, name: str = "pairs") -> np.ndarray:
    """Fold index of each of ``n`` items: contiguous folds, the first ``n % n_folds`` one larger;
    ``name`` (the set's file) starts the error when ``n_folds`` does not fit ``n``."""
    if n_folds < 1 or n_folds > n:
        raise ValueError(f"{name}: {n} pairs cannot be split into {n_folds} folds (n_folds must be between 1 "
                         f"and the number of pairs); use a set of at least {max(n_folds, 1)} pairs")
    sizes = np.full(n_folds, n // n_folds)
    sizes[: n % n_folds] += 1
    return np.repeat(np.arange(n_folds), sizes)


def stratified_fold_ids(issame, n_folds: int) -> np.ndarray:
    """Fold of each pair such that every fold gets an equal share of each kind: the k-th
    matched pair (in file order) goes to fold ``k * n_folds // n_same``, likewise mismatched."""
    issame = np.asarray(issame, dtype=bool)
    folds = np.empty(issame.size, dtype=np.int64)
    for kind in (True, False):
        where = np.flatnonzero(issame == kind)
        folds[where] = np.arange(where.size) * n_folds // max(where.size, 1)
    return folds


def verification_folds(issame, n_folds: int, name: str = "pairs") -> tuple[np.ndarray, str]:
    """``(fold of each pair, layout)``: ``"contiguous"`` folds when each holds both matched and
    mismatched pairs, else ``"stratified"`` (:func:`stratified_fold_ids`) with a warning."""
    issame = np.asarray(issame, dtype=bool)
    folds = fold_ids(issame.size, n_folds, name)
    same = np.bincount(folds[issame], minlength=n_folds)
    diff = np.bincount(folds[~issame], minlength=n_folds)
    if n_folds == 1 or (same.min() > 0 and diff.min() > 0):
        return folds, "contiguous"
    one_sided = int(np.sum((same == 0) | (diff == 0)))
    if min(int(issame.sum()), int((~issame).sum())) < n_folds:
        raise ValueError(f"{name}: {int(issame.sum())} matched and {int((~issame).sum())} mismatched "
                         f"pairs cannot fill {n_folds} folds with both kinds")
    log.warning("%s: %d of %d contiguous folds hold only one kind of pair; using stratified folds "
                "(rebuild the set with `distill make-bin` to lay pairs out fold by fold)",
                name, one_sided, n_folds)
    return stratified_fold_ids(issame, n_folds), "stratified"


def _fold_counts(distances, issame, folds, n_folds, thresholds):
    """Per fold and threshold: #same and #different pairs with ``distance < threshold``."""
    n_t = len(thresholds)
    # first threshold index j with distances < thresholds[j]; every later j also accepts
    first = np.searchsorted(thresholds, distances, side="right")
    flat = folds * (n_t + 1) + first
    same = np.bincount(flat[issame], minlength=n_folds * (n_t + 1)).reshape(n_folds, n_t + 1)
    diff = np.bincount(flat[~issame], minlength=n_folds * (n_t + 1)).reshape(n_folds, n_t + 1)
    return np.cumsum(same, axis=1)[:, :n_t], np.cumsum(diff, axis=1)[:, :n_t]


def _train_test(counts: np.ndarray, n_folds: int):
    """Per-fold test counts and the matching train counts (all other folds; itself if 1 fold)."""
    return (counts.sum(axis=0, keepdims=True) - counts) if n_folds > 1 else counts


def _thresholds(thresholds, default):
    thresholds = default if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    if thresholds.ndim != 1 or thresholds.size == 0 or np.any(np.diff(thresholds) <= 0):
        raise ValueError("thresholds must be a non-empty, strictly increasing 1-D array")
    return thresholds


def kfold_accuracy(distances, issame, n_folds: int = 10, thresholds=None, search: str = "grid",
                   folds=None) -> dict:
    """InsightFace 10-fold accuracy: best train-fold threshold (first argmax) scored on the held-out fold.

    ``search="grid"`` tries ``thresholds`` (InsightFace's 0…4 step 0.01, for comparability);
    ``search="exact"`` tries every midpoint between consecutive distinct training distances, so
    the result does not depend on how compressed the embedding space is. ``folds`` defaults to
    :func:`verification_folds`. Returns ``{"accuracy": mean, "std": std over folds,
    "threshold": mean best threshold}``.
    """
    distances, issame = _check(distances, issame)
    if search not in ("grid", "exact"):
        raise ValueError(f"search must be 'grid' or 'exact', got {search!r}")
    if folds is None:
        folds, _ = verification_folds(issame, n_folds)
    if search == "exact":
        return _kfold_exact(distances, issame, folds, n_folds)
    thresholds = _thresholds(thresholds, ACCURACY_THRESHOLDS)
    same_lt, diff_lt = _fold_counts(distances, issame, folds, n_folds, thresholds)
    n_same = np.bincount(folds[issame], minlength=n_folds)[:, None]
    n_diff = np.bincount(folds[~issame], minlength=n_folds)[:, None]
    correct = same_lt + (n_diff - diff_lt)  # true accepts + true rejects, per fold × threshold
    sizes = n_same + n_diff
    train_acc = _train_test(correct, n_folds) / _train_test(sizes, n_folds)
    best = np.argmax(train_acc, axis=1)
    rows = np.arange(n_folds)
    test_acc = correct[rows, best] / sizes[:, 0]
    return {
        "accuracy": float(test_acc.mean()),
        "std": float(test_acc.std()),
        "threshold": float(thresholds[best].mean()),
    }


def best_exact_threshold(distances, issame) -> float:
    """The threshold with the most correct decisions on these pairs, among the midpoints of
    consecutive distinct distances and the two ends (first, i.e. smallest, on ties)."""
    order = np.argsort(distances, kind="stable")
    ordered, same = distances[order], issame[order]
    n_diff = int((~same).sum())
    # accepting the k smallest distances (k = 0 … n): true accepts + true rejects
    correct = np.r_[0, np.cumsum(same)] + n_diff - np.r_[0, np.cumsum(~same)]
    cut_ok = np.r_[True, ordered[1:] > ordered[:-1], True]   # no cut inside a run of ties
    k = int(np.argmax(np.where(cut_ok, correct, -1)))
    if k == 0:
        return float(ordered[0])
    if k == ordered.size:
        return float(np.nextafter(ordered[-1], np.inf))
    return float((ordered[k - 1] + ordered[k]) / 2.0)


def _kfold_exact(distances, issame, folds, n_folds) -> dict:
    accuracies, chosen = [], []
    for fold in range(n_folds):
        test = folds == fold
        train = ~test if n_folds > 1 else test
        threshold = best_exact_threshold(distances[train], issame[train])
        accuracies.append(np.mean((distances[test] < threshold) == issame[test]))
        chosen.append(threshold)
    return {"accuracy": float(np.mean(accuracies)), "std": float(np.std(accuracies)),
            "threshold": float(np.mean(chosen))}


def _val_threshold(far_train: np.ndarray, thresholds: np.ndarray, far_target: float) -> float:
    """Threshold where the train FAR curve reaches ``far_target`` (linear interpolation).

    Same as ``scipy.interpolate.interp1d(far_train, thresholds)(far_target)`` on the
    (non-decreasing) FAR curve; 0.0 when the target FAR is never reached (InsightFace).
    """
    if far_train[-1] < far_target:
        return 0.0
    hi = int(np.searchsorted(far_train, far_target, side="left"))
    if hi == 0:
        return float(thresholds[0])
    lo = hi - 1
    frac = (far_target - far_train[lo]) / (far_train[hi] - far_train[lo])
    return float(thresholds[lo] + frac * (thresholds[hi] - thresholds[lo]))


def val_at_far(distances, issame, far_target: float = 1e-3, n_folds: int = 10, thresholds=None,
               folds=None) -> dict:
    """InsightFace ``calculate_val``: threshold giving ``far_target`` on the train folds, VAL on the test fold.

    Returns ``{"val": mean, "std": std over folds, "far": mean test FAR, "threshold": mean threshold}``.
    """
    if not 0.0 < far_target < 1.0:
        raise ValueError(f"far_target must be in (0, 1), got {far_target}")
    distances, issame = _check(distances, issame)
    thresholds = _thresholds(thresholds, VAL_THRESHOLDS)
    if folds is None:
        folds, _ = verification_folds(issame, n_folds)
    _, diff_lt = _fold_counts(distances, issame, folds, n_folds, thresholds)
    n_diff = np.bincount(folds[~issame], minlength=n_folds)
    far_train = _train_test(diff_lt, n_folds) / np.maximum(_train_test(n_diff[:, None], n_folds), 1)
    vals, fars, chosen = [], [], []
    for fold in range(n_folds):
        threshold = _val_threshold(far_train[fold], thresholds, far_target)
        accept = distances[folds == fold] < threshold
        same = issame[folds == fold]
        vals.append(np.sum(accept & same) / max(int(same.sum()), 1))
        fars.append(np.sum(accept & ~same) / max(int((~same).sum()), 1))
        chosen.append(threshold)
    return {
        "val": float(np.mean(vals)),
        "std": float(np.std(vals)),
        "far": float(np.mean(fars)),
        "threshold": float(np.mean(chosen)),
    }


def roc_curve(scores, issame, is_distance: bool = False, drop_intermediate: bool = False):
    """ROC as ``(fpr, tpr, thresholds)``; the points of ``sklearn.metrics.roc_curve``.

    A pair is accepted when ``score >= threshold``; the first point is ``(0, 0)`` at ``+inf``.
    ``drop_intermediate=True`` drops points on straight segments (sklearn's default).
    """
    scores, issame = _check(scores, issame, "distances" if is_distance else "scores")
    if is_distance:
        scores = -scores
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], issame[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]  # last index of each distinct score
    tps = np.cumsum(labels)[last]
    fps = (last + 1) - tps
    if drop_intermediate and tps.size > 2:
        bend = (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0)
        keep = np.r_[True, bend, True]
        tps, fps, last = tps[keep], fps[keep], last[keep]
    fpr = np.r_[0.0, fps / fps[-1]]
    tpr = np.r_[0.0, tps / tps[-1]]
    thresholds = np.r_[np.inf, scores[last]]
    if is_distance:
        thresholds = -thresholds
    return fpr, tpr, thresholds


def tar_at_far(scores, issame, fars=DEFAULT_FARS, is_distance: bool = False, mode: str = "floor") -> dict:
    """TAR at each target FAR from the ROC → ``{far: tar}``.

    ``mode="floor"``: the highest TPR among ROC points with ``FPR <= far`` (never exceeds the
    target). ``mode="nearest"``: the TPR of the ROC point whose FPR is closest to ``far`` (the
    InsightFace IJB script, on sklearn's default ROC points; first point on ties).
    """
    if mode not in ("floor", "nearest"):
        raise ValueError(f"mode must be 'floor' or 'nearest', got {mode!r}")
    fpr, tpr, _ = roc_curve(scores, issame, is_distance=is_distance, drop_intermediate=mode == "nearest")
    result = {}
    for far in fars:
        if mode == "floor":
            idx = np.searchsorted(fpr, far, side="right") - 1  # fpr is non-decreasing, fpr[0] = 0
            result[far] = float(tpr[idx])
        else:
            result[far] = float(tpr[np.argmin(np.abs(fpr - far))])
    return result


def roc_auc(scores, issame, is_distance: bool = False) -> float:
    """Area under the ROC curve (trapezoidal, ties count one half)."""
    fpr, tpr, _ = roc_curve(scores, issame, is_distance=is_distance)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def eer(scores, issame, is_distance: bool = False) -> float:
    """Equal error rate: the FPR where FPR = 1 - TPR on the piecewise-linear ROC."""
    fpr, tpr, _ = roc_curve(scores, issame, is_distance=is_distance)
    gap = 1.0 - tpr - fpr  # decreases from 1 (at 0,0) to -1 (at 1,1)
    hi = int(np.argmax(gap <= 0))
    lo = hi - 1
    frac = gap[lo] / (gap[lo] - gap[hi])
    return float(fpr[lo] + frac * (fpr[hi] - fpr[lo]))


def verification_metrics(emb1, emb2, issame, n_folds: int = 10, fars=DEFAULT_FARS, roc: bool = False,
                         name: str = "pairs") -> dict:
    """All pair-verification metrics for embeddings of pair halves ``emb1[i]``, ``emb2[i]``.

    Keys: ``accuracy``, ``accuracy_std``, ``threshold`` (InsightFace grid search),
    ``accuracy_exact``, ``accuracy_exact_std``, ``threshold_exact`` (exact search),
    ``folds`` (``contiguous`` or ``stratified``), ``val_at_far_1e-3``,
    ``val_at_far_1e-3_std``, ``tar_at_far_<far>`` for each of ``fars``, ``auc``, ``eer``,
    ``pairs``; with ``roc=True`` also ``roc`` = ``(fpr, tpr)`` arrays.
    """
    distances = pair_distances(emb1, emb2)
    _, issame = _check(distances, issame)
    folds, layout = verification_folds(issame, n_folds, name)
    acc = kfold_accuracy(distances, issame, n_folds=n_folds, folds=folds)
    exact = kfold_accuracy(distances, issame, n_folds=n_folds, folds=folds, search="exact")
    val = val_at_far(distances, issame, far_target=1e-3, n_folds=n_folds, folds=folds)
    out = {
        "accuracy": acc["accuracy"],
        "accuracy_std": acc["std"],
        "threshold": acc["threshold"],
        "accuracy_exact": exact["accuracy"],
        "accuracy_exact_std": exact["std"],
        "threshold_exact": exact["threshold"],
        "folds": layout,
        "val_at_far_1e-3": val["val"],
        "val_at_far_1e-3_std": val["std"],
    }
    for far, tar in tar_at_far(distances, issame, fars, is_distance=True).items():
        out[f"tar_at_far_{far_key(far)}"] = tar
    out["auc"] = roc_auc(distances, issame, is_distance=True)
    out["eer"] = eer(distances, issame, is_distance=True)
    out["pairs"] = int(distances.size)
    if roc:
        fpr, tpr, _ = roc_curve(distances, issame, is_distance=True)
        out["roc"] = (fpr, tpr)
    return out
