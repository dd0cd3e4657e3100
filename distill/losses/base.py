"""Shared pieces of the losses: the base class, dtype handling, cross-entropy and
replica-aware statistics (so loss state is identical on every replica of a
``tf.distribute`` strategy)."""
from __future__ import annotations

import tensorflow as tf


def as_float(x) -> tf.Tensor:
    """float32 tensor. Half precision and NumPy/Python input become float32; a float64
    *tensor* stays float64 (for float64 gradient checks)."""
    if isinstance(x, (tf.Tensor, tf.Variable)) and x.dtype == tf.float64:
        return x
    return tf.cast(tf.convert_to_tensor(x), tf.float32)


def flat_labels(labels) -> tf.Tensor:
    """Integer class ids of shape [B] (accepts [B] or [B, 1])."""
    return tf.reshape(tf.cast(labels, tf.int32), [-1])


def target_mask(labels, logits) -> tf.Tensor:
    """Boolean [B, C]: True at each sample's class."""
    return tf.cast(tf.one_hot(labels, tf.shape(logits)[-1], dtype=tf.int8), tf.bool)


def pick(logits, labels) -> tf.Tensor:
    """The target logit of each sample, [B]."""
    return tf.gather(logits, labels, axis=1, batch_dims=1)


def replace_target(logits, labels, target) -> tf.Tensor:
    """``logits`` with the target column of each row set to ``target`` [B]."""
    return tf.where(target_mask(labels, logits), target[:, None], logits)


def cross_entropy(logits, labels, label_smoothing: float = 0.0) -> tf.Tensor:
    """Per-sample softmax cross-entropy [B]; label smoothing as in Keras (ε spread over C)."""
    num_classes = tf.shape(logits)[-1]
    target = tf.one_hot(labels, num_classes, dtype=logits.dtype)
    if label_smoothing:
        target = target * (1.0 - label_smoothing) + label_smoothing / tf.cast(num_classes, logits.dtype)
    return tf.nn.softmax_cross_entropy_with_logits(target, logits)


def _replica_context():
    return tf.distribute.get_replica_context()  # None in cross-replica context


def replica_concat(x) -> tf.Tensor:
    """``x`` of every replica concatenated along axis 0 (identity without a strategy)."""
    context = _replica_context()
    return x if context is None or context.num_replicas_in_sync == 1 else context.all_gather(x, axis=0)


def replica_rows(batch) -> tf.Tensor:
    """Indices of this replica's ``batch`` rows in :func:`replica_concat`'s order."""
    context = _replica_context()
    rows = tf.range(batch)
    if context is None or context.num_replicas_in_sync == 1:
        return rows
    return rows + tf.cast(context.replica_id_in_sync_group, rows.dtype) * batch


def state_variable(value, name: str) -> tf.Variable:
    """Non-trainable loss state. Every replica computes the same update from globally
    reduced statistics, so the first replica's write is the value (ONLY_FIRST_REPLICA)."""
    with tf.init_scope():
        return tf.Variable(value, trainable=False, name=name, dtype=tf.float32,
                           synchronization=tf.VariableSynchronization.ON_WRITE,
                           aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


class Loss:
    """Base of all losses: ``kind``, state ``variables`` and ``trainable_variables``."""

    kind = "classification"
    needs_norms = False
    needs_labels = False    # distillation terms: True → called as loss(student, teacher, labels)

    def __init__(self, **params):
        self.params = dict(params)

    @property
    def variables(self) -> list:
        """Every variable the loss owns (state and trainable), for checkpoints."""
        return list(self.trainable_variables) + list(self.state)

    @property
    def trainable_variables(self) -> list:
        return []

    @property
    def state(self) -> list:
        """Non-trainable state variables."""
        return []

    def build(self, **dims) -> None:
        """Create shape-dependent variables early (no-op for stateless losses)."""
        return None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"
