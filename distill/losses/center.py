"""Center loss (Wen et al., 2016): ``½‖x_i − c_{y_i}‖²`` with class centres kept as
non-trainable state and moved towards their samples after each batch:
``c_j ← c_j − α · Σ_{i: y_i=j} (c_j − x_i) / (1 + n_j)``.

Under a ``tf.distribute`` strategy the labels and embeddings of all replicas are
gathered, so the update uses the global batch and is identical on every replica.
"""
from __future__ import annotations

import tensorflow as tf

from distill.losses.base import Loss, as_float, flat_labels, replica_concat, state_variable


class CenterLoss(Loss):
    """``alpha``: centre learning rate; ``normalize``: use L2-normalised embeddings."""

    kind = "metric"

    def __init__(self, alpha=0.5, normalize=True, num_classes=None, embedding_dim=None):
        if not 0 <= alpha <= 1:
            raise ValueError(f"center loss alpha must be in [0, 1] (got {alpha})")
        super().__init__(alpha=alpha, normalize=normalize, num_classes=num_classes,
                         embedding_dim=embedding_dim)
        self.alpha, self.normalize = float(alpha), bool(normalize)
        self.centers = None
        if num_classes and embedding_dim:
            self.build(num_classes=num_classes, embedding_dim=embedding_dim)

    def build(self, num_classes=None, embedding_dim=None, **_) -> None:
        """Create the [num_classes, embedding_dim] centres (zeros); idempotent."""
        if self.centers is None and num_classes and embedding_dim:
            self.centers = state_variable(tf.zeros([int(num_classes), int(embedding_dim)]), "centers")

    @property
    def state(self) -> list:
        return [] if self.centers is None else [self.centers]

    def __call__(self, labels, embeddings) -> tf.Tensor:
        if self.centers is None:
            raise ValueError("center loss: call build(num_classes=..., embedding_dim=...) first "
                             "or pass num_classes and embedding_dim")
        labels, x = flat_labels(labels), as_float(embeddings)
        if self.normalize:
            x = tf.math.l2_normalize(x, axis=1)
        centers = tf.cast(tf.convert_to_tensor(self.centers), x.dtype)
        loss = 0.5 * tf.reduce_sum(tf.square(x - tf.gather(centers, labels)), axis=1)
        self._update(replica_concat(labels), replica_concat(tf.stop_gradient(x)), centers)
        return loss

    def _update(self, labels, x, centers) -> None:
        classes, index = tf.unique(labels)
        n = tf.size(classes)
        diff = tf.math.unsorted_segment_sum(tf.gather(centers, labels) - x, index, n)
        count = tf.math.unsorted_segment_sum(tf.ones_like(x[:, 0]), index, n)
        delta = self.alpha * diff / (1.0 + count[:, None])
        self.centers.scatter_sub(tf.IndexedSlices(tf.cast(delta, tf.float32), classes))
