"""Student backbones: name → builder(input_shape, **params) → Keras model giving a feature map.

keras.applications models are built with ``weights=None`` (random init) and take the
project's normalised input, so their own preprocessing layers are turned off. Any backbone
can have its ReLUs swapped for PReLUs (``activation="prelu"``) as InsightFace models use.
"""
from __future__ import annotations

from distill.registry import Registry
from teachers.iresnet import IRESNET_LAYERS

BACKBONES = Registry("backbone", skip=("input_shape",))
register_backbone = BACKBONES.register


@register_backbone("mobilenet")
def mobilenet_v1(input_shape=(112, 112, 3), alpha: float = 1.0):
    """keras.applications MobileNet (v1), no top: 112×112 → 3×3×(1024·alpha)."""
    import keras

    return keras.applications.MobileNet(input_shape=input_shape, alpha=alpha, include_top=False,
                                        weights=None)


@register_backbone("mobilenet_v2")
def mobilenet_v2(input_shape=(112, 112, 3), alpha: float = 1.0):
    """keras.applications MobileNetV2, no top: 112×112 → 4×4×1280."""
    import keras

    return keras.applications.MobileNetV2(input_shape=input_shape, alpha=alpha, include_top=False,
                                          weights=None)


@register_backbone("mobilenet_v3_small")
def mobilenet_v3_small(input_shape=(112, 112, 3), alpha: float = 1.0):
    import keras

    return keras.applications.MobileNetV3Small(input_shape=input_shape, alpha=alpha,
                                               include_top=False, weights=None,
                                               include_preprocessing=False)


@register_backbone("mobilenet_v3_large")
def mobilenet_v3_large(input_shape=(112, 112, 3), alpha: float = 1.0):
    import keras

    return keras.applications.MobileNetV3Large(input_shape=input_shape, alpha=alpha,
                                               include_top=False, weights=None,
                                               include_preprocessing=False)


def relu_to_prelu(model):
    """A copy of ``model`` with every ReLU (layer or activation) replaced by a channel PReLU."""
    import keras

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.ReLU) or (
                isinstance(layer, keras.layers.Activation) and config.get("activation") == "relu"):
            return keras.layers.PReLU(shared_axes=[1, 2], name=layer.name + "_prelu")
        return layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=clone)


def build_backbone(name: str, input_shape=(112, 112, 3), activation: str = "relu", **params):
    model = BACKBONES.build(name, input_shape=input_shape, place="model.backbone", **params)
    if activation == "prelu":
        return relu_to_prelu(model)
    if activation != "relu":
        raise ValueError(f"model.activation must be 'relu' or 'prelu', got {activation!r}")
    return model


# registered lazily: their modules are imported when one is built (no import cycle)
register_backbone("mobilefacenet", "distill.models.mobilefacenet:mobilefacenet")
register_backbone("mobilefacenet_se", "distill.models.mobilefacenet:mobilefacenet_se")
for _depth in IRESNET_LAYERS:   # the one IResNet, shared with the teachers (teachers/iresnet.py)
    register_backbone(f"iresnet{_depth}", "teachers.iresnet:iresnet", preset={"depth": _depth})
