"""IResNet (InsightFace's ArcFace backbones, ``arcface_torch/backbones/iresnet.py``) in Keras.

112×112×3 → conv3×3 (64) → BN → PReLU → four stages of IBasicBlocks with 64, 128, 256,
512 channels, each starting with stride 2 → a 7×7×512 feature map. IBasicBlock:
BN → conv3×3 → BN → PReLU → conv3×3 (stride) → BN, plus the shortcut (conv1×1/stride → BN
when the shape changes). The InsightFace output layer (BN → dropout → flatten → dense → BN)
is the project's output layer ``E`` and is not part of these models.

Strided 3×3 convolutions pad one pixel on each side as PyTorch does (Keras ``same`` pads
asymmetrically), BN epsilon is 1e-5 and PReLU slopes start at 0.25, so InsightFace weights
can be copied layer by layer (PyTorch OIHW kernels transposed to HWIO).
"""
from __future__ import annotations

#: depth → IBasicBlocks per stage.
IRESNET_LAYERS = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    200: (6, 26, 60, 6),
}
STAGE_CHANNELS = (64, 128, 256, 512)


def _bn(name, epsilon, momentum):
    import keras

    return keras.layers.BatchNormalization(epsilon=epsilon, momentum=momentum, name=name)


def _prelu(name):
    import keras

    return keras.layers.PReLU(alpha_initializer=keras.initializers.Constant(0.25),
                              shared_axes=[1, 2], name=name)


def _conv3x3(x, filters, stride, name):
    import keras

    if stride == 1:
        return keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=name)(x)
    x = keras.layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
    return keras.layers.Conv2D(filters, 3, strides=stride, padding="valid", use_bias=False, name=name)(x)


def ibasic_block(x, filters, stride, name, epsilon=1e-5, momentum=0.9):
    """One IBasicBlock (pre-BN residual unit with PReLU between the two convolutions)."""
    import keras

    shortcut = x
    y = _bn(f"{name}_bn1", epsilon, momentum)(x)
    y = _conv3x3(y, filters, 1, f"{name}_conv1")
    y = _bn(f"{name}_bn2", epsilon, momentum)(y)
    y = _prelu(f"{name}_prelu")(y)
    y = _conv3x3(y, filters, stride, f"{name}_conv2")
    y = _bn(f"{name}_bn3", epsilon, momentum)(y)
    if stride != 1 or int(x.shape[-1]) != filters:
        shortcut = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False,
                                       name=f"{name}_downsample_conv")(x)
        shortcut = _bn(f"{name}_downsample_bn", epsilon, momentum)(shortcut)
    return keras.layers.Add(name=f"{name}_add")([y, shortcut])


def iresnet(depth: int = 50, input_shape=(112, 112, 3), bn_epsilon: float = 1e-5,
            bn_momentum: float = 0.9, name: str | None = None, blocks=None, widths=None):
    """IResNet-``depth`` (18, 34, 50, 100 or 200) as a Keras model → 7×7×512 feature map.
    ``blocks`` (IBasicBlocks per stage) and ``widths`` (channels per stage; the stem has
    ``widths[0]``) replace the standard ones for other layouts (e.g. a tiny test model)."""
    import keras

    if blocks is None and depth not in IRESNET_LAYERS:
        raise ValueError(f"unknown IResNet depth {depth}; available: {', '.join(map(str, IRESNET_LAYERS))}")
    blocks = tuple(IRESNET_LAYERS[depth] if blocks is None else blocks)
    widths = tuple(STAGE_CHANNELS if widths is None else widths)
    if len(blocks) != 4 or len(widths) != 4 or min(blocks) < 1 or min(widths) < 1:
        raise ValueError(f"IResNet needs 4 stages of >= 1 block and >= 1 channel, got blocks {blocks}, widths {widths}")
    inputs = keras.Input(shape=input_shape, name="image")
    x = _conv3x3(inputs, widths[0], 1, "conv1")
    x = _bn("bn1", bn_epsilon, bn_momentum)(x)
    x = _prelu("prelu")(x)
    for stage, (count, filters) in enumerate(zip(blocks, widths), start=1):
        for block in range(count):
            x = ibasic_block(x, filters, 2 if block == 0 else 1, f"layer{stage}_{block}",
                             bn_epsilon, bn_momentum)
    return keras.Model(inputs, x, name=name or f"iresnet{depth}")
