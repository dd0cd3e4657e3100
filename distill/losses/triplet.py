"""Online triplet losses on a batch: batch-hard, batch-all and semi-hard (the semantics
of TensorFlow Addons' ``TripletSemiHardLoss``), all returning per-anchor losses [B].

Distances: ``cosine`` (``1 − cos``, clipped at 0), ``euclidean`` or ``squared_euclidean``;
with ``normalize`` (default) embeddings are L2-normalised first (``cosine`` always is).
The diagonal (self-distance) is exactly 0. For batch-all and semi-hard the per-anchor
values are scaled so that their *mean* over the batch is the usual loss (a mean over
triplets or positive pairs); anchors without a positive and a negative give 0.
"""
from __future__ import annotations

import tensorflow as tf

from distill.losses.base import Loss, as_float, flat_labels


def _squared(x) -> tf.Tensor:
    dot = tf.matmul(x, x, transpose_b=True)
    norms = tf.linalg.diag_part(dot)
    return tf.maximum(norms[:, None] + norms[None, :] - 2.0 * dot, 0.0)


def _euclidean(x) -> tf.Tensor:
    squared = _squared(x)
    zero = squared <= 0.0
    return tf.where(zero, tf.zeros_like(squared), tf.sqrt(tf.where(zero, tf.ones_like(squared), squared)))


def _cosine(x) -> tf.Tensor:
    x = tf.math.l2_normalize(x, axis=1)
    return tf.maximum(1.0 - tf.matmul(x, x, transpose_b=True), 0.0)


DISTANCES = {"cosine": _cosine, "euclidean": _euclidean, "squared_euclidean": _squared}


def pairwise_distances(embeddings, distance="cosine", normalize=True) -> tf.Tensor:
    """[B, B] distances with a zero diagonal."""
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance '{distance}'; valid: {', '.join(DISTANCES)}")
    x = as_float(embeddings)
    if normalize:
        x = tf.math.l2_normalize(x, axis=1)
    d = DISTANCES[distance](x)
    return d * (1.0 - tf.eye(tf.shape(d)[0], dtype=d.dtype))


def pair_masks(labels):
    """``(positive, negative)`` boolean [B, B]: same label but not self / other label."""
    labels = flat_labels(labels)
    same = tf.equal(labels[:, None], labels[None, :])
    not_self = tf.logical_not(tf.cast(tf.eye(tf.shape(labels)[0]), tf.bool))
    return tf.logical_and(same, not_self), tf.logical_not(same)


class TripletLoss(Loss):
    """Common parameters: ``margin``, ``distance``, ``normalize``."""

    kind = "metric"

    def __init__(self, margin=0.3, distance="cosine", normalize=True, **extra):
        if distance not in DISTANCES:
            raise ValueError(f"unknown distance '{distance}'; valid: {', '.join(DISTANCES)}")
        super().__init__(margin=margin, distance=distance, normalize=normalize, **extra)
        self.margin, self.distance, self.normalize = float(margin), distance, bool(normalize)

    def distances(self, embeddings):
        return pairwise_distances(embeddings, self.distance, self.normalize)


class BatchHardTriplet(TripletLoss):
    """Batch-hard (Hermans et al.): per anchor, hardest positive vs hardest negative:
    ``max(max_p d_ap − min_n d_an + margin, 0)`` (``soft``: ``softplus(d_ap − d_an)``)."""

    def __init__(self, margin=0.3, distance="cosine", normalize=True, soft=False):
        super().__init__(margin, distance, normalize, soft=soft)
        self.soft = bool(soft)

    def __call__(self, labels, embeddings) -> tf.Tensor:
        d = self.distances(embeddings)
        positive, negative = pair_masks(labels)
        hardest_pos = tf.reduce_max(tf.where(positive, d, tf.zeros_like(d)), axis=1)
        big = tf.reduce_max(d) + 1.0
        hardest_neg = tf.reduce_min(tf.where(negative, d, big * tf.ones_like(d)), axis=1)
        gap = hardest_pos - hardest_neg
        loss = tf.nn.softplus(gap) if self.soft else tf.maximum(gap + self.margin, 0.0)
        valid = tf.logical_and(tf.reduce_any(positive, axis=1), tf.reduce_any(negative, axis=1))
        return tf.where(valid, loss, tf.zeros_like(loss))


class BatchAllTriplet(TripletLoss):
    """Batch-all: ``max(d_ap − d_an + margin, 0)`` over every valid triplet, averaged over
    the triplets with a positive loss (``average="active"``) or over all (``"all"``)."""

    AVERAGES = ("active", "all")

    def __init__(self, margin=0.3, distance="cosine", normalize=True, average="active"):
        if average not in self.AVERAGES:
            raise ValueError(f"unknown average '{average}'; valid: {', '.join(self.AVERAGES)}")
        super().__init__(margin, distance, normalize, average=average)
        self.average = average

    def __call__(self, labels, embeddings) -> tf.Tensor:
        d = self.distances(embeddings)
        positive, negative = pair_masks(labels)
        valid = tf.logical_and(positive[:, :, None], negative[:, None, :])  # [a, p, n]
        hinge = tf.maximum(d[:, :, None] - d[:, None, :] + self.margin, 0.0)
        hinge = tf.where(valid, hinge, tf.zeros_like(hinge))
        counted = hinge > 1e-16 if self.average == "active" else valid
        count = tf.reduce_sum(tf.cast(counted, d.dtype))
        batch = tf.cast(tf.shape(d)[0], d.dtype)
        return tf.reduce_sum(hinge, axis=[1, 2]) * batch / tf.maximum(count, 1.0)


class SemiHardTriplet(TripletLoss):
    """Semi-hard (FaceNet; TF-Addons semantics): for each positive pair (a, p) the negative
    with the smallest ``d_an > d_ap``, else the largest ``d_an`` (0 if the anchor has no
    negative, as TF-Addons' masked maximum gives); mean over positive pairs of
    ``max(d_ap − d_an + margin, 0)`` (0, not NaN, without positive pairs).
    TF-Addons' defaults are ``margin=1, distance="euclidean", normalize=False``."""

    def __init__(self, margin=0.3, distance="cosine", normalize=True):
        super().__init__(margin, distance, normalize)

    def __call__(self, labels, embeddings) -> tf.Tensor:
        d = self.distances(embeddings)
        positive, negative = pair_masks(labels)
        d_an = d[:, None, :]                                      # [a, p, n]
        outside = tf.logical_and(negative[:, None, :], d_an > d[:, :, None])
        big = tf.reduce_max(d) + 1.0
        nearest_outside = tf.reduce_min(tf.where(outside, d_an, big * tf.ones_like(d_an)), axis=2)
        farthest = tf.reduce_max(tf.where(negative, d, tf.zeros_like(d)), axis=1)  # 0 when none
        d_neg = tf.where(tf.reduce_any(outside, axis=2), nearest_outside, farthest[:, None])
        hinge = tf.maximum(d - d_neg + self.margin, 0.0)
        hinge = tf.where(positive, hinge, tf.zeros_like(hinge))
        count = tf.reduce_sum(tf.cast(positive, d.dtype))
        batch = tf.cast(tf.shape(d)[0], d.dtype)
        return tf.reduce_sum(hinge, axis=1) * batch / tf.maximum(count, 1.0)
