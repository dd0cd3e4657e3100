"""Relation-based distillation: match the geometry of the batch, not each embedding.

Point-wise terms (``l2``, ``cosine``) ask the student to reproduce the teacher's absolute
space; these ask it to reproduce how the batch's samples relate to each other, so the
student's space may be rotated, and a student with fewer dimensions needs no projection.
They read only the stored teacher embeddings of the batch, so they work on an offline store.
Each returns per-sample values [B] whose mean is the term (the sample's row of relations).

- ``rkd_distance``, ``rkd_angle``: Park et al., "Relational Knowledge Distillation", CVPR 2019
  (Huber loss on mean-normalised pairwise distances; on angles of sample triplets).
- ``similarity``: Tung & Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019
  (row-normalised Gram matrices, squared Frobenius distance / B²).
- ``critical_rank_kl`` (called ``ekd`` until the published EKD arrived as ``ekd``,
  :mod:`distill.losses.ekd`): a variant inspired by EKD, not its rule: only the *critical*
  pairs — those the teacher or the student would accept at a low false-accept rate, i.e. the
  top ``critical_fraction`` of each model's batch similarities — are compared, by a listwise
  rank loss per anchor: KL(softmax(T/τ) ‖ softmax(S/τ)) over its critical pairs.

Embeddings are L2-normalised first (face embeddings are compared by cosine).
"""
from __future__ import annotations

import tensorflow as tf

from distill.losses.base import Loss, as_float


def _normalised(x) -> tf.Tensor:
    return tf.math.l2_normalize(as_float(x), axis=1)


def _off_diagonal(batch: int, dtype=tf.float32) -> tf.Tensor:
    return 1.0 - tf.eye(batch, dtype=dtype)


def _huber(a, b) -> tf.Tensor:
    """Smooth L1 (Huber, δ = 1) elementwise, as PyTorch's ``smooth_l1_loss``."""
    diff = tf.abs(a - b)
    return tf.where(diff < 1.0, 0.5 * tf.square(diff), diff - 0.5)


class RelationLoss(Loss):
    """Base: no projection (relations do not depend on the embedding dimension)."""

    kind = "distillation"

    def __call__(self, student, teacher) -> tf.Tensor:
        student, teacher = _normalised(student), _normalised(teacher)
        if teacher.dtype != student.dtype:
            teacher = tf.cast(teacher, student.dtype)
        return self.compare(student, teacher)


def _pairwise_distances(x) -> tf.Tensor:
    """Euclidean distances [B, B] (zero on the diagonal; gradient-safe at 0)."""
    squared = tf.reduce_sum(tf.square(x[:, None, :] - x[None, :, :]), axis=-1)
    positive = squared > 1e-12
    return tf.where(positive, tf.sqrt(tf.where(positive, squared, tf.ones_like(squared))), 0.0)


class RKDDistance(RelationLoss):
    """Huber(ψ(s_i, s_j), ψ(t_i, t_j)), ψ = distance / mean distance of the batch's pairs."""

    def __init__(self):
        super().__init__()

    def compare(self, student, teacher):
        batch = tf.shape(student)[0]
        mask = _off_diagonal(batch, student.dtype)
        pairs = tf.maximum(tf.reduce_sum(mask), 1.0)

        def normalised(x):
            distances = _pairwise_distances(x)
            return distances / tf.maximum(tf.reduce_sum(distances * mask) / pairs, 1e-12)

        values = _huber(normalised(student), normalised(teacher)) * mask
        return tf.reduce_sum(values, axis=1) / tf.maximum(tf.cast(batch, student.dtype) - 1.0, 1.0)


class RKDAngle(RelationLoss):
    """Huber on cos∠(x_j − x_i, x_k − x_i) for every anchor i and j, k ≠ i (triplets)."""

    def __init__(self):
        super().__init__()

    def compare(self, student, teacher):
        batch = tf.shape(student)[0]
        mask = _off_diagonal(batch, student.dtype)
        triplets = mask[:, :, None] * mask[:, None, :]        # j ≠ i and k ≠ i

        def angles(x):
            directions = tf.math.l2_normalize(x[None, :, :] - x[:, None, :], axis=-1)  # [i, j, D]
            return tf.matmul(directions, directions, transpose_b=True)               # [i, j, k]

        values = _huber(angles(student), angles(teacher)) * triplets
        count = tf.maximum(tf.reduce_sum(triplets, axis=[1, 2]), 1.0)
        return tf.reduce_sum(values, axis=[1, 2]) / count


class SimilarityPreserving(RelationLoss):
    """‖G̃_s − G̃_t‖²_F / B² with G = X Xᵀ row-normalised; per sample, its row / B."""

    def __init__(self):
        super().__init__()

    def compare(self, student, teacher):
        batch = tf.cast(tf.shape(student)[0], student.dtype)
        gram_s = tf.math.l2_normalize(tf.matmul(student, student, transpose_b=True), axis=1)
        gram_t = tf.math.l2_normalize(tf.matmul(teacher, teacher, transpose_b=True), axis=1)
        return tf.reduce_sum(tf.square(gram_s - gram_t), axis=1) / batch


class CriticalRankKL(RelationLoss):
    """Listwise rank loss on the critical pairs (see the module docstring)."""

    def __init__(self, critical_fraction: float = 0.1, temperature: float = 0.05):
        if not 0 < critical_fraction <= 1:
            raise ValueError(f"critical_rank_kl critical_fraction must be in (0, 1], got {critical_fraction}")
        if temperature <= 0:
            raise ValueError(f"critical_rank_kl temperature must be > 0, got {temperature}")
        super().__init__(critical_fraction=critical_fraction, temperature=temperature)
        self.critical_fraction = float(critical_fraction)
        self.temperature = float(temperature)

    def _threshold(self, similarities, mask):
        """The similarity above which the top ``critical_fraction`` of the off-diagonal pairs lie."""
        values = tf.boolean_mask(similarities, mask > 0)
        count = tf.shape(values)[0]
        k = tf.clip_by_value(tf.cast(tf.math.ceil(self.critical_fraction * tf.cast(count, tf.float32)),
                                     tf.int32), 1, tf.maximum(count, 1))
        return tf.reduce_min(tf.math.top_k(values, k=k, sorted=False).values)

    def compare(self, student, teacher):
        batch = tf.shape(student)[0]
        mask = _off_diagonal(batch, student.dtype)
        sim_s = tf.matmul(student, student, transpose_b=True)
        sim_t = tf.matmul(teacher, teacher, transpose_b=True)
        critical = mask * tf.cast((sim_t >= tf.stop_gradient(self._threshold(sim_t, mask)))
                                  | (sim_s >= tf.stop_gradient(self._threshold(sim_s, mask))), student.dtype)
        very_negative = tf.constant(-1e9, student.dtype)
        log_p_t = tf.nn.log_softmax(tf.where(critical > 0, sim_t / self.temperature, very_negative), axis=1)
        log_p_s = tf.nn.log_softmax(tf.where(critical > 0, sim_s / self.temperature, very_negative), axis=1)
        kl = tf.reduce_sum(critical * tf.exp(log_p_t) * (log_p_t - log_p_s), axis=1)
        return tf.where(tf.reduce_sum(critical, axis=1) >= 2.0, kl, tf.zeros_like(kl))
