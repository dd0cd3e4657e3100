"""Partial FC (An et al., arXiv:2010.05222; arcface_torch's ``PartialFC``): each step the
classification terms see only the class centres of the batch's labels plus a random sample of
the others, ``S = max(⌈rate·C⌉, #positives)`` columns instead of ``C``.

``loss.sample_rate`` (0 < rate ≤ 1; 1 = the full classifier) in a recipe. The sample is a pure
function of ``(seed, step)`` and of the *global* batch's labels (gathered from every replica),
so all replicas of a ``tf.distribute`` strategy pick the same columns and a resumed run the
same samples. Every margin loss of this project works unchanged on the sampled cosines, with
labels renumbered to their column (−1 stays −1 for unlabelled samples).

Sharding: under ``MirroredStrategy``/``MultiWorkerMirroredStrategy`` every variable is mirrored
(each replica holds and updates the whole ``D × C`` matrix; neither strategy has a
replica-sharded variable; only ``ParameterServerStrategy`` and DTensor do), so the class
centres are *not* sharded across replicas here as in arcface_torch's model-parallel FC. What
sampling saves is the ``B × C`` logits and their softmax and backward, and the centres'
normalisation and matmul (``S·D`` instead of ``C·D``); the weights, their gradient (dense,
zero outside the sample) and the optimizer state stay ``C·D`` per replica (README "Scaling
out" gives the formulas and bench/bench_partial_fc.py the measured figures).
"""
from __future__ import annotations

import math

SAMPLE_RATE = "sample_rate"


def check_sample_rate(value) -> float:
    """``value`` as a float in (0, 1]; ValueError otherwise."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"must be a number in (0, 1] (1 = every class), got {value!r}")
    return float(value)


def num_sampled(num_classes: int, rate: float) -> int:
    """Columns sampled per step before positives are added: ``⌈rate·C⌉`` (at least 1)."""
    return max(1, min(num_classes, math.ceil(rate * num_classes)))


def sample_classes(labels, num_classes: int, num_sample: int, seed):
    """``(classes [S] int32 ascending, labels renumbered to positions in classes [B])``.

    Every label of the global batch is in ``classes`` (``S = max(num_sample, #positives)``);
    the rest are drawn uniformly without replacement with the stateless seed ``seed`` [2].
    Labels −1 (unlabelled) stay −1.
    """
    import tensorflow as tf

    from distill.losses.base import flat_labels, replica_concat

    labels = flat_labels(labels)
    every = replica_concat(labels)
    positive, _ = tf.unique(tf.boolean_mask(every, every >= 0))
    scores = tf.random.stateless_uniform([num_classes], seed=tf.cast(seed, tf.int64))
    scores = tf.tensor_scatter_nd_update(scores, positive[:, None], tf.fill(tf.shape(positive), 2.0))
    count = tf.maximum(tf.constant(num_sample, tf.int32), tf.size(positive))
    classes = tf.sort(tf.math.top_k(scores, k=count, sorted=False).indices)
    local = tf.searchsorted(classes, tf.maximum(labels, 0), out_type=tf.int32)
    return classes, tf.where(labels >= 0, local, -1)


def sampled_cosines(classifier, embeddings, labels, num_sample: int, seed):
    """``(cosines [B, S], renumbered labels [B])`` of a :class:`CosineClassifier` on sampled classes."""
    classes, local = sample_classes(labels, classifier.num_classes, num_sample, seed)
    return classifier(embeddings, classes=classes), local


def class_sample(labels, num_classes: int, rate: float = 1.0, seed=(0, 0)):
    """``(classes, labels as their columns)`` of a Partial FC sample, or ``(None, None)`` at
    ``rate`` 1 (every class, labels unchanged)."""
    if rate >= 1:
        return None, None
    return sample_classes(labels, num_classes, num_sampled(num_classes, rate), seed)
