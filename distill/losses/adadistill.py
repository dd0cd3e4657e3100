"""AdaDistill (Boutros, Štruc, Damer, ECCV 2024, arXiv:2407.01332; official code
fdbtrs/AdaDistill ``utils/losses.py: AdaptiveAArcFace``, ``train/train_AdaDistill.py``):
a margin loss whose class centres are an EMA of the *teacher's* embeddings, never trained.

Each step, for every labelled sample i of the global batch (all replicas), with ``ŝ_i``, ``t̂_i``
the L2-normalised student and teacher embeddings and ``c`` the (unnormalised) centres:

1. adaptive momentum (paper §3, adaptive class centres; official ``target_logit``):
   ``λ_i = clip(cos(c_{y_i}, t̂_i), 1e-6, 1)``,
   ``α_i = clip(clip(ŝ_i·t̂_i, −1, 1) · λ_i, 1e-6, 1)``: early, when the student is far from
   the teacher, α is small and the centre follows the sample's teacher embedding; later it
   keeps the accumulated class knowledge;
2. EMA (paper §3; official ``self.kernel[:, label] = ...``): ``c_{y_i} ← α_i·c_{y_i} + (1 − α_i)·t̂_i``, before the loss (as the official
   code). A class seen several times in one global batch gets the *mean* of its samples'
   updates, each from the pre-step centre (the official in-place write keeps one of them,
   which one is undefined); with one sample per class both agree;
3. loss: the margin head (ArcFace by default, ``scale``/``margin`` as ``arcface``;
   ``head: cosface`` too, as the official code) on ``cos(ŝ_i, c_j / ‖c_j‖)``.

Centres start as ``N(0, init_std²)`` (official: ``normal_(std=0.01)``), drawn statelessly from
``seed``; they live in one non-trainable state variable [C, D] (checkpointed with the objective),
receive no gradient, and every replica applies the same update from the gathered batch (class
means by a membership matmul, no atomic sums: deterministic on GPU too).
Unlabelled samples (label −1) never update a centre. The teacher embedding of a sample is
``batch["teacher"]``: with a ``--flip`` store, that of the image as the student saw it
(flipped or not). Partial FC: ``classes`` selects the scored centre columns; the update still
covers the batch's classes. The centres live in the teacher's space: a student whose
dimension differs is refused (the paper's student and teacher are both 512-d).
"""
from __future__ import annotations

import tensorflow as tf

from distill.losses.base import Loss, as_float, flat_labels, replica_concat, state_variable
from distill.losses.margin import arcface, cosface

#: margin heads on the teacher centres: name → f(scale, margin)
HEADS = {"arcface": arcface, "cosface": cosface}
FLOOR = 1e-6   # the official clamp of λ and α


def adaptive_momentum(student, teacher, centres) -> tf.Tensor:
    """``α_i`` [N] from normalised student/teacher rows and each sample's current centre."""
    cos_st = tf.clip_by_value(tf.reduce_sum(student * teacher, axis=1), -1.0, 1.0)
    norm = tf.maximum(tf.norm(centres, axis=1), 1e-8)
    lam = tf.clip_by_value(tf.reduce_sum(centres * teacher, axis=1) / norm, FLOOR, 1.0)
    return tf.clip_by_value(cos_st * lam, FLOOR, 1.0)


class AdaDistill(Loss):
    """Margin loss on EMA teacher class centres; see the module docstring."""

    def __init__(self, scale=64.0, margin=0.45, head="arcface", init_std=0.01, seed=0):
        if head not in HEADS:
            raise ValueError(f"adadistill head must be one of {', '.join(HEADS)} (got {head!r})")
        if not init_std > 0:
            raise ValueError(f"adadistill init_std must be > 0 (got {init_std})")
        super().__init__(scale=scale, margin=margin, head=head, init_std=init_std, seed=seed)
        self.margin_loss = HEADS[head](float(scale), float(margin))
        self.init_std, self.seed = float(init_std), int(seed)
        self.centres = None

    def build(self, num_classes=None, embedding_dim=None, teacher_dim=None, **_) -> None:
        """Create the [num_classes, teacher_dim] centres; idempotent."""
        if embedding_dim and teacher_dim and int(embedding_dim) != int(teacher_dim):
            raise ValueError(f"adadistill: model.embedding_size {embedding_dim} differs from the teacher's "
                             f"dimension {teacher_dim}; the centres are teacher embeddings, set "
                             f"model.embedding_size: {teacher_dim}")
        dim = teacher_dim or embedding_dim
        if self.centres is None and num_classes and dim:
            init = self.init_std * tf.random.stateless_normal([int(num_classes), int(dim)],
                                                              seed=[self.seed, 19])
            self.centres = state_variable(init, "adadistill_centres")

    @property
    def state(self) -> list:
        return [] if self.centres is None else [self.centres]

    def centre_cosines(self, labels, embeddings, teacher, classes=None) -> tf.Tensor:
        """Update the centres from the (global) batch, then ``cos(ŝ, ĉ_j)`` [B, C] or, with
        ``classes`` [S], [B, S] for those columns."""
        if self.centres is None:
            raise ValueError("adadistill: call build(num_classes=..., embedding_dim=...) first")
        labels = flat_labels(labels)
        student = tf.math.l2_normalize(as_float(embeddings), axis=1)
        teacher = tf.math.l2_normalize(tf.cast(teacher, student.dtype), axis=1)
        self._update(replica_concat(labels), replica_concat(tf.stop_gradient(student)),
                     replica_concat(teacher))
        centres = tf.cast(tf.convert_to_tensor(self.centres), student.dtype)
        if classes is not None:
            centres = tf.gather(centres, tf.reshape(classes, [-1]))
        centres = tf.math.l2_normalize(centres, axis=1)
        return tf.clip_by_value(tf.matmul(student, centres, transpose_b=True), -1.0, 1.0)

    def _update(self, labels, student, teacher) -> None:
        keep = labels >= 0
        labels = tf.boolean_mask(labels, keep)
        student, teacher = tf.boolean_mask(student, keep), tf.boolean_mask(teacher, keep)
        old = tf.gather(tf.cast(tf.convert_to_tensor(self.centres), teacher.dtype), labels)
        alpha = adaptive_momentum(student, teacher, old)[:, None]
        new = alpha * old + (1.0 - alpha) * teacher
        classes, _ = tf.unique(labels)
        members = tf.cast(tf.equal(classes[:, None], labels[None, :]), new.dtype)   # [U, N]
        mean = tf.matmul(members, new) / tf.reduce_sum(members, axis=1, keepdims=True)
        self.centres.scatter_update(tf.IndexedSlices(tf.cast(mean, tf.float32), classes))

    def __call__(self, labels, cosine, norms=None) -> tf.Tensor:
        """The margin head's per-sample loss on cosines from :meth:`centre_cosines`."""
        return self.margin_loss(labels, cosine)
