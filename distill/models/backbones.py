"""Student backbones: name → builder(input_shape, **params) → Keras model giving a feature map.

Builders take ``alpha`` (width multiplier) and ignore nothing silently: unknown params
raise. More backbones (MobileNet v2/v3, MobileFaceNet, IResNet) register here.
"""
from __future__ import annotations

from typing import Callable

BACKBONES: dict[str, Callable] = {}


def register_backbone(name: str):
    def decorate(builder):
        BACKBONES[name] = builder
        return builder

    return decorate


@register_backbone("mobilenet")
def mobilenet_v1(input_shape=(112, 112, 3), alpha: float = 1.0):
    """keras.applications MobileNet (v1), random init, no top: 112×112 → 3×3×(1024·alpha)."""
    import keras

    return keras.applications.MobileNet(
        input_shape=input_shape, alpha=alpha, include_top=False, weights=None
    )


def build_backbone(name: str, input_shape=(112, 112, 3), **params):
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name](input_shape=input_shape, **params)
