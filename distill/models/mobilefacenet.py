"""MobileFaceNet (Chen et al., 2018, arXiv:1804.07573) and its squeeze-excitation variant.

112×112 → conv3×3/2 (64) → depthwise 3×3 (64) → bottlenecks (t, c, n, s) =
(2,64,5,2) (4,128,1,2) (2,128,6,1) (4,128,1,2) (2,128,2,1) → conv1×1 (512): a 7×7×512
feature map for the ``GDC`` output layer. PReLU everywhere but the linear projections.
"""
from __future__ import annotations

SETTINGS = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))


def _conv_bn(x, filters, kernel, stride, name, act=True, depthwise=False):
    import keras

    if depthwise:
        x = keras.layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{name}_dw")(x)
    else:
        x = keras.layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=1e-5, name=f"{name}_bn")(x)
    return keras.layers.PReLU(shared_axes=[1, 2], name=f"{name}_prelu")(x) if act else x


def _squeeze_excite(x, ratio, name):
    import keras

    channels = int(x.shape[-1])
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_pool")(x)
    s = keras.layers.Conv2D(max(channels // ratio, 8), 1, activation="relu", name=f"{name}_se_reduce")(s)
    s = keras.layers.Conv2D(channels, 1, activation="sigmoid", name=f"{name}_se_expand")(s)
    return keras.layers.Multiply(name=f"{name}_se")([x, s])


def _bottleneck(x, expansion, filters, stride, name, se):
    import keras

    inputs = x
    x = _conv_bn(x, int(x.shape[-1]) * expansion, 1, 1, f"{name}_expand")
    x = _conv_bn(x, None, 3, stride, f"{name}_depthwise", depthwise=True)
    x = _conv_bn(x, filters, 1, 1, f"{name}_project", act=False)
    if se:
        x = _squeeze_excite(x, 4, name)
    if stride == 1 and int(inputs.shape[-1]) == filters:
        x = keras.layers.Add(name=f"{name}_add")([inputs, x])
    return x


def _mobilefacenet(input_shape, alpha, se, name):
    import keras

    inputs = keras.Input(shape=input_shape)
    x = _conv_bn(inputs, int(64 * alpha), 3, 2, "conv1")
    x = _conv_bn(x, None, 3, 1, "conv2", depthwise=True)
    for stage, (t, c, n, s) in enumerate(SETTINGS):
        for i in range(n):
            x = _bottleneck(x, t, int(c * alpha), s if i == 0 else 1, f"block{stage}_{i}", se)
    x = _conv_bn(x, 512, 1, 1, "conv_last")
    return keras.Model(inputs, x, name=name)


def mobilefacenet(input_shape=(112, 112, 3), alpha: float = 1.0):
    return _mobilefacenet(input_shape, alpha, se=False, name="mobilefacenet")


def mobilefacenet_se(input_shape=(112, 112, 3), alpha: float = 1.0):
    return _mobilefacenet(input_shape, alpha, se=True, name="mobilefacenet_se")
