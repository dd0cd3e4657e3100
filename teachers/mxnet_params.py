"""MXNet ``.params`` files (``NDArray::Save`` lists) read with NumPy; no MXNet needed.

Layout, all little-endian: uint64 list magic ``0x112``, uint64 reserved, uint64 array count;
per array a uint32 magic — V2 ``0xF993FAC9`` / V3 ``0xF993FACA`` (then int32 storage type,
uint32 ndim, int64 dims), V1 ``0xF993FAC8`` (uint32 ndim, int64 dims) or legacy (the magic
is ndim, then uint32 dims) — followed, unless the shape is empty, by the context (int32
device type, int32 device id), an int32 dtype flag and the raw data; then uint64 key count
and per key a uint64 length and its bytes (``arg:NAME`` / ``aux:NAME``).
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from teachers.base import TeacherError

LIST_MAGIC = 0x112
V1_MAGIC, V2_MAGIC, V3_MAGIC = 0xF993FAC8, 0xF993FAC9, 0xF993FACA
#: mshadow type flag → NumPy dtype (little-endian)
DTYPES = {0: "<f4", 1: "<f8", 2: "<f2", 3: "u1", 4: "<i4", 5: "i1", 6: "<i8"}
STORAGE = {0: "dense", 1: "row_sparse", 2: "csr"}


class _Reader:
    """Bounds-checked reads from bytes; every failure names the file and what was being read."""

    def __init__(self, data: bytes, where: str):
        self.data, self.where, self.pos = data, where, 0

    def fail(self, what: str):
        return TeacherError(f"{self.where}: {what}")

    def take(self, size: int, what: str) -> bytes:
        left = len(self.data) - self.pos
        if size > left:
            raise self.fail(f"truncated: {what} needs {size} bytes, {left} left")
        chunk = self.data[self.pos:self.pos + size]
        self.pos += size
        return chunk

    def unpack(self, fmt: str, what: str):
        values = struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))
        return values if len(values) > 1 else values[0]


def _array(reader: _Reader, what: str) -> np.ndarray | None:
    """One ``NDArray::Save`` record; None for an empty (none) array."""
    magic = reader.unpack("I", what)
    if magic in (V2_MAGIC, V3_MAGIC):
        stype = reader.unpack("i", what)
        if stype != 0:
            raise reader.fail(f"{what} is stored {STORAGE.get(stype, f'with storage type {stype}')}; "
                              "only dense arrays are supported")
        ndim = reader.unpack("i", what)
        if not -1 <= ndim <= 32:
            raise reader.fail(f"{what} has an invalid shape (ndim {ndim})")
        if ndim == -1 or (ndim == 0 and magic == V2_MAGIC):  # V3 (NumPy semantics): ndim 0 is a scalar
            return None
        shape = reader.unpack(f"{ndim}q", what) if ndim else ()
        if magic == V3_MAGIC and -1 in ((shape,) if isinstance(shape, int) else shape):
            return None
    elif magic == V1_MAGIC:
        ndim = reader.unpack("I", what)
        if ndim > 32:
            raise reader.fail(f"{what} has an invalid shape (ndim {ndim})")
        shape = reader.unpack(f"{ndim}q", what) if ndim else ()
    elif magic <= 32:          # legacy: the magic is ndim, dims are uint32
        ndim = magic
        shape = reader.unpack(f"{ndim}I", what) if ndim else ()
    else:
        raise reader.fail(f"{what} has an unknown NDArray magic 0x{magic:08X} (not an MXNet array)")
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if not shape and magic != V3_MAGIC:
        return None
    if any(d < 0 for d in shape):
        raise reader.fail(f"{what} has an invalid shape {shape}")
    reader.unpack("ii", what)  # context: device type, device id (arrays load onto the CPU)
    flag = reader.unpack("i", what)
    if flag not in DTYPES:
        raise reader.fail(f"{what} has dtype flag {flag}, not one of float32/float64/float16/"
                          "uint8/int32/int8/int64")
    dtype = np.dtype(DTYPES[flag])
    count = int(np.prod(shape, dtype=np.int64))
    raw = reader.take(count * dtype.itemsize, what)
    return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def read_params(path) -> dict[str, np.ndarray]:
    """``{key: array}`` of an MXNet ``.params`` file (keys as stored, e.g. ``arg:fc1_weight``).

    Raises :class:`TeacherError` naming the file (and the array) for a missing, truncated,
    foreign or unsupported (sparse, unknown dtype) file."""
    path = Path(path)
    if not path.is_file():
        raise TeacherError(f"{path}: parameter file does not exist")
    reader = _Reader(path.read_bytes(), path.name)
    if len(reader.data) < 24:
        raise reader.fail(f"not an MXNet .params file ({len(reader.data)} bytes, too short for the header)")
    magic, _reserved = reader.unpack("QQ", "the header")
    if magic != LIST_MAGIC:
        raise reader.fail(f"not an MXNet .params file (list magic 0x{magic:X}, expected 0x{LIST_MAGIC:X})")
    count = reader.unpack("Q", "the array count")
    if count > len(reader.data):
        raise reader.fail(f"not an MXNet .params file (claims {count} arrays)")
    arrays = []
    for index in range(count):
        arrays.append(_array(reader, f"array {index} of {count}"))
    n_keys = reader.unpack("Q", "the key count")
    if n_keys not in (0, count):
        raise reader.fail(f"{n_keys} keys for {count} arrays")
    keys = []
    for index in range(n_keys):
        length = reader.unpack("Q", f"key {index}")
        keys.append(reader.take(length, f"key {index}").decode("utf-8", "replace"))
    if not keys:
        keys = [str(i) for i in range(count)]
    if reader.pos != len(reader.data):
        raise reader.fail(f"{len(reader.data) - reader.pos} unexpected bytes after the last key")
    return {key: array for key, array in zip(keys, arrays) if array is not None}


def params_by_name(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``arg:NAME``/``aux:NAME`` keys → ``NAME`` (unprefixed keys are kept as they are)."""
    return {key.split(":", 1)[1] if key.startswith(("arg:", "aux:")) else key: value
            for key, value in params.items()}
