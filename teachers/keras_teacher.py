"""Keras teachers: ``.keras`` and ``.h5`` files and TensorFlow SavedModel folders."""
from __future__ import annotations

from pathlib import Path

from distill.utils import atomic_write_bytes, sha256_path
from teachers.base import Preprocess, Teacher, TeacherError, raw_pixels


def load_keras_model(path):
    """Load a Keras model from ``.keras``/``.h5`` or a SavedModel folder; clear error otherwise."""
    import keras

    path = Path(path)
    if not path.exists():
        raise TeacherError(f"{path}: model file does not exist")
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


def save_keras_file(model, out) -> None:
    """Write ``model`` to ``out`` (.keras) atomically: Keras writes by name into a temporary
    folder, and the finished file moves in whole (a converter never leaves half a model)."""
    import tempfile

    out = Path(out)
    with tempfile.TemporaryDirectory() as folder:
        model.save(Path(folder) / out.name)
        atomic_write_bytes(out, (Path(folder) / out.name).read_bytes())


def takes_uint8(path, model=None) -> bool:
    """Whether the model takes uint8 images (normalisation inside): a SavedModel's
    ``serving_default`` signature (as ``distill export`` writes them), or a Keras model's input
    dtype (as ``distill convert mxnet2keras`` writes a graph that normalises raw pixels)."""
    import tensorflow as tf

    path = Path(path)
    if not path.is_dir():
        inputs = getattr(model, "inputs", None) or []
        return len(inputs) == 1 and str(getattr(inputs[0], "dtype", "")) == "uint8"
    signature = tf.saved_model.load(str(path)).signatures.get("serving_default")
    specs = list(signature.structured_input_signature[1].values()) if signature is not None else []
    return len(specs) == 1 and specs[0].dtype == tf.uint8


class KerasTeacher(Teacher):
    """A Keras model (or SavedModel) run as a compiled TF function on uint8 batches."""

    kind = "keras"
    graph_compatible = True

    def __init__(self, path, preprocess: Preprocess | None = None, devices=None, threads=None,
                 build=None, sha256: str | None = None):
        """``devices``: replicas to spread each batch over (default: every visible GPU when
        there are several — tf.distribute.MirroredStrategy; else the default device).
        ``build``: a function returning the Keras model (e.g. converted from ``path``), called
        under the replicas' scope instead of loading ``path``; ``sha256``: ``path``'s hash."""
        import tensorflow as tf

        if devices is None:
            gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
            devices = gpus if len(gpus) > 1 else None
        self.strategy = tf.distribute.MirroredStrategy(devices) if devices and len(devices) > 1 else None
        build = build or (lambda: load_keras_model(path))
        if self.strategy is not None:
            with self.strategy.scope():
                self.model = build()
        else:
            self.model = build()
        self.raw = takes_uint8(path, self.model)
        if self.raw:
            preprocess = raw_pixels(str(path), preprocess, why="its input is uint8: it normalises pixels itself")
        preprocess = preprocess or Preprocess()
        self.preprocess = preprocess
        probe = self._forward(self._model_input(tf.zeros((1, 112, 112, 3), tf.uint8)))
        if len(probe.shape) != 2:
            raise TeacherError(f"{path}: teacher output must be [batch, dim], got shape {tuple(probe.shape)}")
        super().__init__(str(path), sha256 or sha256_path(path), preprocess, int(probe.shape[-1]))
        # one trace for every batch size (a new trace of a big teacher costs seconds)
        self._embed = tf.function(self._embed_graph,
                                  input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])

    def _model_input(self, images):
        import tensorflow as tf

        x = self.preprocess.apply(images)
        return tf.cast(x, tf.uint8) if self.raw else x

    def _forward(self, x):
        out = self.model(x, training=False)
        if isinstance(out, dict):  # SavedModel signatures return a dict of outputs
            out = next(iter(out.values()))
        if isinstance(out, (list, tuple)):
            out = out[0]
        return out

    def _embed_graph(self, images):
        import tensorflow as tf

        return tf.cast(self._forward(self._model_input(images)), tf.float32)

    def embed(self, images):
        if self.strategy is None:
            return self._embed(images)
        import numpy as np
        import tensorflow as tf

        images = tf.convert_to_tensor(images)
        replicas = self.strategy.num_replicas_in_sync
        sizes = [len(part) for part in np.array_split(np.arange(int(images.shape[0])), replicas)]
        parts = tf.split(images, sizes, axis=0)
        values = self.strategy.experimental_distribute_values_from_function(
            lambda context: parts[context.replica_id_in_sync_group])
        if not hasattr(self, "_replicated"):
            self._replicated = tf.function(
                lambda per_replica: self.strategy.run(self._embed_graph, args=(per_replica,)))
        outputs = self._replicated(values)
        return tf.concat(self.strategy.experimental_local_results(outputs), axis=0)
