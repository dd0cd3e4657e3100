"""Export an embedding model for deployment, with the project's preprocessing built in.

Every exported model takes uint8 RGB images ``[B, H, W, 3]`` with ``(H, W)`` the model's input
size (112×112), or any size with ``resize=True`` (bilinear resize inside the model, half-pixel
centres, no antialiasing), applies :func:`distill.data.preprocess.normalize` and returns
L2-normalised float32 embeddings ``[B, D]``.

``EXPORTERS`` maps a format name to a function ``(serving, out, calibration)`` writing ``out``;
exported files are run by the project's one model runtime (``teachers.load_teacher``: TensorFlow,
the TFLite interpreter or onnxruntime, each fed the raw uint8 pixels the file declares).
:func:`export_model` exports, then checks parity against the Keras model and times it.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from distill.data.images import _first_line
from distill.data.preprocess import MEAN, STD, normalize
from distill.data.sources import IMAGE_EXTENSIONS
from distill.registry import Registry

EXPORTERS = Registry("export format", skip=("serving", "out", "calibration"))
DIRECTORY_FORMATS = {"savedmodel"}
CALIBRATED_FORMATS = {"tflite-int8"}
DEFAULT_PARITY_DIR = Path(__file__).resolve().parent / "demo_data" / "orl_faces"
METADATA_FILE = "distill_export.json"


class ExportError(ValueError):
    """Bad export input or a failed conversion; the message names the file and the problem."""


@dataclass
class ExportReport:
    """What :func:`export_model` wrote and how close it is to the Keras model."""

    format: str
    path: str
    size_bytes: int
    cosine_min: float
    cosine_mean: float
    latency_ms: float
    parity_images: int
    latency_runs: int

    def row(self) -> dict:
        """A table row: format, size, parity min/mean cosine, latency."""
        return {"format": self.format, "size": format_size(self.size_bytes),
                "cos min": f"{self.cosine_min:.5f}", "cos mean": f"{self.cosine_mean:.5f}",
                "latency ms": f"{self.latency_ms:.2f}"}

    def summary(self) -> str:
        return (f"{self.path}: {self.format}, {format_size(self.size_bytes)}; parity vs Keras on "
                f"{self.parity_images} images: cosine min {self.cosine_min:.5f}, mean "
                f"{self.cosine_mean:.5f}; latency {self.latency_ms:.2f} ms/image "
                f"(median of {self.latency_runs})")


def register_exporter(name: str):
    """Decorator: ``fn(serving, out, calibration, **options)`` writes format ``name`` to ``out``."""
    return EXPORTERS.register(name)





# --------------------------------------------------------------------------- serving graph
class Serving:
    """A Keras embedding model wrapped as ``uint8 images → L2-normalised embeddings``."""

    def __init__(self, model, resize: bool = False):
        import tensorflow as tf

        shape = tuple(model.input_shape)
        if len(shape) != 4 or shape[-1] != 3 or None in shape[1:3]:
            raise ExportError(f"model input must be [batch, height, width, 3], got {shape}")
        self.model, self.resize = model, bool(resize)
        # a model whose input is uint8 normalises pixels itself (a converted MXNet graph)
        self.raw = str(getattr(model.inputs[0], "dtype", "")) == "uint8"
        self.size = (int(shape[1]), int(shape[2]))
        spec_shape = [None, None, None, 3] if resize else [None, *self.size, 3]
        self.input_signature = [tf.TensorSpec(spec_shape, tf.uint8, name="image")]
        self.module = tf.Module(name="distill_export")
        self.module.model = model
        self.module.serve = tf.function(self._serve, input_signature=self.input_signature)

    def _embed(self, image):
        """uint8 → (resize) → normalise → raw Keras embedding, as TF ops."""
        import tensorflow as tf

        pixels = tf.cast(image, tf.float32)
        if self.resize:
            pixels = tf.image.resize(pixels, self.size, method="bilinear")
        if self.raw:
            pixels = image if not self.resize else tf.cast(tf.clip_by_value(tf.round(pixels), 0, 255), tf.uint8)
            return self.model(pixels, training=False)
        return self.model(normalize(pixels), training=False)

    def _serve(self, image):
        import tensorflow as tf

        return {"embedding": tf.math.l2_normalize(self._embed(image), axis=1)}

    def frozen(self):
        """The serving function with the weights as constants (what TFLite converts)."""
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        return convert_variables_to_constants_v2(self.module.serve.get_concrete_function())

    def reference(self, images: np.ndarray) -> np.ndarray:
        """The Keras model's own L2-normalised embeddings of a uint8 batch (eager, float64 norm)."""
        out = np.asarray(self._embed(images), dtype=np.float64)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def metadata(self, fmt: str) -> dict:
        return {"format": fmt, "input": "uint8 RGB NHWC", "input_size": list(self.size),
                "resize_inside": self.resize,
                "normalization": "the model's own" if self.raw else {"mean": MEAN, "std": STD},
                "output": "L2-normalised float32 embedding",
                "embedding_size": int(self.model.output_shape[-1])}


# --------------------------------------------------------------------------- exporters
@register_exporter("savedmodel")
def export_savedmodel(serving: Serving, out: Path, calibration=None) -> None:
    """TensorFlow SavedModel, signature ``serving_default``: ``image`` → ``embedding``."""
    import tensorflow as tf

    concrete = serving.module.serve.get_concrete_function()
    tf.saved_model.save(serving.module, str(out), signatures={"serving_default": concrete})
    (out / METADATA_FILE).write_text(json.dumps(serving.metadata("savedmodel"), indent=2) + "\n")


def _convert_tflite(serving: Serving, configure=None) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([serving.frozen()], serving.module)
    if configure is not None:
        configure(converter, tf)
    try:
        return converter.convert()
    except Exception as exc:  # noqa: BLE001 - the converter raises many types
        raise ExportError(f"TFLite conversion failed: {type(exc).__name__}: {_first_line(exc)}") from None


@register_exporter("tflite")
def export_tflite(serving: Serving, out: Path, calibration=None) -> None:
    """TFLite, float32 weights and compute."""
    out.write_bytes(_convert_tflite(serving))


@register_exporter("tflite-fp16")
def export_tflite_fp16(serving: Serving, out: Path, calibration=None) -> None:
    """TFLite with float16 weights (dequantised to float32 at load)."""
    def configure(converter, tf):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]

    out.write_bytes(_convert_tflite(serving, configure))


@register_exporter("tflite-int8")
def export_tflite_int8(serving: Serving, out: Path, calibration=None) -> None:
    """TFLite, full integer: int8 weights and activations calibrated on ``calibration`` images."""
    if calibration is None or len(calibration) == 0:
        raise ExportError("tflite-int8 needs calibration images (--calibration DIR)")

    def representative():
        for image in calibration:
            yield [np.asarray(image, dtype=np.uint8)[None]]

    def configure(converter, tf):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]

    out.write_bytes(_convert_tflite(serving, configure))


@register_exporter("onnx")
def export_onnx(serving: Serving, out: Path, calibration=None, opset: int = 17) -> None:
    """ONNX through tf2onnx (extra ``distill[onnx]``); input ``image``, output ``embedding``."""
    try:
        import tf2onnx
    except ImportError:
        raise ExportError("onnx export needs tf2onnx: pip install 'distill[onnx]'") from None
    try:
        proto, _ = tf2onnx.convert.from_function(serving.module.serve, input_signature=serving.input_signature,
                                                 opset=opset)
    except Exception as exc:  # noqa: BLE001 - tf2onnx raises many types
        raise ExportError(f"ONNX conversion failed: {type(exc).__name__}: {_first_line(exc)}") from None
    old = proto.graph.output[0].name
    for node in proto.graph.node:
        node.output[:] = ["embedding" if name == old else name for name in node.output]
    proto.graph.output[0].name = "embedding"
    out.write_bytes(proto.SerializeToString())


# --------------------------------------------------------------------------- running
def load_exported(path, fmt: str, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """An exported model run through the project's one model runtime (``teachers.load_teacher``,
    which sees its uint8 input and feeds raw pixels): uint8 ``[B, H, W, 3]`` (or one image) →
    embeddings. ``threads`` limits ONNX/TFLite CPU threads (TensorFlow's pools are per process)."""
    from teachers import TeacherError, load_teacher

    if fmt not in EXPORTERS:
        raise ExportError(str(EXPORTERS.unknown(fmt)))
    if not Path(path).exists():
        raise ExportError(f"{path}: exported model does not exist")
    try:
        teacher = load_teacher(path, threads=threads)
    except TeacherError as exc:
        raise ExportError(str(exc)) from None
    if (teacher.preprocess.mean, teacher.preprocess.std) != (0.0, 1.0):
        raise ExportError(f"{path}: not a model exported by distill (it takes normalised floats, not uint8)")
    return lambda images: np.asarray(teacher.embed(_batch(images)), dtype=np.float32)


def _batch(images) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ExportError(f"exported models take uint8 images, got {images.dtype}")
    return np.ascontiguousarray(images[None] if images.ndim == 3 else images)


# --------------------------------------------------------------------------- calibration images
def find_images(root) -> list[Path]:
    """Every image file under ``root`` (any folder tree), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise ExportError(f"{root}: calibration folder does not exist")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise ExportError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) under the calibration folder")
    return paths


def split_images(paths: list, parity: int, calibration: int) -> tuple[list, list]:
    """Evenly spread ``parity`` images, and up to ``calibration`` others (all when too few)."""
    picks = np.unique(np.linspace(0, len(paths) - 1, min(parity, len(paths))).round().astype(int))
    parity_paths, chosen = [paths[i] for i in picks], set(picks.tolist())
    rest = [p for i, p in enumerate(paths) if i not in chosen] or list(paths)
    keep = np.unique(np.linspace(0, len(rest) - 1, min(calibration, len(rest))).round().astype(int))
    return parity_paths, [rest[i] for i in keep]


def read_native(path) -> np.ndarray:
    """One image file as RGB uint8 at its own size; error naming the file."""
    import tensorflow as tf

    try:
        data = Path(path).read_bytes()
        return tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    except OSError as exc:
        raise ExportError(f"{path}: cannot read image ({exc.strerror})") from None
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as exc:
        raise ExportError(f"{path}: cannot decode image ({_first_line(exc)})") from None


def _read_sized(paths, size) -> list[np.ndarray]:
    from distill.data.images import read_image

    try:
        return [read_image(p, size) for p in paths]
    except ValueError as exc:  # message names the file
        raise ExportError(str(exc)) from None


# --------------------------------------------------------------------------- parity and latency
def parity(run, serving: Serving, images: list[np.ndarray]) -> np.ndarray:
    """Cosine between the exported and the Keras embeddings, per image."""
    if serving.resize:  # images of any size: one at a time
        pairs = [(run(img[None]), serving.reference(img[None])) for img in images]
        got, want = np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])
    else:
        batch = np.stack(images)
        got, want = run(batch), serving.reference(batch)
    got = np.asarray(got, dtype=np.float64)
    got /= np.maximum(np.linalg.norm(got, axis=1, keepdims=True), 1e-12)
    return np.sum(got * want, axis=1)


def latency_ms(run, image: np.ndarray, runs: int = 50, warmup: int = 3) -> float:
    """Median wall time of ``run`` on one image, in milliseconds."""
    batch = np.ascontiguousarray(image[None])
    for _ in range(warmup):
        run(batch)
    times = []
    for _ in range(max(1, runs)):
        start = time.perf_counter()
        run(batch)
        times.append((time.perf_counter() - start) * 1000.0)
    return float(statistics.median(times))


def path_size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def format_size(size: int) -> str:
    return f"{size / 1e6:.2f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"


# --------------------------------------------------------------------------- orchestration
def _load_keras(model):
    import keras

    if isinstance(model, keras.Model):
        return model
    from teachers import TeacherError
    from teachers.keras_teacher import load_keras_model

    path = Path(model)
    if path.is_dir() or path.suffix.lower() not in (".keras", ".h5", ".hdf5"):
        raise ExportError(f"{model}: export needs a Keras model (.keras or .h5 file)")
    try:
        return load_keras_model(path)
    except TeacherError as exc:
        raise ExportError(str(exc)) from None


def _write_atomic(exporter, serving, out: Path, calibration, overwrite: bool, **options) -> None:
    if out.exists() and not overwrite:
        raise ExportError(f"{out}: already exists (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        target = tmp / out.name
        exporter(serving, target, calibration, **options)
        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()
        os.replace(target, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export_model(model_path, fmt: str, out, resize: bool = False, calibration=None, *,
                 parity_images: int = 32, calibration_images: int = 200, latency_runs: int = 50,
                 overwrite: bool = False, threads: int | None = None, **options) -> ExportReport:
    """Export ``model_path`` (a .keras/.h5 file or a Keras model) as ``fmt`` to ``out``.

    ``calibration`` is a folder tree of images: int8 calibration uses up to
    ``calibration_images`` of them, parity is measured on ``parity_images`` others (or, without
    ``calibration``, on the bundled ORL demo faces). ``options`` go to the exporter (onnx: ``opset``).
    """
    if fmt not in EXPORTERS:
        raise ExportError(str(EXPORTERS.unknown(fmt, "--format")))
    if fmt in CALIBRATED_FORMATS and calibration is None:
        raise ExportError(f"{fmt} needs calibration images: pass --calibration DIR (images like the deployment's)")
    serving = Serving(_load_keras(model_path), resize=resize)
    paths = find_images(calibration if calibration is not None else DEFAULT_PARITY_DIR)
    parity_paths, calib_paths = split_images(paths, parity_images, calibration_images)
    calib = _read_sized(calib_paths, serving.size) if fmt in CALIBRATED_FORMATS else None
    out = Path(out)
    _write_atomic(EXPORTERS[fmt], serving, out, calib, overwrite, **options)

    run = load_exported(out, fmt, threads=threads)
    images = [read_native(p) for p in parity_paths] if resize else _read_sized(parity_paths, serving.size)
    cosines = parity(run, serving, images)
    return ExportReport(format=fmt, path=str(out), size_bytes=path_size(out),
                        cosine_min=float(cosines.min()), cosine_mean=float(cosines.mean()),
                        latency_ms=latency_ms(run, images[0], latency_runs),
                        parity_images=len(images), latency_runs=max(1, latency_runs))
