"""A two-layer conv backbone for the replication tests, registered as ``tiny_cnn``.

Deep BN networks at initialisation amplify float32 rounding in the backward pass (MobileNet
α 0.25 at batch 10: reversing the rows of one batch on one device moves its gradient by 2 %,
up to 9 % per layer), so a replicated run of one can only be compared with a one-device run at
the first step. This backbone keeps the rounding at 1e-4, so N replicas can be held to the
one-device weights over many steps. Import it (in a worker process too) before building a recipe.
"""
from __future__ import annotations

from distill.models.backbones import register_backbone


def tiny_cnn(input_shape=(112, 112, 3)):
    """conv 5×5/4 → BN → ReLU → conv 3×3/4 → BN → ReLU: 112×112 → 7×7×16."""
    import keras

    inputs = keras.Input(input_shape)
    x = inputs
    for filters, kernel in ((8, 5), (16, 3)):
        x = keras.layers.Conv2D(filters, kernel, strides=4, use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
    return keras.Model(inputs, x, name="tiny_cnn")


register_backbone("tiny_cnn", tiny_cnn)   # registering again (a second import) replaces it
