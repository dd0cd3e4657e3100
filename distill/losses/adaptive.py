"""Margin losses with adaptive scale or margin: AdaCos, CurricularFace, MagFace, AdaFace.

Running statistics live in non-trainable ``tf.Variable`` state. Under a
``tf.distribute`` strategy the batch statistics are computed over the *global* batch
(values gathered from every replica), so all replicas write the same state.
"""
from __future__ import annotations

import math

import tensorflow as tf

from distill.losses.base import (Loss, as_float, cross_entropy, flat_labels, pick, replace_target,
                                 replica_concat, state_variable, target_mask)
from distill.losses.margin import EPS, margin_target


def lower_median(values) -> tf.Tensor:
    """Median of a 1-D tensor; the lower middle value for even sizes (as ``torch.median``)."""
    ordered = tf.sort(values)
    return ordered[(tf.size(ordered) - 1) // 2]


class AdaCos(Loss):
    """AdaCos (dynamic): no margin; the scale is re-estimated on every batch as
    ``s = log(B_avg) / cos(min(π/4, θ_med))`` with ``B_avg`` the mean over samples of
    ``Σ_{k≠y} exp(s_prev·cosθ_k)`` and ``θ_med`` the median target angle; the first
    ``s_prev`` is the fixed scale ``√2·log(C − 1)``. The new scale is used for the batch."""

    def __init__(self, num_classes=None, label_smoothing=0.0):
        super().__init__(num_classes=num_classes, label_smoothing=label_smoothing)
        self.label_smoothing = float(label_smoothing)
        initial = self.fixed_scale(num_classes) if num_classes else -1.0  # -1: not set yet
        self.scale = state_variable(initial, "adacos_scale")

    @staticmethod
    def fixed_scale(num_classes) -> float:
        return math.sqrt(2.0) * math.log(num_classes - 1)

    @property
    def state(self) -> list:
        return [self.scale]

    def __call__(self, labels, cosine, norms=None) -> tf.Tensor:
        labels, cosine = flat_labels(labels), as_float(cosine)
        dtype = cosine.dtype
        num_classes = tf.cast(tf.shape(cosine)[-1], dtype)
        previous = tf.cast(self.scale, dtype)
        previous = tf.where(previous < 0, math.sqrt(2.0) * tf.math.log(num_classes - 1.0), previous)
        stats = tf.stop_gradient(cosine)
        theta = tf.acos(tf.clip_by_value(pick(stats, labels), -1.0 + EPS, 1.0 - EPS))
        others = tf.where(target_mask(labels, stats), tf.constant(-math.inf, dtype), previous * stats)
        per_sample = replica_concat(tf.reduce_logsumexp(others, axis=1))
        log_b_avg = tf.reduce_logsumexp(per_sample) - tf.math.log(tf.cast(tf.size(per_sample), dtype))
        theta_med = lower_median(replica_concat(theta))
        scale = log_b_avg / tf.cos(tf.minimum(math.pi / 4, theta_med))
        self.scale.assign(tf.cast(scale, tf.float32))
        return cross_entropy(scale * cosine, labels, self.label_smoothing)


class CurricularFace(Loss):
    """CurricularFace: ArcFace target (with the threshold fallback) and hard negatives
    ``cosθ_k > cos(θ_y + m)`` re-weighted to ``cosθ_k·(t + cosθ_k)``, where ``t`` is the
    running mean of the target cosine (momentum 0.01, updated before use)."""

    def __init__(self, scale=64.0, margin=0.5, momentum=0.01, label_smoothing=0.0):
        super().__init__(scale=scale, margin=margin, momentum=momentum, label_smoothing=label_smoothing)
        self.scale, self.margin = float(scale), float(margin)
        self.momentum, self.label_smoothing = float(momentum), float(label_smoothing)
        self.t = state_variable(0.0, "curricular_t")

    @property
    def state(self) -> list:
        return [self.t]

    def __call__(self, labels, cosine, norms=None) -> tf.Tensor:
        labels, cosine = flat_labels(labels), as_float(cosine)
        target = pick(cosine, labels)
        cos_m = tf.cos(tf.acos(tf.clip_by_value(target, -1.0 + EPS, 1.0 - EPS)) + self.margin)
        final_target = margin_target(target, 1.0, self.margin, 0.0)
        batch_mean = tf.reduce_mean(replica_concat(tf.stop_gradient(target)))
        t = self.momentum * batch_mean + (1.0 - self.momentum) * tf.cast(self.t, cosine.dtype)
        self.t.assign(tf.cast(t, tf.float32))
        hard = cosine > tf.stop_gradient(cos_m)[:, None]
        logits = tf.where(hard, cosine * (t + cosine), cosine)
        return cross_entropy(self.scale * replace_target(logits, labels, final_target), labels,
                             self.label_smoothing)


class MagFace(Loss):
    """MagFace: ArcFace with margin ``m(a)`` linear in the clipped feature norm
    ``a ∈ [l_a, u_a]`` (from ``l_m`` to ``u_m``) plus ``λ_g·g(a)``, ``g(a) = a/u_a² + 1/a``."""

    needs_norms = True

    def __init__(self, scale=64.0, l_a=10.0, u_a=110.0, l_m=0.45, u_m=0.8, lambda_g=35.0,
                 easy_margin=False, label_smoothing=0.0):
        if not 0 < l_a < u_a:
            raise ValueError(f"magface needs 0 < l_a < u_a (got {l_a}, {u_a})")
        super().__init__(scale=scale, l_a=l_a, u_a=u_a, l_m=l_m, u_m=u_m, lambda_g=lambda_g,
                         easy_margin=easy_margin, label_smoothing=label_smoothing)
        self.scale, self.l_a, self.u_a = float(scale), float(l_a), float(u_a)
        self.l_m, self.u_m, self.lambda_g = float(l_m), float(u_m), float(lambda_g)
        self.easy_margin, self.label_smoothing = bool(easy_margin), float(label_smoothing)

    def __call__(self, labels, cosine, norms=None) -> tf.Tensor:
        if norms is None:
            raise ValueError("magface needs the embedding norms (norms=...)")
        labels, cosine = flat_labels(labels), as_float(cosine)
        a = tf.clip_by_value(tf.reshape(tf.cast(norms, cosine.dtype), [-1]), self.l_a, self.u_a)
        margin = (self.u_m - self.l_m) / (self.u_a - self.l_a) * (a - self.l_a) + self.l_m
        target = margin_target(pick(cosine, labels), 1.0, margin, 0.0, self.easy_margin)
        ce = cross_entropy(self.scale * replace_target(cosine, labels, target), labels,
                           self.label_smoothing)
        return ce + self.lambda_g * (a / self.u_a ** 2 + 1.0 / a)


class AdaFace(Loss):
    """AdaFace: the norm, standardised by running batch statistics (momentum ``t_alpha``),
    ``ŝ = clip(h·(‖z‖ − μ)/(σ + ε), −1, 1)`` sets an angular margin ``−m·ŝ`` and an
    additive margin ``m + m·ŝ``: ``cos(clip(θ − m·ŝ, ε, π − ε)) − (m + m·ŝ)``."""

    needs_norms = True

    def __init__(self, scale=64.0, margin=0.4, h=0.333, t_alpha=0.01, eps=1e-3, label_smoothing=0.0):
        super().__init__(scale=scale, margin=margin, h=h, t_alpha=t_alpha, eps=eps,
                         label_smoothing=label_smoothing)
        self.scale, self.margin, self.h = float(scale), float(margin), float(h)
        self.t_alpha, self.eps, self.label_smoothing = float(t_alpha), float(eps), float(label_smoothing)
        self.batch_mean = state_variable(20.0, "adaface_batch_mean")
        self.batch_std = state_variable(100.0, "adaface_batch_std")

    @property
    def state(self) -> list:
        return [self.batch_mean, self.batch_std]

    def __call__(self, labels, cosine, norms=None) -> tf.Tensor:
        if norms is None:
            raise ValueError("adaface needs the embedding norms (norms=...)")
        labels, cosine = flat_labels(labels), as_float(cosine)
        dtype = cosine.dtype
        safe = tf.stop_gradient(tf.clip_by_value(tf.reshape(tf.cast(norms, dtype), [-1]), 0.001, 100.0))
        every = replica_concat(safe)
        count = tf.cast(tf.size(every), dtype)
        mean = tf.reduce_mean(every)
        std = tf.sqrt(tf.reduce_sum(tf.square(every - mean)) / tf.maximum(count - 1.0, 1.0))  # unbiased
        mean = self.t_alpha * mean + (1.0 - self.t_alpha) * tf.cast(self.batch_mean, dtype)
        std = self.t_alpha * std + (1.0 - self.t_alpha) * tf.cast(self.batch_std, dtype)
        self.batch_mean.assign(tf.cast(mean, tf.float32))
        self.batch_std.assign(tf.cast(std, tf.float32))
        scaler = tf.clip_by_value((safe - mean) / (std + self.eps) * self.h, -1.0, 1.0)
        clipped = tf.clip_by_value(cosine, -1.0 + self.eps, 1.0 - self.eps)
        theta = tf.acos(pick(clipped, labels))
        theta = tf.clip_by_value(theta - self.margin * scaler, self.eps, math.pi - self.eps)
        target = tf.cos(theta) - (self.margin + self.margin * scaler)
        return cross_entropy(self.scale * replace_target(clipped, labels, target), labels,
                             self.label_smoothing)
