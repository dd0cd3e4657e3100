"""Plugin teachers: any Python callable, named ``package.module:function``.

The function returns embeddings ``[B, D]`` (NumPy, or a PyTorch/TF tensor) for a batch, so a
PyTorch model or any other library can teach. It declares what it takes as the attribute
``distill_input`` (see ``teachers/dlib_resnet.py``):

- ``"uint8"`` (the default when undeclared): the raw NumPy uint8 RGB NHWC batch
  ``[B, 112, 112, 3]``; the plugin does its own preprocessing and the manifest records
  ``Preprocess(mean=0, std=1)``. Preprocessing flags are refused: they cannot apply.
- ``"normalized"``: ``preprocess.apply_numpy(batch)`` (float32), by default the project's
  ``(x − 127.5) / 128`` RGB NHWC, or the :class:`Preprocess` given (``--mean --std --bgr --nchw``).

No flag changes silently what a plugin receives. Load heavy models once (module level or a
cached loader), not in every call. The recorded sha256 covers the spec and the module's source.
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import os
from pathlib import Path

import numpy as np

from distill.data.preprocess import INPUT_SIZE
from teachers.base import Preprocess, Teacher, TeacherError

#: what the manifest records when the plugin gets raw uint8 pixels.
RAW_PIXELS = Preprocess(mean=0.0, std=1.0)
#: what a plugin function may declare as its ``distill_input``
INPUTS = ("uint8", "normalized")


def is_plugin_spec(spec: str) -> bool:
    """``module:function`` with no path separator, and not an existing file."""
    module, sep, attr = spec.partition(":")
    return bool(sep and module and attr and "/" not in spec and os.sep not in spec
                and not Path(spec).exists())


def resolve(spec: str):
    """Import ``package.module`` and return ``function`` (dotted attributes allowed)."""
    module_name, _, attr = spec.partition(":")
    try:
        target = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or any error raised while importing the plugin
        raise TeacherError(f"{spec}: cannot import module {module_name!r} "
                           f"({type(exc).__name__}: {exc})") from None
    module = target
    for part in attr.split("."):
        if not hasattr(target, part):
            raise TeacherError(f"{spec}: module {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise TeacherError(f"{spec}: {attr!r} is not callable")
    return module, target


def _sha256(spec: str, module) -> str:
    digest = hashlib.sha256(spec.encode())
    try:
        source = inspect.getsourcefile(module)
    except TypeError:  # built-in or namespace module
        source = None
    if source and os.path.isfile(source):
        digest.update(Path(source).read_bytes())
    return digest.hexdigest()


def to_numpy(out) -> np.ndarray:
    """A NumPy array from NumPy, PyTorch (any device, with grad) or TF outputs."""
    if hasattr(out, "detach"):  # torch.Tensor
        out = out.detach().cpu()
    if hasattr(out, "numpy"):
        out = out.numpy()
    return np.asarray(out, dtype=np.float32)


class PluginTeacher(Teacher):
    """A Python function as teacher (called on NumPy batches)."""

    kind = "plugin"
    graph_compatible = False

    def __init__(self, spec: str, preprocess: Preprocess | None = None):
        module, self.function = resolve(spec)
        declared = getattr(self.function, "distill_input", "uint8")
        if declared not in INPUTS:
            raise TeacherError(f"{spec}: distill_input must be one of {', '.join(INPUTS)}, got {declared!r}")
        if declared == "uint8" and preprocess is not None:
            how = ("declares distill_input = 'uint8'" if hasattr(self.function, "distill_input")
                   else "declares no distill_input, so it takes raw pixels")
            raise TeacherError(f"{spec}: this plugin {how}; preprocessing options (--mean/--std/"
                               "--bgr/--rgb/--nchw) cannot apply to it. Drop them, or declare "
                               "distill_input = 'normalized' on the function to receive normalised floats")
        self.raw = declared == "uint8"
        self.spec = spec
        preprocess = RAW_PIXELS if self.raw else (preprocess or Preprocess())
        dim = self._call(np.zeros((2,) + INPUT_SIZE + (3,), np.uint8), preprocess).shape[1]
        super().__init__(spec, _sha256(spec, module), preprocess, dim)

    def _call(self, images: np.ndarray, preprocess: Preprocess) -> np.ndarray:
        batch = images if self.raw else preprocess.apply_numpy(images)
        try:
            out = to_numpy(self.function(batch))
        except Exception as exc:
            raise TeacherError(f"{self.spec}: plugin failed on a batch of shape {batch.shape} "
                               f"({type(exc).__name__}: {exc})") from exc
        if out.ndim != 2 or len(out) != len(images):
            raise TeacherError(f"{self.spec}: plugin must return [batch, dim] for {len(images)} "
                               f"images, got shape {out.shape}")
        return out

    def embed(self, images):
        return self._call(np.asarray(images, dtype=np.uint8), self.preprocess)
