"""Trusting a store: each shard's SHA-256 (recorded when it is written), the rows of a shard
(finite, unit norm, right dim) and the images it was made from (the manifest's own fields are
checked where it is loaded, :func:`distill.store.manifest.manifest_problem`).

Readers check raw rows before any conditioning, so a damaged store is refused where it is
read, with the shard, the sample_id and the fix, instead of surfacing as a NaN loss.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np

from distill.store.manifest import StoreError
from distill.utils import first_line

NORM_TOLERANCE = {"float16": 2e-3, "float32": 1e-4}


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _redo_hint(path: Path) -> str:
    return f"delete {path.name} and rerun the same `distill embed` command to redo it"


def read_shard(path, fields, manifest, check: bool = True) -> dict:
    """``{field: array}`` of one shard file. With ``check`` the file must match the SHA-256 in
    the manifest (when one is recorded) and its embedding rows must be sound."""
    import h5py

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StoreError(f"{path}: shard cannot be read ({exc.strerror}); {_redo_hint(path)}") from None
    expected = (manifest.shards.get(path.name) or {}).get("sha256")
    if check and expected and digest(data) != expected:
        raise StoreError(f"{path}: does not match the SHA-256 in the manifest (damaged or changed); "
                         "rerun the same `distill embed` command to redo it")
    wanted = list(dict.fromkeys([*fields, "sample_id"] if check else fields))
    try:
        with h5py.File(io.BytesIO(data), "r") as handle:
            arrays = {name: handle[name][...] for name in wanted}
    except (OSError, KeyError, ValueError) as exc:
        raise StoreError(f"{path}: not a readable shard ({first_line(exc)}); {_redo_hint(path)}") from None
    if check:
        for field in [f for f in fields if f.startswith("embedding")]:
            problems = row_problems(arrays["sample_id"], arrays[field], field, manifest)
            if problems:
                raise StoreError(f"{path}: {problems[0]}; {_redo_hint(path)}")
    return {name: arrays[name] for name in fields}


def row_problems(ids, values, field: str, manifest) -> list[str]:
    """What is wrong with the stored rows ``values`` of ``field`` (empty when sound)."""
    count, dim = len(ids), manifest.embedding_dim
    if values.shape != (count, dim):
        return [f"{field} has shape {values.shape}, expected ({count}, {dim})"]
    problems = []
    if values.dtype != np.dtype(manifest.dtype):
        problems.append(f"{field} dtype {values.dtype}, manifest says {manifest.dtype}")
    as32 = values.astype(np.float32)
    bad = ~np.isfinite(as32).all(axis=1)
    if bad.any():
        problems.append(f"{field} has NaN/inf in {int(bad.sum())} row(s) (sample_id {ids[bad][:5].tolist()})")
    norms = np.linalg.norm(np.nan_to_num(as32), axis=1)
    off = ~bad & (np.abs(norms - 1.0) > NORM_TOLERANCE.get(manifest.dtype, 1e-3))
    if off.any():
        problems.append(f"{field} not unit-norm in {int(off.sum())} row(s) (sample_id {ids[off][:5].tolist()})")
    return problems


def file_digest(path) -> str:
    """SHA-256 of a file, read in 8 MiB blocks (no whole shard in memory)."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 23), b""):
            sha.update(block)
    return sha.hexdigest()


def check_shard_file(path, manifest) -> None:
    """Refuse a shard whose file does not match the SHA-256 recorded in the manifest."""
    path = Path(path)
    expected = (manifest.shards.get(path.name) or {}).get("sha256")
    try:
        actual = file_digest(path) if expected else None
    except OSError as exc:
        raise StoreError(f"{path}: shard cannot be read ({exc.strerror}); {_redo_hint(path)}") from None
    if expected and actual != expected:
        raise StoreError(f"{path}: does not match the SHA-256 in the manifest (damaged or changed); "
                         "rerun the same `distill embed` command to redo it")


def bad_row(values, dtype: str):
    """``(index, what)`` of the first unsound row of ``values`` [N, D] (None when all are sound)."""
    as32 = np.asarray(values, dtype=np.float32)
    finite = np.isfinite(as32).all(axis=1)
    norms = np.linalg.norm(np.where(finite[:, None], as32, 0.0), axis=1)
    wrong = ~finite | (np.abs(norms - 1.0) > NORM_TOLERANCE.get(dtype, 1e-3))
    if not wrong.any():
        return None
    i = int(np.argmax(wrong))
    return i, ("has NaN/inf" if not finite[i] else f"is not unit-norm (norm {norms[i]:.4g})")


def bad_row_message(shard_path, sample_id: int, what: str) -> str:
    """The one-line error for an unsound teacher row met while training."""
    path = Path(shard_path)
    return f"{path}: embedding {what} (sample_id {sample_id}); {_redo_hint(path)}"


def damaged_shards(store_dir, manifest) -> list[str]:
    """Names of recorded shards whose file no longer matches its recorded SHA-256."""
    damaged = []
    for name, entry in manifest.shards.items():
        path = Path(store_dir) / name
        if entry.get("sha256") and path.is_file() and digest(path.read_bytes()) != entry["sha256"]:
            damaged.append(name)
    return damaged


# ------------------------------------------------------------------------------ image content
def content_problem(recorded, source, current=None) -> str | None:
    """How the images of ``source`` differ from the content fingerprint ``recorded`` at embed
    time (None when they match or nothing was recorded); ``current``: one already computed."""
    from distill.data.content import content_fingerprint

    if not isinstance(recorded, dict) or "mode" not in recorded:
        return None
    if not current or current.get("mode") != recorded["mode"]:
        current = content_fingerprint(source, recorded["mode"])
    if current is None or current.get("digest") == recorded.get("digest"):
        return None
    hint = STAT_HINT if recorded["mode"] == "stat" and current.get("files") == recorded.get("files") else ""
    return (f"the images of {source.root} changed ({current.get('files')} files now, "
            f"{recorded.get('files')} then; {recorded['mode']} fingerprint differs{hint})")


#: a stat fingerprint also changes when files are only copied or restored with new times
STAT_HINT = (": sizes or modification times; if the files were only copied or restored, the "
             "pixels may be the same, and a store embedded with --strict (SHA-256 of every file) "
             "would accept such copies")


def check_source_content(store, source) -> None:
    """Refuse a store whose images changed since it was embedded."""
    problem = content_problem(store.manifest.source.get("content"), source)
    if problem:
        raise StoreError(f"{store.path}: {problem} since the store was embedded; embed them again "
                         "(`distill embed ... --overwrite`) or train on the images the store was made from")
