"""Offline triplet mining in NumPy (vectorised): every anchor/positive pair with one random
valid negative."""
from __future__ import annotations

import numpy as np


def mine_triplets(embeddings, labels, rng=None, margin=None):
    """``(anchor, positive, negative)`` int64 index arrays.

    Every ordered pair ``a ≠ p`` with the same label whose anchor has at least one
    negative gets a negative drawn uniformly among the samples of another label. With
    ``margin``, the draw is among the *violating* negatives
    (``d_an < d_ap + margin``, cosine distance on ``embeddings``) when there are any.
    """
    labels = np.asarray(labels).reshape(-1)
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.shape[0] != labels.shape[0]:
        raise ValueError(f"{embeddings.shape[0]} embeddings but {labels.shape[0]} labels")
    rng = np.random.default_rng(rng)
    same = labels[:, None] == labels[None, :]
    anchor, positive = np.nonzero(same & ~np.eye(len(labels), dtype=bool))
    negative_mask = ~same[anchor]                                   # [P, B]
    keep = negative_mask.any(axis=1)
    anchor, positive, negative_mask = anchor[keep], positive[keep], negative_mask[keep]
    if margin is not None and len(anchor):
        unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        distance = 1.0 - unit @ unit.T
        violating = negative_mask & (distance[anchor] < (distance[anchor, positive] + margin)[:, None])
        has = violating.any(axis=1)
        negative_mask = np.where(has[:, None], violating, negative_mask)
    negative = _random_true(negative_mask, rng)
    return anchor.astype(np.int64), positive.astype(np.int64), negative.astype(np.int64)


def _random_true(mask: np.ndarray, rng) -> np.ndarray:
    """Per row, the column of a uniformly chosen True entry (each row has one)."""
    if mask.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    cumulative = np.cumsum(mask, axis=1)
    draw = np.floor(rng.random(mask.shape[0]) * cumulative[:, -1]).astype(np.int64)
    return np.argmax(cumulative > draw[:, None], axis=1)
