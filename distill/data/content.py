"""Content fingerprints of a dataset's files, so that a store is never used with other pixels
under the same names: ``stat`` (every file's size and modification time; fast, the default)
or ``sha256`` (every file's bytes; ``embed --strict``)."""
from __future__ import annotations

import hashlib
import os


def _stat_line(path: str) -> str:
    try:
        info = os.stat(path)
    except OSError:
        return "missing"
    return f"{info.st_size} {info.st_mtime_ns}"


def _hash_line(path: str) -> str:
    from distill.utils import sha256_path

    try:
        return sha256_path(path)
    except OSError:
        return "missing"


#: mode → f(path) → a line that changes when the file's content changes
CONTENT_MODES = {"stat": _stat_line, "sha256": _hash_line}


def content_fingerprint(source, mode: str = "stat") -> dict | None:
    """``{"mode", "digest", "files"}`` over ``source.content_files()`` (None if it has none)."""
    files = getattr(source, "content_files", None)
    if files is None:
        return None
    line = CONTENT_MODES[mode]
    digest = hashlib.sha256()
    paths = files()
    for path in paths:
        digest.update(f"{os.path.relpath(path, source.root)}\t{line(path)}\n".encode("utf-8"))
    return {"mode": mode, "digest": digest.hexdigest(), "files": len(paths)}
