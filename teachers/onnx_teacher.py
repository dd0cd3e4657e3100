"""ONNX teachers run with onnxruntime (``pip install 'distill[onnx]'``).

The input layout (NCHW or NHWC) is read from the graph's input shape; when the shape does
not tell (dynamic dimensions), the declared :class:`Preprocess` layout is used. The default
normalisation is the project's ``(pixel - 127.5) / 128`` on RGB. Official InsightFace ONNX
models (e.g. ``w600k_r50.onnx``) are NCHW RGB trained with ``(pixel - 127.5) / 127.5``:
pass ``Preprocess(std=127.5)`` (``--std 127.5``) to reproduce them exactly (the default
differs by a uniform 0.4 % input scale). Models converted from MXNet with the
normalisation inside the graph want ``Preprocess(mean=0, std=1)``.
"""
from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np

from distill.data.preprocess import INPUT_SIZE
from distill.utils import sha256_path
from teachers.base import Preprocess, Teacher, TeacherError, raw_pixels

log = logging.getLogger(__name__)

#: onnxruntime element type → NumPy dtype fed to the model.
ONNX_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
                    "tensor(double)": np.float64}
#: input types that mean "raw pixels" (e.g. models exported by `distill export`)
ONNX_RAW_TYPES = {"tensor(uint8)": np.uint8}


def _fixed(dim):
    return int(dim) if isinstance(dim, (int, np.integer)) and dim > 0 else None


def input_layout(shape, where: str) -> str | None:
    """``"NCHW"``/``"NHWC"`` from a 4-D input shape (None/-1/names = dynamic), or None if unclear;
    raises when the spatial size is fixed to something other than the pipeline's 112×112."""
    if len(shape) != 4:
        raise TeacherError(f"{where}: teacher input must be a 4-D image batch, got shape {list(shape)}")
    dims = [_fixed(d) for d in shape]
    first, last = dims[1] in (1, 3), dims[3] in (1, 3)
    layout = "NCHW" if first and not last else "NHWC" if last and not first else None
    spatial = dims[2:4] if layout == "NCHW" else dims[1:3] if layout == "NHWC" else None
    if spatial and all(spatial) and tuple(spatial) != tuple(INPUT_SIZE):
        raise TeacherError(f"{where}: teacher expects {spatial[0]}×{spatial[1]} images; the pipeline "
                           f"gives {INPUT_SIZE[0]}×{INPUT_SIZE[1]}")
    return layout


def with_layout(preprocess: Preprocess | None, layout: str | None, where: str) -> Preprocess:
    """The declared (or default) preprocessing with the layout the graph demands."""
    preprocess = preprocess or Preprocess()
    if layout is None or layout == preprocess.layout:
        return preprocess
    log.info("%s: graph input is %s; using that layout", where, layout)
    return dataclasses.replace(preprocess, layout=layout)


def run_batched(run, x: np.ndarray, fixed_batch: int | None) -> np.ndarray:
    """``run`` on ``x``, in chunks of ``fixed_batch`` (last one zero-padded) when the model
    accepts only that batch size."""
    if not fixed_batch or len(x) == fixed_batch:
        return run(x)
    outputs = []
    for start in range(0, len(x), fixed_batch):
        chunk = x[start:start + fixed_batch]
        pad = fixed_batch - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
        outputs.append(run(chunk)[:fixed_batch - pad])
    return np.concatenate(outputs)


def as_embeddings(out, where: str) -> np.ndarray:
    """Model output → float32 ``[B, D]`` (trailing singleton dimensions dropped)."""
    out = np.asarray(out, dtype=np.float32)
    if out.ndim > 2 and all(d == 1 for d in out.shape[2:]):
        out = out.reshape(out.shape[:2])
    if out.ndim != 2:
        raise TeacherError(f"{where}: teacher output must be [batch, dim], got shape {out.shape}")
    return out


class OnnxTeacher(Teacher):
    """An ONNX model: uint8 batch → declared preprocessing (NumPy) → onnxruntime → embeddings."""

    kind = "onnx"
    graph_compatible = False

    def __init__(self, path, preprocess: Preprocess | None = None, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise TeacherError(f"{path}: ONNX teachers need onnxruntime "
                               "(pip install 'distill[onnx]' or pip install onnxruntime)") from None
        path = str(path)
        if not os.path.isfile(path):
            raise TeacherError(f"{path}: model file does not exist")
        try:
            wanted = ("CUDAExecutionProvider", "CPUExecutionProvider")
            providers = [p for p in wanted if p in ort.get_available_providers()]
            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = int(threads)
            self.session = ort.InferenceSession(path, options, providers=providers or None)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NoSuchFile types
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TeacherError(f"{path}: not a loadable ONNX model ({text[:200]})") from None
        node = self.session.get_inputs()[0]
        types = {**ONNX_FLOAT_TYPES, **ONNX_RAW_TYPES}
        if node.type not in types:
            raise TeacherError(f"{path}: input {node.name!r} has type {node.type}; expected an image "
                               f"({', '.join(types)})")
        self.input_name, self.dtype = node.name, types[node.type]
        self.fixed_batch = _fixed(node.shape[0])
        layout = input_layout(node.shape, path)
        if node.type in ONNX_RAW_TYPES:
            preprocess = raw_pixels(path, preprocess, layout or "NHWC", f"input {node.name!r} is uint8")
        else:
            preprocess = with_layout(preprocess, layout, path)
        self._where = path
        probe = self._run(preprocess.apply_numpy(np.zeros((1,) + INPUT_SIZE + (3,), np.uint8)))
        super().__init__(path, sha256_path(path), preprocess, probe.shape[1])

    def _run(self, x: np.ndarray) -> np.ndarray:
        def run(chunk):
            return self.session.run(None, {self.input_name: chunk.astype(self.dtype, copy=False)})[0]

        return as_embeddings(run_batched(run, x, self.fixed_batch), self._where)

    def embed(self, images):
        return self._run(self.preprocess.apply_numpy(np.asarray(images)))
