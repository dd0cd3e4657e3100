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

TMP_SUFFIX = ".tmp"   # temporaries of atomic writes: ``.NAME.<random>.tmp`` next to the target


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    The temporary file (``.NAME.*.tmp``) is removed on failure; an ``OSError`` (e.g. a full
    disk) names ``path``. A kill leaves at most the temporary file: see :func:`remove_temporaries`.
    """
    from distill.pause import pause_point

    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        pause_point(f"write:{path.name}")
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename is None:
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise


def remove_temporaries(folder, prefix: str = ".") -> list[Path]:
    """Delete what interrupted atomic writes left in ``folder`` (``PREFIX*.tmp`` files or
    folders; ``prefix`` narrows it to one target, e.g. ``".x.bin."``); returns them."""
    import glob
    import shutil

    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.glob(f"{glob.escape(prefix)}*{TMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            removed.append(path)
    return removed


def first_line(exc: BaseException) -> str:
    """An error's first line, without TensorFlow's ``{{function_node …}}``/``[Op:…]`` noise."""
    import re

    message = (getattr(exc, "message", None) or str(exc)).strip()
    line = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:[^\]]*\].*$", "", message.splitlines()[0]) if message else ""
    return line.strip() or type(exc).__name__


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
    """A YAML file that must hold a mapping; ``error(message)`` names the file and problem
    (a key given twice included: :mod:`distill.yaml_files`)."""
    import yaml

    from distill.yaml_files import DuplicateKeyError, load_yaml, yaml_problem

    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {what} does not exist")
    try:
        raw = load_yaml(path.read_text()) or {}
    except DuplicateKeyError as exc:
        raise error(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML ({yaml_problem(exc)})") from None
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
