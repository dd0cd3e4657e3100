"""The cosine classifier: L2-normalised embeddings times L2-normalised class weights."""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="distill")
class CosineClassifier(keras.layers.Layer):
    """Embeddings [B, D] → cosine logits [B, num_classes] in [-1, 1], always float32.

    ``kernel`` has shape [D, num_classes·sub_centers]; column ``c·K + k`` is sub-centre
    ``k`` of class ``c``, and a class's cosine is the max over its K sub-centres
    (Sub-center ArcFace). Computes in float32 even under a mixed-precision policy.
    """

    def __init__(self, num_classes, sub_centers=1, kernel_initializer="glorot_normal",
                 name="classifier", **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(name=name, **kwargs)
        if int(num_classes) < 1 or int(sub_centers) < 1:
            raise ValueError(f"num_classes and sub_centers must be >= 1 (got {num_classes}, {sub_centers})")
        self.num_classes, self.sub_centers = int(num_classes), int(sub_centers)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel", shape=(int(input_shape[-1]), self.num_classes * self.sub_centers),
            initializer=self.kernel_initializer, trainable=True, dtype="float32")

    def call(self, embeddings, classes=None):
        """Cosines to every class, or with ``classes`` (int [S]) to those classes only, in that
        order (Partial FC: only their columns are read and normalised)."""
        x = ops.cast(embeddings, "float32")
        x = x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), 1e-24))
        kernel, shape = self.kernel, (-1, self.num_classes, self.sub_centers)
        if classes is not None:
            columns = ops.reshape(ops.expand_dims(ops.cast(classes, "int32") * self.sub_centers, -1)
                                  + ops.arange(self.sub_centers, dtype="int32"), (-1,))
            kernel, shape = ops.take(self.kernel, columns, axis=1), (ops.shape(x)[0], -1, self.sub_centers)
        w = kernel * ops.rsqrt(ops.maximum(ops.sum(ops.square(kernel), axis=0, keepdims=True), 1e-24))
        cosine = ops.clip(ops.matmul(x, w), -1.0, 1.0)
        if self.sub_centers > 1:
            cosine = ops.max(ops.reshape(cosine, shape), axis=-1)
        return cosine

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, sub_centers=self.sub_centers,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        config.pop("dtype", None)
        return config
