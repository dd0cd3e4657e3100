"""Softmax losses without an angular margin: plain, scaled (NormFace) and the power
margin on softmax probabilities of Keras_insightface."""
from __future__ import annotations

import math

import tensorflow as tf

from distill.losses.base import Loss, as_float, cross_entropy, flat_labels, pick, replace_target


class Softmax(Loss):
    """Cross-entropy on the logits as given (no scale)."""

    def __init__(self, label_smoothing=0.0):
        super().__init__(label_smoothing=label_smoothing)
        self.label_smoothing = float(label_smoothing)
        self.scale = 1.0

    def __call__(self, labels, cosine, norms=None) -> tf.Tensor:
        return cross_entropy(self.scale * as_float(cosine), flat_labels(labels), self.label_smoothing)


class ScaleSoftmax(Softmax):
    """NormFace: cross-entropy on ``s · cosθ``."""

    def __init__(self, scale=64.0, label_smoothing=0.0):
        super().__init__(label_smoothing=label_smoothing)
        self.params = {"scale": scale, "label_smoothing": label_smoothing}
        self.scale = float(scale)


class MarginSoftmax(Loss):
    """Power margin on the softmax *probability* of the target (Keras_insightface's
    ``margin_softmax``): ``p = softmax(s·cosθ)``, ``p_y ← (p_y^power + margin_scale·p_y) / 2``,
    then cross-entropy on the renormalised probabilities (Keras' ``from_logits=False``).
    Computed in log space for stability (Keras' probability clipping is not reproduced)."""

    def __init__(self, scale=64.0, power=2.0, margin_scale=0.4, label_smoothing=0.0):
        if power < 1 or margin_scale < 0:
            raise ValueError(f"margin_softmax needs power >= 1 and margin_scale >= 0 "
                             f"(got {power}, {margin_scale})")
        super().__init__(scale=scale, power=power, margin_scale=margin_scale,
                         label_smoothing=label_smoothing)
        self.scale, self.power = float(scale), float(power)
        self.margin_scale, self.label_smoothing = float(margin_scale), float(label_smoothing)

    def __call__(self, labels, cosine, norms=None) -> tf.Tensor:
        labels, cosine = flat_labels(labels), as_float(cosine)
        log_p = tf.nn.log_softmax(self.scale * cosine, axis=-1)
        log_target = pick(log_p, labels)
        # log((p^power + k·p) / 2) as a log-sum-exp, safe for tiny p
        terms = [self.power * log_target]
        if self.margin_scale > 0:
            terms.append(log_target + math.log(self.margin_scale))
        new_target = tf.reduce_logsumexp(tf.stack(terms), axis=0) - math.log(2.0)
        log_q = tf.nn.log_softmax(replace_target(log_p, labels, new_target), axis=-1)
        num_classes = tf.shape(cosine)[-1]
        smooth = tf.one_hot(labels, num_classes, dtype=cosine.dtype)
        if self.label_smoothing:
            smooth = smooth * (1 - self.label_smoothing) + self.label_smoothing / tf.cast(num_classes, cosine.dtype)
        return -tf.reduce_sum(smooth * log_q, axis=-1)
