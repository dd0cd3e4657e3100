"""PyTorch ``torch.save`` checkpoints (state dicts) read into NumPy, without torch and safely.

``torch.save`` (torch ≥ 1.6) writes a zip: ``<root>/data.pkl`` (a pickle of the state dict),
``<root>/data/<key>`` (each storage's raw bytes), ``<root>/byteorder`` and ``<root>/version``.
In the pickle a tensor is ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
requires_grad, backward_hooks[, metadata])`` and a storage is the persistent id
``("storage", torch.<Type>Storage, key, location, numel)``. The pickle is read by the project's
restricted unpickler (:mod:`distill.safe_pickle`) with an allow-list of exactly those globals
(plus ``collections.OrderedDict``); any other global (``os.system``, a model class, ...) is
refused before anything is built. Tensors come back as NumPy arrays honouring offset, size and
stride; bfloat16 becomes float32. Legacy (pre-1.6, non-zip) files are refused with the fix.
"""
from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path

import numpy as np

from distill.safe_pickle import safe_unpickle
from teachers.base import TeacherError

#: torch storage class → NumPy dtype (little-endian); "bfloat16" is widened to float32
STORAGE_DTYPES = {
    "FloatStorage": "<f4", "HalfStorage": "<f2", "DoubleStorage": "<f8", "BFloat16Storage": "bfloat16",
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?", "UntypedStorage": "u1",
}
#: the keys under which training checkpoints nest the model's state dict (arcface_torch first)
NESTED_STATE_KEYS = ("state_dict_backbone", "state_dict", "model")
_HOLDS = "a .pth state dict holds only tensors in dicts; re-save it with torch.save(model.state_dict(), path)"
# torch.save(..., _use_new_zipfile_serialization=False) starts with pickle protocol 2 + a LONG1 magic number
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


class _StorageType:
    """What a ``torch.<Type>Storage`` global resolves to: its name and NumPy dtype."""

    def __init__(self, name: str):
        self.name, self.dtype = name, STORAGE_DTYPES[name]


def _check_ints(what: str, values, count: int | None = None) -> tuple:
    values = tuple(values) if isinstance(values, (tuple, list)) else None
    if values is None or any(type(v) is not int or v < 0 for v in values) or \
            (count is not None and len(values) != count):
        raise ValueError(f"tensor {what} is not a tuple of non-negative ints")
    return values


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """``torch._utils._rebuild_tensor_v2`` in NumPy: a copy of the strided view of ``storage``."""
    if not isinstance(storage, np.ndarray) or storage.ndim != 1:
        raise ValueError("tensor storage is not a persistent storage id")
    (offset,) = _check_ints("offset", (offset,))
    size = _check_ints("size", size)
    stride = _check_ints("stride", stride, len(size))
    if all(size):
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.size:
            raise ValueError(f"tensor of size {size} at offset {offset} runs past its storage of {storage.size}")
    else:
        return np.zeros(size, storage.dtype)
    view = np.lib.stride_tricks.as_strided(storage[offset:], size,
                                           tuple(s * storage.itemsize for s in stride), writeable=False)
    return np.array(view)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    """``torch._utils._rebuild_parameter``: a parameter is its tensor."""
    if not isinstance(data, np.ndarray):
        raise ValueError("parameter data is not a tensor")
    return data


ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "UntypedStorage"): _StorageType("UntypedStorage"),
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _Storages:
    """``persistent_load`` for one archive: reads ``<root>/data/<key>`` once per key."""

    def __init__(self, archive: zipfile.ZipFile, root: str, big_endian: bool):
        self.archive, self.root, self.big_endian = archive, root, big_endian
        self.loaded: dict[str, np.ndarray] = {}

    def __call__(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")):
            raise pickle.UnpicklingError(f"refused persistent id {str(pid)[:80]} (not a storage)")
        _, kind, key, _location, numel = pid
        if not isinstance(kind, _StorageType) or not isinstance(key, str) or type(numel) is not int or numel < 0:
            raise pickle.UnpicklingError(f"refused malformed storage id {str(pid)[:80]}")
        if key not in self.loaded:
            self.loaded[key] = self._read(kind, key, numel)
        return self.loaded[key]

    def _read(self, kind: _StorageType, key: str, numel: int) -> np.ndarray:
        name = f"{self.root}/data/{key}"
        try:
            raw = self.archive.read(name)
        except KeyError:
            raise ValueError(f"storage {key} is missing from the archive ({name})") from None
        dtype = np.dtype("<u2" if kind.dtype == "bfloat16" else kind.dtype)
        if len(raw) < numel * dtype.itemsize:
            raise ValueError(f"storage {key} holds {len(raw)} bytes, {numel} × {dtype.itemsize} expected")
        array = np.frombuffer(raw, dtype.newbyteorder(">") if self.big_endian else dtype, count=numel)
        if kind.dtype == "bfloat16":
            return (array.astype(np.uint32) << 16).view(np.float32)
        return array.astype(dtype.newbyteorder("="))


def _refuse_non_zip(path: Path, head: bytes):
    import tarfile

    if head.startswith(b"PK"):
        raise TeacherError(f"{path}: truncated or corrupt zip archive (not a whole torch.save checkpoint)")
    if head.startswith(_LEGACY_MAGIC) or tarfile.is_tarfile(path):
        raise TeacherError(f"{path}: legacy (pre-1.6, non-zip) torch.save format; re-save it with a current "
                           "torch: torch.save(torch.load(path), path)")
    raise TeacherError(f"{path}: not a PyTorch checkpoint (torch.save writes a zip archive)")


def read_torch_checkpoint(path):
    """The object pickled in a ``torch.save`` zip (tensors as NumPy arrays); one-line
    :class:`TeacherError` naming ``path`` for anything unreadable or not allowed."""
    path = Path(path)
    if not path.is_file():
        raise TeacherError(f"{path}: model file does not exist")
    with open(path, "rb") as handle:
        head = handle.read(len(_LEGACY_MAGIC))
    if not zipfile.is_zipfile(path):
        _refuse_non_zip(path, head)
    try:
        with zipfile.ZipFile(path) as archive:
            roots = [n[:-len("/data.pkl")] for n in archive.namelist()
                     if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(roots) != 1:
                raise TeacherError(f"{path}: a zip but not a torch.save checkpoint "
                                   f"({len(roots)} <root>/data.pkl records, 1 expected)")
            byteorder = f"{roots[0]}/byteorder"
            big = byteorder in archive.namelist() and archive.read(byteorder).strip() == b"big"
            return safe_unpickle(archive.read(f"{roots[0]}/data.pkl"), str(path), allowed=ALLOWED_GLOBALS,
                                 persistent_load=_Storages(archive, roots[0], big),
                                 opcodes=("BINPERSID", "PERSID", "BUILD"), holds=_HOLDS, kind="torch pickle")
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise TeacherError(f"{path}: truncated or corrupt zip archive ({str(exc)[:200]})") from None
    except TeacherError:
        raise
    except ValueError as exc:
        raise TeacherError(str(exc)) from None


def read_state_dict(path) -> dict[str, np.ndarray]:
    """The state dict of a ``torch.save`` checkpoint: name → NumPy array. Accepts a bare state
    dict or one nested under ``state_dict_backbone``/``state_dict``/``model``; strips a
    DataParallel ``module.`` prefix."""
    obj = read_torch_checkpoint(path)
    if isinstance(obj, dict):
        obj = next((obj[k] for k in NESTED_STATE_KEYS if isinstance(obj.get(k), dict)), obj)
    if not isinstance(obj, dict) or not obj:
        raise TeacherError(f"{path}: holds a {type(obj).__name__}, not a state dict (name → tensor)")
    bad = next((k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, np.ndarray)), None)
    if bad is not None:
        raise TeacherError(f"{path}: key {bad!r} is a {type(obj[bad]).__name__}, not a tensor "
                           "(expected a state dict: name → tensor)")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)
