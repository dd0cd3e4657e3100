"""Teachers: architectures (IResNet) and loaders that turn any teacher into one callable.

``load_teacher(spec)`` picks a loader from ``TEACHER_LOADERS`` (first whose predicate
accepts the spec) and returns a :class:`teachers.base.Teacher`: uint8 batch → embeddings.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from teachers.base import Preprocess, Teacher, TeacherError


def _keras_loader(spec, preprocess):
    from teachers.keras_teacher import KerasTeacher

    return KerasTeacher(spec, preprocess)


def _is_keras(spec: str) -> bool:
    path = Path(spec)
    return path.suffix.lower() in (".keras", ".h5", ".hdf5") or path.is_dir()


def _onnx_loader(spec, preprocess):
    from teachers.onnx_teacher import OnnxTeacher

    return OnnxTeacher(spec, preprocess)


def _tflite_loader(spec, preprocess):
    from teachers.tflite_teacher import TFLiteTeacher

    return TFLiteTeacher(spec, preprocess)


def _plugin_loader(spec, preprocess):
    from teachers.plugin_teacher import PluginTeacher

    return PluginTeacher(spec, preprocess)


def _is_plugin(spec: str) -> bool:
    from teachers.plugin_teacher import is_plugin_spec

    return is_plugin_spec(spec)


#: name → (predicate on the spec string, loader(spec, preprocess) → Teacher).
TEACHER_LOADERS: dict[str, tuple[Callable[[str], bool], Callable]] = {
    "onnx": (lambda spec: Path(spec).suffix.lower() == ".onnx", _onnx_loader),
    "tflite": (lambda spec: Path(spec).suffix.lower() == ".tflite", _tflite_loader),
    "plugin": (_is_plugin, _plugin_loader),
    "keras": (_is_keras, _keras_loader),
}


def register_loader(name: str, predicate: Callable[[str], bool], loader: Callable) -> None:
    """Add a teacher kind (ONNX, TFLite, Python plugin, ...) ahead of the Keras fallback."""
    items = [(name, (predicate, loader))] + [(k, v) for k, v in TEACHER_LOADERS.items() if k != name]
    TEACHER_LOADERS.clear()
    TEACHER_LOADERS.update(items)


def load_teacher(spec, preprocess: Preprocess | None = None) -> Teacher:
    """Load a teacher from a file/folder path (or plugin spec) with optional preprocessing."""
    spec = str(spec)
    for predicate, loader in TEACHER_LOADERS.values():
        if predicate(spec):
            return loader(spec, preprocess)
    if not Path(spec).exists():
        raise TeacherError(f"{spec}: teacher model file does not exist")
    raise TeacherError(f"{spec}: unknown teacher format (known: {', '.join(TEACHER_LOADERS)})")


__all__ = ["Preprocess", "Teacher", "TeacherError", "load_teacher", "register_loader", "TEACHER_LOADERS"]
