"""EKD as published: Huang, Wu, Xu, Ding, "Evaluation-oriented Knowledge Distillation for Deep
Face Recognition", CVPR 2022 (arXiv:2206.02325; official code Tencent/TFace,
``recognition/tasks/ekd/distillation/ekd.py``, whose rule this follows where the two differ).

Over the unordered pairs ``i < j`` of the (global) batch, ``s_ij``/``t_ij`` the student/teacher
cosine similarities of L2-normalised embeddings; a pair is positive when both labels are equal
and ≥ 0, negative when they differ and both are ≥ 0 (unlabelled samples form no pairs):

1. Thresholds at fixed FPRs (the evaluation protocol's operating points): each model's
   negatives sorted descending, ``τ_k = neg[⌊n_neg · fpr_k⌋]`` for fpr 1e-1 … 1e-6 (the
   official ``sorted_neg[len // anchor]``), tracked by EMA, ``A_k ← m·τ_k + (1 − m)·A_k`` with
   m = 0.01 from zeros; the loss uses the updated ``A``. Student and teacher keep their own.
2. Rank of a pair = smooth count of thresholds it exceeds: ``c(s) = Σ_k σ((s − A_k)/T)``,
   T = 0.01 (the exponent clipped to ±50 as in the code).
3. Critical pairs: every positive pair, and the ``top_k`` negative pairs with the highest
   *student* similarity (the student's false accepts; the teacher's similarity of the same
   pairs is its target; a tie at the k-th value takes every tied pair).
4. ``L = w_pos · mean_pos (c_s − c_t)² + w_neg · mean_topk (c_s − c_t)²`` (MSE of the rank
   counts), w_pos = 0.02, w_neg = 0.01, term weight 1 in the official training.

Under ``tf.distribute`` the embeddings, teacher embeddings and labels of every replica are
gathered: thresholds, top-k and the normalisation are those of the global batch, identical on
every replica (state written once, as :mod:`distill.losses.center`). Each replica returns rows
for its own samples, ``v_i = B · Σ_j W_ij (g_ij − ½·sg(g_ij))`` with the partner ``x_j`` held
constant: the rows average to ``L`` over the global batch and their gradient is ∂L/∂x_i.
"""
from __future__ import annotations

import tensorflow as tf

from distill.losses.base import Loss, as_float, flat_labels, replica_concat, replica_rows, state_variable

FPRS = (0.1, 0.01, 0.001, 0.0001, 1e-05, 1e-06)


class EvaluationOrientedKD(Loss):
    """EKD (see the module docstring); needs the batch labels."""

    kind = "distillation"
    needs_labels = True

    def __init__(self, fprs=(0.1, 0.01, 0.001, 0.0001, 1e-05, 1e-06), temperature=0.01, momentum=0.01,
                 top_k=2000, positive_weight=0.02, negative_weight=0.01):
        fprs = tuple(float(f) for f in fprs)
        if not fprs or any(not 0 < f < 1 for f in fprs):
            raise ValueError(f"ekd fprs must be a non-empty list of rates in (0, 1), got {list(fprs)}")
        if temperature <= 0:
            raise ValueError(f"ekd temperature must be > 0, got {temperature}")
        if not 0 < momentum <= 1:
            raise ValueError(f"ekd momentum must be in (0, 1], got {momentum}")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"ekd top_k must be an integer ≥ 1, got {top_k!r}")
        if positive_weight < 0 or negative_weight < 0:
            raise ValueError("ekd positive_weight and negative_weight must be ≥ 0")
        super().__init__(fprs=list(fprs), temperature=temperature, momentum=momentum, top_k=top_k,
                         positive_weight=positive_weight, negative_weight=negative_weight)
        self.fprs, self.temperature, self.momentum = fprs, float(temperature), float(momentum)
        self.top_k = top_k
        self.positive_weight, self.negative_weight = float(positive_weight), float(negative_weight)
        self.student_thresholds = self.teacher_thresholds = None

    def build(self, **_) -> None:
        """Create the EMA thresholds (zeros, as the official buffers); idempotent."""
        if self.student_thresholds is None:
            self.student_thresholds = state_variable(tf.zeros([len(self.fprs)]), "ekd_student_thresholds")
            self.teacher_thresholds = state_variable(tf.zeros([len(self.fprs)]), "ekd_teacher_thresholds")

    @property
    def state(self) -> list:
        return [] if self.student_thresholds is None else [self.student_thresholds, self.teacher_thresholds]

    def _thresholds(self, similarities, negative, variable, dtype):
        """EMA-updated thresholds at ``fprs`` of the negatives (unchanged without negatives)."""
        values = tf.sort(tf.boolean_mask(similarities, negative), direction="DESCENDING")
        count = tf.shape(values)[0]
        rates = tf.constant(self.fprs, tf.float64)
        index = tf.cast(tf.floor(tf.cast(count, tf.float64) * rates + 1e-9), tf.int32)
        padded = tf.concat([values, tf.zeros([1], values.dtype)], 0)      # gather-safe without negatives
        batch = tf.gather(padded, tf.minimum(index, tf.maximum(count - 1, 0)))
        old = tf.cast(tf.convert_to_tensor(variable), dtype)
        new = tf.where(count > 0, self.momentum * batch + (1.0 - self.momentum) * old, old)
        variable.assign(tf.cast(new, tf.float32))
        return new

    def _rank(self, similarities, thresholds):
        exponent = tf.clip_by_value((similarities[..., None] - thresholds) / self.temperature, -50.0, 50.0)
        return tf.reduce_sum(tf.sigmoid(exponent), axis=-1)

    def __call__(self, student, teacher, labels) -> tf.Tensor:
        self.build()
        x = tf.math.l2_normalize(as_float(student), axis=1)
        t = tf.cast(tf.math.l2_normalize(as_float(teacher), axis=1), x.dtype)
        labels = flat_labels(labels)
        every_x, every_t = replica_concat(tf.stop_gradient(x)), replica_concat(t)
        every_label = replica_concat(labels)
        total = tf.shape(every_x)[0]
        gram_s = tf.matmul(every_x, every_x, transpose_b=True)          # [B, B], no gradient
        gram_t = tf.stop_gradient(tf.matmul(every_t, every_t, transpose_b=True))
        index = tf.range(total)
        upper = index[:, None] < index[None, :]
        labelled = (every_label[:, None] >= 0) & (every_label[None, :] >= 0)
        same = every_label[:, None] == every_label[None, :]
        positive, negative = upper & labelled & same, upper & labelled & ~same
        a_s = self._thresholds(gram_s, negative, self.student_thresholds, x.dtype)
        a_t = self._thresholds(gram_t, negative, self.teacher_thresholds, x.dtype)
        negatives = tf.boolean_mask(gram_s, negative)
        k = tf.minimum(self.top_k, tf.shape(negatives)[0])
        kth = tf.cond(k > 0, lambda: tf.reduce_min(tf.math.top_k(negatives, k=tf.maximum(k, 1)).values),
                      lambda: tf.constant(2.0, x.dtype))
        critical = negative & (gram_s >= kth)
        pair_weight = (tf.cast(positive, x.dtype) * self.positive_weight
                       / tf.maximum(tf.reduce_sum(tf.cast(positive, x.dtype)), 1.0)
                       + tf.cast(critical, x.dtype) * self.negative_weight
                       / tf.maximum(tf.reduce_sum(tf.cast(critical, x.dtype)), 1.0))
        pair_weight = pair_weight + tf.transpose(pair_weight)             # both orders of a pair
        rows = replica_rows(tf.shape(x)[0])
        sim_s = tf.matmul(x, every_x, transpose_b=True)                 # [b, B], gradient via x_i
        gap = tf.square(self._rank(sim_s, a_s) - self._rank(tf.gather(gram_t, rows), a_t))
        values = tf.gather(pair_weight, rows) * (gap - 0.5 * tf.stop_gradient(gap))
        return tf.cast(total, x.dtype) * tf.reduce_sum(values, axis=1)
