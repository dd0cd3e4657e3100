"""Teachers: architectures (IResNet) and loaders that turn any teacher into one callable.

``load_teacher(spec)`` picks a loader from ``TEACHER_LOADERS`` (first whose predicate
accepts the spec) and returns a :class:`teachers.base.Teacher`: uint8 batch → embeddings.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from distill.registry import Registry
from teachers.base import Preprocess, Teacher, TeacherError


def _keras_loader(spec, preprocess, threads=None):
    from teachers.keras_teacher import KerasTeacher

    return KerasTeacher(spec, preprocess)


def _is_keras(spec: str) -> bool:
    path = Path(spec)
    return path.suffix.lower() in (".keras", ".h5", ".hdf5") or path.is_dir()


def _onnx_loader(spec, preprocess, threads=None):
    from teachers.onnx_teacher import OnnxTeacher

    return OnnxTeacher(spec, preprocess, threads=threads)


def _tflite_loader(spec, preprocess, threads=None):
    from teachers.tflite_teacher import TFLiteTeacher

    return TFLiteTeacher(spec, preprocess, threads=threads)


def _pth_loader(spec, preprocess, threads=None):
    from teachers.pth_teacher import PthTeacher

    return PthTeacher(spec, preprocess)


def _mxnet_loader(spec, preprocess, threads=None):
    from teachers.mxnet_teacher import MXNetTeacher

    return MXNetTeacher(spec, preprocess)


def _is_mxnet(spec: str) -> bool:
    from teachers.mxnet_teacher import is_mxnet_spec

    return is_mxnet_spec(spec)


def _plugin_loader(spec, preprocess, threads=None):
    from teachers.plugin_teacher import PluginTeacher

    return PluginTeacher(spec, preprocess)


def _is_plugin(spec: str) -> bool:
    from teachers.plugin_teacher import is_plugin_spec

    return is_plugin_spec(spec)


#: name → loader(spec, preprocess) → Teacher, tried in order; ``accepts`` (a predicate on the
#: spec string) says which specs a loader takes.
TEACHER_LOADERS = Registry("teacher kind", error=TeacherError)
TEACHER_LOADERS.register("onnx", _onnx_loader, accepts=lambda spec: Path(spec).suffix.lower() == ".onnx")
TEACHER_LOADERS.register("tflite", _tflite_loader, accepts=lambda spec: Path(spec).suffix.lower() == ".tflite")
TEACHER_LOADERS.register("pth", _pth_loader, accepts=lambda spec: Path(spec).suffix.lower() in (".pth", ".pt"))
TEACHER_LOADERS.register("mxnet", _mxnet_loader, accepts=_is_mxnet)
TEACHER_LOADERS.register("plugin", _plugin_loader, accepts=_is_plugin)
TEACHER_LOADERS.register("keras", _keras_loader, accepts=_is_keras)


def register_loader(name: str, predicate: Callable[[str], bool], loader: Callable) -> None:
    """Add a teacher kind (ONNX, TFLite, Python plugin, ...) ahead of the Keras fallback."""
    TEACHER_LOADERS.register(name, loader, first=True, accepts=predicate)


def teacher_kind(spec) -> str | None:
    """The name of the first loader that accepts ``spec`` (None if none does)."""
    return next((e.name for e in TEACHER_LOADERS.entries() if e.info["accepts"](str(spec))), None)


def load_teacher(spec, preprocess: Preprocess | None = None, threads: int | None = None) -> Teacher:
    """Load any model file (or plugin spec) as the one runtime :class:`Teacher`: uint8 batch →
    embeddings, with optional preprocessing; ``threads`` limits CPU threads where the runtime
    allows it (ONNX, TFLite)."""
    spec = str(spec)
    kind = teacher_kind(spec)
    if kind is not None:
        return TEACHER_LOADERS.builder(kind)(spec, preprocess, threads=threads)
    if not Path(spec).exists():
        raise TeacherError(f"{spec}: model file does not exist")
    raise TeacherError(f"{spec}: not a model file this project can run (known kinds: "
                       f"{', '.join(TEACHER_LOADERS)}: .keras/.h5/SavedModel, .onnx, .tflite, .pth, "
                       "PREFIX-symbol.json/PREFIX-EPOCH.params, module:function)")


__all__ = ["Preprocess", "Teacher", "TeacherError", "load_teacher", "register_loader", "teacher_kind",
           "TEACHER_LOADERS"]
