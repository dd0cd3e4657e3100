"""Output layers (InsightFace naming) turning a feature map into the embedding.

* ``E``   – BN → dropout → flatten → dense → BN (InsightFace's default for ArcFace).
* ``F``   – BN → dropout → flatten → dense → BN without the dense bias.
* ``GAP`` – BN → global average pooling → dropout → dense → BN.
* ``GDC`` – global depthwise conv (kernel = feature map size) → BN → dropout → flatten →
  dense → BN (MobileFaceNet's global depthwise convolution).
"""
from __future__ import annotations

from distill.registry import Registry

OUTPUT_LAYERS = Registry("output layer", skip=("x", "embedding_size"))
register_output_layer = OUTPUT_LAYERS.register


def _bn(name, momentum, epsilon):
    import keras

    return keras.layers.BatchNormalization(momentum=momentum, epsilon=epsilon, name=name)


def _dense_bn(x, embedding_size, momentum, epsilon, use_bias=True):
    import keras

    x = keras.layers.Dense(embedding_size, use_bias=use_bias, name="embedding_dense")(x)
    return _bn("embedding_bn", momentum, epsilon)(x)


@register_output_layer("E")
def output_e(x, embedding_size, dropout=0.0, bn_momentum=0.9, bn_epsilon=2e-5):
    import keras

    x = _bn("features_bn", bn_momentum, bn_epsilon)(x)
    x = keras.layers.Dropout(dropout, name="features_dropout")(x)
    x = keras.layers.Flatten(name="features_flatten")(x)
    return _dense_bn(x, embedding_size, bn_momentum, bn_epsilon)


@register_output_layer("F")
def output_f(x, embedding_size, dropout=0.0, bn_momentum=0.9, bn_epsilon=2e-5):
    import keras

    x = _bn("features_bn", bn_momentum, bn_epsilon)(x)
    x = keras.layers.Dropout(dropout, name="features_dropout")(x)
    x = keras.layers.Flatten(name="features_flatten")(x)
    return _dense_bn(x, embedding_size, bn_momentum, bn_epsilon, use_bias=False)


@register_output_layer("GAP")
def output_gap(x, embedding_size, dropout=0.0, bn_momentum=0.9, bn_epsilon=2e-5):
    import keras

    x = _bn("features_bn", bn_momentum, bn_epsilon)(x)
    x = keras.layers.GlobalAveragePooling2D(name="features_pool")(x)
    x = keras.layers.Dropout(dropout, name="features_dropout")(x)
    return _dense_bn(x, embedding_size, bn_momentum, bn_epsilon)


@register_output_layer("GDC")
def output_gdc(x, embedding_size, dropout=0.0, bn_momentum=0.9, bn_epsilon=2e-5):
    import keras

    height, width = int(x.shape[1]), int(x.shape[2])
    x = keras.layers.DepthwiseConv2D((height, width), padding="valid", use_bias=False,
                                     name="features_gdc")(x)
    x = _bn("features_bn", bn_momentum, bn_epsilon)(x)
    x = keras.layers.Dropout(dropout, name="features_dropout")(x)
    x = keras.layers.Flatten(name="features_flatten")(x)
    return _dense_bn(x, embedding_size, bn_momentum, bn_epsilon)


def apply_output_layer(name: str, x, embedding_size: int, **params):
    return OUTPUT_LAYERS.builder(name, "model.output_layer")(x, embedding_size, **params)
