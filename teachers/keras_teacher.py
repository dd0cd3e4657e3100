"""Keras teachers: ``.keras`` and ``.h5`` files and TensorFlow SavedModel folders."""
from __future__ import annotations

from pathlib import Path

from distill.utils import sha256_path
from teachers.base import Preprocess, Teacher, TeacherError


def load_keras_model(path):
    """Load a Keras model from ``.keras``/``.h5`` or a SavedModel folder; clear error otherwise."""
    import keras

    path = Path(path)
    if not path.exists():
        raise TeacherError(f"{path}: teacher model file does not exist")
    try:
        if path.is_dir():
            if not (path / "saved_model.pb").exists():
                raise TeacherError(f"{path}: folder is not a SavedModel (no saved_model.pb)")
            return keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
        return keras.models.load_model(str(path), compile=False)
    except TeacherError:
        raise
    except Exception as exc:  # Keras raises many types for "not a model"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TeacherError(f"{path}: not a loadable Keras model ({first[:200]})") from None


class KerasTeacher(Teacher):
    """A Keras model (or SavedModel) run as a compiled TF function on uint8 batches."""

    kind = "keras"
    graph_compatible = True

    def __init__(self, path, preprocess: Preprocess | None = None):
        import tensorflow as tf

        self.model = load_keras_model(path)
        preprocess = preprocess or Preprocess()
        probe = self._forward(preprocess.apply(tf.zeros((1, 112, 112, 3), tf.uint8)))
        if len(probe.shape) != 2:
            raise TeacherError(f"{path}: teacher output must be [batch, dim], got shape {tuple(probe.shape)}")
        super().__init__(str(path), sha256_path(path), preprocess, int(probe.shape[-1]))
        self._embed = tf.function(self._embed_graph, reduce_retracing=True)

    def _forward(self, x):
        out = self.model(x, training=False)
        if isinstance(out, dict):  # SavedModel signatures return a dict of outputs
            out = next(iter(out.values()))
        if isinstance(out, (list, tuple)):
            out = out[0]
        return out

    def _embed_graph(self, images):
        import tensorflow as tf

        return tf.cast(self._forward(self.preprocess.apply(images)), tf.float32)

    def embed(self, images):
        return self._embed(images)
