"""The combined margin of InsightFace, ``s · (cos(m1·θ + m2) − m3)`` on the target logit,
which covers SphereFace (m1), ArcFace (m2) and CosFace (m3).

Past ``m1·θ + m2 = π`` the cosine would rise again (a *smaller* penalty for worse
samples). InsightFace's ArcFace replaces the target there by ``cosθ − mm`` with
``th = cos(π − m)`` and ``mm = sin(π − m)·m``: the first-order penalty ``sinθ·m`` at the
threshold. We use the same rule with the threshold ``θ_th = (π − m2)/m1`` and the
angular margin ``δ = (m1 − 1)·θ_th + m2`` there, ``mm = sin(θ_th)·δ`` — exactly
InsightFace's values when m1 = 1; the target then never exceeds cosθ for the
presets (tested on a θ grid). With ``easy_margin`` (InsightFace's option) the
angular margin only applies where cosθ > 0 and the cosine is kept elsewhere. The
additive ``m3`` always applies.
"""
from __future__ import annotations

import math

import tensorflow as tf

from distill.losses.base import Loss, as_float, cross_entropy, flat_labels, pick, replace_target

EPS = 1e-7  # cosθ is clipped to [-1 + EPS, 1 - EPS] before acos (finite gradients)


def fallback_constants(m1, m2):
    """``(th, mm)``: the cosine where ``m1·θ + m2`` reaches π, and the penalty used beyond
    it. ``m2`` may be a float or a tensor of per-sample margins (MagFace)."""
    if isinstance(m2, tf.Tensor):
        theta_th = tf.minimum((math.pi - m2) / m1, math.pi)
        return tf.cos(theta_th), tf.sin(theta_th) * ((m1 - 1.0) * theta_th + m2)
    theta_th = min((math.pi - m2) / m1, math.pi)
    return math.cos(theta_th), math.sin(theta_th) * ((m1 - 1.0) * theta_th + m2)


def margin_target(cosine, m1=1.0, m2=0.0, m3=0.0, easy_margin=False) -> tf.Tensor:
    """Target-logit transform ``cos(m1·θ + m2) − m3`` with the threshold fallback; any shape.
    ``m2`` may be a tensor broadcastable to ``cosine`` (per-sample margins)."""
    cosine = as_float(cosine)
    if m1 == 1.0 and not isinstance(m2, tf.Tensor) and m2 == 0.0:
        return cosine - m3
    m2 = tf.cast(m2, cosine.dtype) if isinstance(m2, tf.Tensor) else m2
    theta = tf.acos(tf.clip_by_value(cosine, -1.0 + EPS, 1.0 - EPS))
    angular = tf.cos(m1 * theta + m2)
    if easy_margin:
        angular = tf.where(cosine > 0, angular, cosine)
    else:
        th, mm = fallback_constants(m1, m2)
        angular = tf.where(cosine > th, angular, cosine - mm)
    return angular - m3


class CombinedMargin(Loss):
    """``CE(s · logits)`` with the target logit replaced by ``cos(m1·θ + m2) − m3``."""

    def __init__(self, scale=64.0, m1=1.0, m2=0.5, m3=0.0, easy_margin=False, label_smoothing=0.0):
        if m1 <= 0 or m2 < 0 or m3 < 0:
            raise ValueError(f"combined margin needs m1 > 0, m2 >= 0, m3 >= 0 (got {m1}, {m2}, {m3})")
        super().__init__(scale=scale, m1=m1, m2=m2, m3=m3, easy_margin=easy_margin,
                         label_smoothing=label_smoothing)
        self.scale, self.m1, self.m2, self.m3 = float(scale), float(m1), float(m2), float(m3)
        self.easy_margin, self.label_smoothing = bool(easy_margin), float(label_smoothing)

    def logits(self, labels, cosine) -> tf.Tensor:
        """Scaled logits with the margin on the target column, [B, C]."""
        labels, cosine = flat_labels(labels), as_float(cosine)
        target = margin_target(pick(cosine, labels), self.m1, self.m2, self.m3, self.easy_margin)
        return self.scale * replace_target(cosine, labels, target)

    def __call__(self, labels, cosine, norms=None) -> tf.Tensor:
        return cross_entropy(self.logits(labels, cosine), flat_labels(labels), self.label_smoothing)


def arcface(scale=64.0, margin=0.5, easy_margin=False, label_smoothing=0.0):
    """ArcFace: additive angular margin ``cos(θ + m)``."""
    return CombinedMargin(scale, 1.0, margin, 0.0, easy_margin, label_smoothing)


def cosface(scale=64.0, margin=0.35, label_smoothing=0.0):
    """CosFace / AM-Softmax: additive cosine margin ``cosθ − m``."""
    return CombinedMargin(scale, 1.0, 0.0, margin, False, label_smoothing)


def sphereface(scale=64.0, margin=1.35, label_smoothing=0.0):
    """SphereFace in the combined form: multiplicative angular margin ``cos(m·θ)``."""
    return CombinedMargin(scale, margin, 0.0, 0.0, False, label_smoothing)
