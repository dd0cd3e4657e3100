"""TFLite teachers run with ``tf.lite.Interpreter`` (float or int8/uint8-quantised models).

The input tensor is resized to each batch size; a model that refuses resizing is run in
chunks of its own batch size. Layout comes from the input shape as for ONNX teachers.
"""
from __future__ import annotations

import os

import numpy as np

from distill.data.preprocess import INPUT_SIZE
from distill.utils import sha256_path
from teachers.base import Preprocess, Teacher, TeacherError, raw_pixels
from teachers.onnx_teacher import as_embeddings, input_layout, run_batched, with_layout


def _interpreter(path: str, threads: int | None):
    """LiteRT's interpreter when installed, else TensorFlow's (same API)."""
    import warnings

    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():  # tf.lite.Interpreter's deprecation notice
        warnings.simplefilter("ignore")
        return Interpreter(model_path=path, num_threads=threads)


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float input → the tensor's dtype (affine-quantised when it has a scale)."""
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if np.issubdtype(dtype, np.integer) and scale:
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)
    return x.astype(dtype, copy=False)


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if np.issubdtype(y.dtype, np.integer) and scale:
        return (y.astype(np.float32) - zero_point) * scale
    return y.astype(np.float32, copy=False)


class TFLiteTeacher(Teacher):
    """A ``.tflite`` model; embeds NumPy batches (not usable inside a TF graph)."""

    kind = "tflite"
    graph_compatible = False

    def __init__(self, path, preprocess: Preprocess | None = None, threads: int | None = None):
        path = str(path)
        if not os.path.isfile(path):
            raise TeacherError(f"{path}: model file does not exist")
        try:
            self.interpreter = _interpreter(path, threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TeacherError(f"{path}: not a loadable TFLite model ({text[:200]})") from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        signature = [int(d) for d in self.input.get("shape_signature", self.input["shape"])]
        layout = input_layout(signature, path)
        scale = self.input.get("quantization", (0.0, 0))[0]
        if np.dtype(self.input["dtype"]) == np.uint8 and not scale:
            preprocess = raw_pixels(path, preprocess, layout or "NHWC", "its input tensor is uint8")
        else:
            preprocess = with_layout(preprocess, layout, path)
        self._where = path
        self._shape = [int(d) for d in self.input["shape"]]
        self.native_batch = self._shape[0]
        self.resizable = True
        probe = self._run(preprocess.apply_numpy(np.zeros((1,) + INPUT_SIZE + (3,), np.uint8)))
        super().__init__(path, sha256_path(path), preprocess, probe.shape[1])

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        if list(x.shape) != self._shape:
            self.interpreter.resize_tensor_input(self.input["index"], list(x.shape))
            self.interpreter.allocate_tensors()
            self._shape = list(x.shape)
        self.interpreter.set_tensor(self.input["index"], _quantize(x, self.input))
        self.interpreter.invoke()
        return _dequantize(self.interpreter.get_tensor(self.output["index"]), self.output)

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self.resizable:
            try:
                return as_embeddings(self._invoke(x), self._where)
            except TeacherError:
                raise
            except (ValueError, RuntimeError):
                if len(x) == self.native_batch:
                    raise
                self.resizable = False  # fixed-batch model: run in chunks of its batch size
                self.interpreter.resize_tensor_input(self.input["index"], list(self.input["shape"]))
                self.interpreter.allocate_tensors()
                self._shape = [int(d) for d in self.input["shape"]]
        return as_embeddings(run_batched(self._invoke, x, self.native_batch), self._where)

    def embed(self, images):
        return self._run(self.preprocess.apply_numpy(np.asarray(images)))
