"""Small shared helpers: atomic writes, hashing, locking, seeding."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import tempfile
from pathlib import Path

import numpy as np


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_path(path) -> str:
    """SHA-256 of a file, or of a folder's files (relative names and contents, sorted)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def file_lock(path):
    """An exclusive advisory lock (``fcntl.flock``) held for the ``with`` block."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow (Keras) random generators."""
    random.seed(seed)
    np.random.seed(seed)
    import keras

    keras.utils.set_random_seed(seed)


def read_yaml_mapping(path, error, what: str) -> dict:
    """A YAML file that must hold a mapping; ``error(message)`` names the file and problem."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {what} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise error(f"{path}: the {what} must be a mapping of keys, got {type(raw).__name__}")
    return raw


def make_module_callable(module_name: str, target: str) -> None:
    """Let ``import distill.train`` (which makes the attribute ``distill.train`` the module)
    keep ``distill.train(recipe)`` working: the module itself calls ``target``
    (``"package.module:function"``, imported on the first call)."""
    import importlib
    import sys
    import types

    class CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            module, _, attribute = target.partition(":")
            return getattr(importlib.import_module(module), attribute)(*args, **kwargs)

    sys.modules[module_name].__class__ = CallableModule
