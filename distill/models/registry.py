"""Build embedding models (backbone + output layer) from a model config."""
from __future__ import annotations

from distill.data.preprocess import INPUT_SIZE
from distill.models.backbones import build_backbone
from distill.models.heads import apply_output_layer


def build_embedding_model(backbone: str = "mobilenet", embedding_size: int = 128,
                          output_layer: str = "E", dropout: float = 0.0,
                          input_size=INPUT_SIZE, bn_momentum: float = 0.9,
                          bn_epsilon: float = 2e-5, name: str = "embedding_model",
                          **backbone_params):
    """Normalised float image ``[B, H, W, 3]`` → embedding ``[B, embedding_size]`` (not L2-normalised).

    Input is ``distill.data.preprocess.normalize(uint8 image)``; the classifier head is
    not part of this model, so a saved embedding model is deployable as it is.
    """
    import keras

    input_shape = (int(input_size[0]), int(input_size[1]), 3)
    inputs = keras.Input(shape=input_shape, name="image")
    body = build_backbone(backbone, input_shape=input_shape, **backbone_params)
    set_bn_momentum(body, bn_momentum)
    features = body(inputs)
    embedding = apply_output_layer(output_layer, features, embedding_size, dropout=dropout,
                                   bn_momentum=bn_momentum, bn_epsilon=bn_epsilon)
    return keras.Model(inputs, embedding, name=name)


def batch_norm_layers(model) -> list:
    import keras

    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, keras.layers.BatchNormalization)]


def set_bn_momentum(model, momentum: float) -> None:
    """Use one BN momentum everywhere (keras.applications default to 0.99; InsightFace uses 0.9,
    which also lets the moving statistics settle within a short run)."""
    for layer in batch_norm_layers(model):
        layer.momentum = momentum


def set_bn_synchronized(model, synchronized: bool = True) -> None:
    """Cross-replica BN statistics under tf.distribute (then N replicas train like one device)."""
    for layer in batch_norm_layers(model):
        layer.synchronized = synchronized
