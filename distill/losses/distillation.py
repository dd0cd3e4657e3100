"""Distillation losses between student and teacher outputs, per sample [B].

When the student and teacher dimensions differ (or with ``projection="always"``), a learned
linear projection (a Keras ``Dense``, with a bias if ``bias=True``, owned by the loss, in
``trainable_variables``) maps the student to the teacher's space first; a bias lets it absorb
an offset of the teacher's space (the cone of an uncentred teacher). It is built on the first call, or earlier with
``build(embedding_dim=..., teacher_dim=...)`` — do that before collecting variables for
an optimizer or a checkpoint, and inside ``strategy.scope()`` when distributed.
"""
from __future__ import annotations

import logging

import tensorflow as tf

from distill.losses.base import Loss, as_float

log = logging.getLogger(__name__)


def projection_note(label: str, params: dict, student_dim: int, teacher_dim: int) -> str | None:
    """The line announcing the learned projection the distillation term ``label`` (its recipe
    ``params``) trains, or None when it has none (same dims and not ``always``, or ``never``)."""
    mode = DistillationLoss.PROJECTIONS.get(params.get("projection", True), "auto")
    if mode == "never" or (mode == "auto" and int(student_dim) == int(teacher_dim)):
        return None
    sign = "=" if int(student_dim) == int(teacher_dim) else "≠"
    return (f"{label}: teacher {teacher_dim}-d {sign} student {student_dim}-d: a learned linear projection "
            f"{student_dim}→{teacher_dim} is trained with the student (projection: {mode}, "
            f"bias {'on' if params.get('bias') else 'off'})")


class DistillationLoss(Loss):
    """Base: optional projection of the student; subclasses define ``compare``."""

    kind = "distillation"

    #: ``projection`` values: when to put a learned linear map before the comparison
    PROJECTIONS = {True: "auto", "auto": "auto", False: "never", "never": "never", "always": "always"}

    def __init__(self, projection=True, bias=False, **params):
        if projection not in self.PROJECTIONS:
            raise ValueError(f"projection must be true/auto (when dims differ), always or "
                             f"false/never, got {projection!r}")
        super().__init__(projection=projection, bias=bias, **params)
        self.projection = self.PROJECTIONS[projection]
        self.bias = bool(bias)
        self.projector = None

    def build(self, embedding_dim=None, teacher_dim=None, **_) -> None:
        """Create the projection when both dimensions are known and it is wanted; idempotent."""
        if self.projector is not None or not embedding_dim or not teacher_dim:
            return
        if int(embedding_dim) == int(teacher_dim) and self.projection != "always":
            return
        if self.projection == "never":
            raise ValueError(f"student dim {embedding_dim} != teacher dim {teacher_dim} "
                             "and projection is off")
        import keras

        with tf.init_scope():
            self.projector = keras.layers.Dense(int(teacher_dim), use_bias=self.bias, dtype="float32",
                                                kernel_initializer="glorot_uniform",
                                                name="distill_projection")
            self.projector.build((None, int(embedding_dim)))

    @property
    def trainable_variables(self) -> list:
        return [] if self.projector is None else list(self.projector.trainable_variables)

    def project(self, student, teacher):
        student, teacher = as_float(student), as_float(teacher)
        if self.projector is None:
            self.build(embedding_dim=student.shape[-1], teacher_dim=teacher.shape[-1])
            if self.projector is not None:
                log.warning("distillation projection %s built on the first call; optimizers and "
                            "checkpoints must collect variables after it (see build())",
                            tuple(self.projector.kernel.shape))
        if self.projector is not None:
            student = tf.cast(self.projector(tf.cast(student, tf.float32)), student.dtype)
        return student, tf.cast(teacher, student.dtype)

    def __call__(self, student, teacher) -> tf.Tensor:
        return self.compare(*self.project(student, teacher))


class L2Distill(DistillationLoss):
    """``‖ŝ − t̂‖²`` between L2-normalised student and teacher embeddings (= 2 − 2cos)."""

    def __init__(self, projection=True, bias=False):
        super().__init__(projection=projection, bias=bias)

    def compare(self, student, teacher):
        s, t = tf.math.l2_normalize(student, axis=1), tf.math.l2_normalize(teacher, axis=1)
        return tf.reduce_sum(tf.square(s - t), axis=1)


class CosineDistill(DistillationLoss):
    """``1 − cos(s, t)``."""

    def __init__(self, projection=True, bias=False):
        super().__init__(projection=projection, bias=bias)

    def compare(self, student, teacher):
        s, t = tf.math.l2_normalize(student, axis=1), tf.math.l2_normalize(teacher, axis=1)
        return 1.0 - tf.reduce_sum(s * t, axis=1)


class KLDistill(DistillationLoss):
    """Hinton et al.: ``T² · KL(softmax(t/T) ‖ softmax(s/T))`` on logits."""

    def __init__(self, temperature=4.0, projection=True, bias=False):
        if temperature <= 0:
            raise ValueError(f"kl temperature must be > 0 (got {temperature})")
        super().__init__(projection=projection, bias=bias, temperature=temperature)
        self.temperature = float(temperature)

    def compare(self, student, teacher):
        log_s = tf.nn.log_softmax(student / self.temperature, axis=1)
        log_t = tf.nn.log_softmax(teacher / self.temperature, axis=1)
        kl = tf.reduce_sum(tf.exp(log_t) * (log_t - log_s), axis=1)
        return self.temperature ** 2 * kl
