"""InsightFace arcface_torch ``backbone.pth`` (IResNet r18–r200) as a Keras model, without torch.

arcface_torch's IResNet is the trunk of :mod:`teachers.iresnet` followed by ``bn2``
(BatchNorm2d) → flatten → dropout → ``fc`` (Linear C·7·7 → D) → ``features`` (BatchNorm1d).
The layout (blocks per stage, stage widths, embedding size) is read from the state dict's
shapes; every key must be used. Weights are copied layer by layer: conv kernels OIHW → HWIO,
PReLU slopes to Keras' ``(1, 1, C)``, and the ``fc`` columns permuted from torch's C,H,W
flatten order to Keras' H,W,C. fp16/bf16 weights are cast to float32. arcface_torch feeds
``(pixel/255 − 0.5)/0.5 = (pixel − 127.5)/127.5`` on RGB: :data:`PTH_PREPROCESS`.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from teachers.base import Preprocess, TeacherError
from teachers.keras_teacher import KerasTeacher, save_keras_file
from teachers.torch_checkpoint import read_state_dict

#: arcface_torch's input normalisation: ((x / 255) - 0.5) / 0.5 on RGB
PTH_PREPROCESS = Preprocess(mean=127.5, std=127.5, channel_order="RGB", layout="NHWC")
BN_EPSILON = 1e-5
_BN = ("weight", "bias", "running_mean", "running_var")


def infer_layout(state: dict, where: str) -> dict:
    """Blocks per stage, stage widths, embedding size and input size from the tensor shapes."""
    def shape(key, ndim):
        if key not in state:
            raise TeacherError(f"{where}: not an arcface_torch IResNet state dict (missing key {key!r})")
        if state[key].ndim != ndim:
            raise TeacherError(f"{where}: {key} has shape {state[key].shape}, a {ndim}-d tensor expected")
        return state[key].shape

    blocks, widths = [], []
    for stage in range(1, 5):
        found = {int(m.group(1)) for k in state if (m := re.match(rf"layer{stage}\.(\d+)\.", k))}
        count = len(found)
        if found != set(range(count)):
            missing = min(set(range(max(found, default=0) + 1)) - found, default=0)
            shape(f"layer{stage}.{missing}.conv1.weight", 4)       # names the first missing block
        widths.append(int(shape(f"layer{stage}.0.conv1.weight", 4)[0]))
        blocks.append(count)
    embedding, flat = (int(n) for n in shape("fc.weight", 2))
    side = int(round((flat / widths[-1]) ** 0.5))
    if side * side * widths[-1] != flat:
        raise TeacherError(f"{where}: fc.weight takes {flat} inputs, not {widths[-1]}·H·W of a square feature map")
    return {"blocks": tuple(blocks), "widths": tuple(widths), "embedding": embedding, "side": side,
            "input_size": side * 16}


def build_arcface_iresnet(layout: dict, input_scale: tuple | None = None):
    """The whole arcface_torch IResNet (trunk + bn2/flatten/dropout/fc/features) in Keras,
    eval-mode equivalent. ``input_scale`` = (scale, offset) maps the input first (Rescaling)."""
    import keras

    from teachers.iresnet import iresnet

    size = layout["input_size"]
    trunk = iresnet(input_shape=(size, size, 3), blocks=layout["blocks"], widths=layout["widths"],
                    bn_epsilon=BN_EPSILON)
    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.Rescaling(*input_scale, name="input_scale")(inputs) if input_scale else inputs
    x = trunk(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name="bn2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dropout(0.0, name="dropout")(x)
    x = keras.layers.Dense(layout["embedding"], name="fc")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name="features")(x)
    return keras.Model(inputs, x, name="arcface_iresnet")


def _torch_name(keras_name: str) -> str:
    """Keras layer name → torch module name (``layer1_0_downsample_conv`` → ``layer1.0.downsample.0``)."""
    name = re.sub(r"^(layer\d)_(\d+)_", r"\1.\2.", keras_name)
    return name.replace("downsample_conv", "downsample.0").replace("downsample_bn", "downsample.1")


def _weights(layer, prefix: str, take, side: int) -> list:
    """The Keras weights of ``layer`` from the torch tensors under ``prefix``."""
    kind = type(layer).__name__
    if kind == "Conv2D":
        return [take(f"{prefix}.weight").transpose(2, 3, 1, 0)]              # OIHW → HWIO
    if kind == "BatchNormalization":
        return [take(f"{prefix}.{p}") for p in _BN]
    if kind == "PReLU":
        return [take(f"{prefix}.weight").reshape(1, 1, -1)]
    if kind == "Dense":                                                      # columns C,H,W → H,W,C
        w = take(f"{prefix}.weight")
        w = w.reshape(len(w), -1, side, side).transpose(2, 3, 1, 0).reshape(-1, len(w))
        return [w, take(f"{prefix}.bias")]
    return []


def _leaves(model):
    import keras

    for layer in model.layers:
        yield from _leaves(layer) if isinstance(layer, keras.Model) else (layer,)


def keras_from_state_dict(state: dict, where: str, input_scale: tuple | None = None):
    """A Keras model holding the weights of an arcface_torch IResNet state dict; a key missing,
    unused or of the wrong shape is a one-line :class:`TeacherError` naming it."""
    layout = infer_layout(state, where)
    model = build_arcface_iresnet(layout, input_scale)
    used = set()

    def take(key):
        if key not in state:
            raise TeacherError(f"{where}: not an arcface_torch IResNet state dict (missing key {key!r})")
        used.add(key)
        return np.asarray(state[key], dtype=np.float32)

    for layer in _leaves(model):
        try:
            values = _weights(layer, _torch_name(layer.name), take, layout["side"])
        except TeacherError:
            raise
        except ValueError as exc:                    # a tensor that cannot be transposed/reshaped
            raise TeacherError(f"{where}: {_torch_name(layer.name)} has a wrong shape ({exc})") from None
        for value, variable in zip(values, layer.weights):
            if tuple(value.shape) != tuple(variable.shape):
                raise TeacherError(f"{where}: {_torch_name(layer.name)} has shape {value.shape}, "
                                   f"{tuple(variable.shape)} expected for this layout")
        if values:
            layer.set_weights(values)
    unused = sorted(k for k in state if k not in used and not k.endswith("num_batches_tracked"))
    if unused:
        raise TeacherError(f"{where}: not an arcface_torch IResNet state dict (unexpected key {unused[0]!r})")
    return model, layout


def pth_to_keras(pth, out) -> dict:
    """Write ``pth`` (arcface_torch ``backbone.pth``) atomically as a Keras model file ``out``
    that the Keras loader runs with the project's default input contract: a Rescaling layer inside turns
    ``(pixel − 127.5)/128`` into arcface_torch's ``(pixel − 127.5)/127.5``. Returns the layout."""
    out = Path(out)
    if out.suffix.lower() not in (".keras", ".h5"):
        raise TeacherError(f"{out}: the output must be a .keras (or .h5) file")
    ours, theirs = Preprocess(), PTH_PREPROCESS      # y = (x − m)/s  →  (x − M)/S = y·s/S + (m − M)/S
    scale = (ours.std / theirs.std, (ours.mean - theirs.mean) / theirs.std)
    model, layout = keras_from_state_dict(read_state_dict(pth), str(pth), input_scale=scale)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_keras_file(model, out)
    return layout


class PthTeacher(KerasTeacher):
    """An arcface_torch ``.pth`` state dict run as a Keras model (no torch)."""

    kind = "pth"

    def __init__(self, path, preprocess: Preprocess | None = None, devices=None, threads=None):
        state = read_state_dict(path)
        self.layout = infer_layout(state, str(path))
        super().__init__(path, preprocess or PTH_PREPROCESS, devices=devices,
                         build=lambda: keras_from_state_dict(state, str(path))[0])
