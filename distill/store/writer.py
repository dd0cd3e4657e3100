"""``distill embed``: stream a dataset through a teacher into sharded HDF5 files.

Shard ``k`` holds sample_ids ``[k·shard_size, (k+1)·shard_size)``. Each shard is written
to a temporary name and renamed when complete; the manifest is then rewritten atomically
(under a file lock, so several workers can share one store). Rerunning the same command
redoes only missing shards; a changed teacher, listing or setting is refused unless
``overwrite=True``. Images are decoded ahead in parallel (tf.data) and shards are written
behind by a thread, so the teacher stays busy; memory is bounded by one batch plus two
shard buffers, whatever the dataset size.
"""
from __future__ import annotations

import io
import json
import logging
import os
import queue
import threading
from pathlib import Path

import numpy as np

from distill.data.images import decode_and_resize, input_parallelism, why_unreadable
from distill.data.content import content_fingerprint
from distill.data.sources import DataError, open_source
from distill.store.integrity import content_problem, damaged_shards, digest
from distill.store.manifest import (DTYPES, LISTING_NAME, LOCK_NAME, MANIFEST_NAME, Manifest,
                                    StoreError, shard_name)
from distill.utils import atomic_write_bytes, file_lock, remove_temporaries

log = logging.getLogger(__name__)


def embed(teacher, data, out, *, batch_size: int = 128, shard_size: int = 10000,
          dtype: str = "float16", flip: bool = False, overwrite: bool = False,
          num_workers: int = 1, worker_index: int = 0, skip_bad: bool = False,
          progress: bool = True, preprocess=None, condition: str | None = None,
          strict: bool = False) -> Manifest:
    """Embed every image of ``data`` with ``teacher`` into the store folder ``out``.

    ``teacher``: a path/spec for :func:`teachers.load_teacher` or a loaded Teacher.
    ``data``: a dataset path for :func:`distill.data.sources.open_source` or a source.
    ``condition`` (``center``/``whiten``/``none``): once the store is complete, fit that
    conditioning of the teacher space (:mod:`distill.store.conditioning`).
    ``strict``: fingerprint the images' content by SHA-256 (default: size and mtime); training
    refuses the store when the images no longer match.
    Returns the manifest as it stands after this worker's shards are written.
    """
    from teachers import Teacher, load_teacher

    if dtype not in DTYPES:
        raise StoreError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if not 0 <= worker_index < num_workers:
        raise StoreError(f"worker index {worker_index} is not in [0, {num_workers})")
    if batch_size < 1 or shard_size < 1:
        raise StoreError("batch size and shard size must be positive")
    source = open_source(data) if isinstance(data, (str, os.PathLike)) else data
    teacher = teacher if isinstance(teacher, Teacher) else load_teacher(teacher, preprocess)
    out = Path(out)
    manifest = _open_manifest(out, source, teacher, dtype, flip, shard_size, overwrite, strict)

    todo = [k for k in range(manifest.num_shards)
            if k % num_workers == worker_index and shard_name(k) not in manifest.shards]
    for k in range(manifest.num_shards):   # temporaries of this worker's or of finished shards are stale
        if k in todo or shard_name(k) in manifest.shards:
            _remove_stale_temporaries(out, k)
    if not todo:
        log.info("%s: nothing to do (%d shards complete)", out, len(manifest.shards))
    else:
        ids = np.concatenate([np.arange(*manifest.shard_range(k), dtype=np.int64) for k in todo])
        with _ShardWriter(out, manifest) as writer:
            _run(source, teacher, ids, manifest, writer, batch_size, flip, skip_bad, progress)
    manifest = Manifest.load(out)
    if condition is not None and manifest.is_complete() and (
            todo or manifest.conditioning.get("mode") != condition):
        from distill.store.conditioning import fit_conditioning

        manifest = fit_conditioning(out, condition)
    return manifest


def _open_manifest(out: Path, source, teacher, dtype, flip, shard_size, overwrite, strict=False) -> Manifest:
    """Create the store, or check that an existing one was made with the same settings (and,
    when it recorded one, from files with the same content)."""
    content = content_fingerprint(source, "sha256" if strict else "stat")
    fresh = Manifest(
        num_samples=len(source), num_classes=len(source.class_names),
        class_names=list(source.class_names),
        source={"kind": source.kind, "root": str(source.root), "fingerprint": source.fingerprint(),
                "listing": LISTING_NAME, **({"content": content} if content else {})},
        teacher=teacher.describe(), embedding_dim=teacher.embedding_dim, dtype=dtype, flip=flip,
        shard_size=shard_size, input_normalization=teacher.preprocess.to_dict(),
    )
    out.mkdir(parents=True, exist_ok=True)
    with file_lock(out / LOCK_NAME):
        for name in (MANIFEST_NAME, LISTING_NAME):   # both are written under this lock only
            remove_temporaries(out, f".{name}.")
        if (out / MANIFEST_NAME).exists():
            existing = Manifest.load(out)
            changed = {key: (old, fresh.settings()[key]) for key, old in existing.settings().items()
                       if old != fresh.settings()[key]}
            problem = None if changed else content_problem(existing.source.get("content"), source, content)
            if problem and not overwrite:
                raise StoreError(f"{out}: {problem} since this store was started. Use a new output "
                                 "folder, or --overwrite to start over.")
            if not changed and not problem:
                _reconcile(out, existing)
                return existing
            if not overwrite:
                detail = "; ".join(f"{k}: store has {a!r}, this run has {b!r}" for k, (a, b) in changed.items())
                raise StoreError(f"{out}: store was made with different settings ({detail}). "
                                 "Use a new output folder, or --overwrite to start over.")
            _clear_store(out)
        source.write_listing(out / LISTING_NAME)
        fresh.save(out)
        return fresh


def _reconcile(out: Path, manifest: Manifest) -> None:
    """Drop manifest entries whose shard file vanished; adopt complete shards not yet recorded."""
    import h5py

    changed = False
    damaged = damaged_shards(out, manifest)
    for name in damaged:
        log.warning("%s: does not match the SHA-256 in the manifest (damaged); redoing it", out / name)
        (out / name).unlink()
    for name in list(manifest.shards):
        if not (out / name).is_file():
            del manifest.shards[name]
            changed = True
    if changed and manifest.conditioning.get("mode", "none") != "none":
        log.warning("%s: shards are redone, so the %s conditioning fitted on the old ones is dropped; "
                    "fit it again (`distill store condition`)", out, manifest.conditioning["mode"])
        manifest.conditioning = {"mode": "none"}
    for k in range(manifest.num_shards):
        name = shard_name(k)
        if name in manifest.shards or not (out / name).is_file():
            continue
        try:
            data = (out / name).read_bytes()
            with h5py.File(io.BytesIO(data), "r") as handle:
                count = int(handle["sample_id"].shape[0])
                skipped = json.loads(handle.attrs.get("skipped", "[]"))
        except (OSError, KeyError, ValueError):
            (out / name).unlink()  # a shard file that is not readable is redone
            continue
        first, end = manifest.shard_range(k)
        manifest.shards[name] = {"first_id": first, "count": count, "expected": end - first,
                                 "sha256": digest(data)}
        manifest.skipped.extend(skipped)
        changed = True
    if changed:
        manifest.save(out)


def _clear_store(out: Path) -> None:
    from distill.store.conditioning import FILE_NAME

    for path in out.glob("shard-*.h5*"):
        path.unlink()
    remove_temporaries(out)
    for name in (MANIFEST_NAME, LISTING_NAME, FILE_NAME):
        if (out / name).exists():
            (out / name).unlink()


def _remove_stale_temporaries(out: Path, index: int) -> None:
    for path in out.glob(f"{shard_name(index)}.tmp-*"):   # written by earlier versions
        path.unlink()
    remove_temporaries(out, f".{shard_name(index)}.")


def _l2_normalize(x, teacher, source, sample_ids, mirrored: bool = False) -> np.ndarray:
    """Unit rows of the teacher's output for ``sample_ids``; a NaN/inf or all-zero row stops the
    run, naming the teacher and the first such sample of the batch."""
    x = np.asarray(x, dtype=np.float32)
    finite = np.isfinite(x).all(axis=1)
    norms = np.linalg.norm(np.where(finite[:, None], x, 0.0), axis=1, keepdims=True)
    bad = ~finite | (norms[:, 0] == 0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        sample_id = int(sample_ids[row])
        raise StoreError(f"teacher {teacher.source}: {'all-zero' if finite[row] else 'NaN or inf'} embedding "
                         f"for {source.describe(sample_id)} (sample_id {sample_id}{', mirrored' if mirrored else ''}; "
                         f"{int(bad.sum())} of {len(x)} rows of this batch); check the teacher's weights and "
                         "its input preprocessing (--mean/--std/--bgr)")
    return x / norms


def _image_stream(source, ids: np.ndarray, batch_size: int):
    """tf.data: (sample_id, uint8 image) batches; undecodable images are dropped here and
    found again by the shard check (so their ids are reported, never silently lost)."""
    import tensorflow as tf

    dataset = source.encoded_dataset(ids)
    dataset = dataset.map(lambda sample_id, data: (sample_id, decode_and_resize(data)),
                          num_parallel_calls=input_parallelism(training=False), deterministic=True)
    dataset = dataset.ignore_errors()
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _run(source, teacher, ids, manifest, writer, batch_size, flip, skip_bad, progress):
    """Keep one batch in flight: batch k+1 is handed to the teacher (asynchronous on a GPU)
    before batch k's embeddings are copied back, normalised and routed to shard buffers."""
    import tensorflow as tf
    from tqdm import tqdm

    def launch(images):
        batch = images if teacher.graph_compatible else images.numpy()
        plain = teacher.embed(batch)
        mirrored = teacher.embed(tf.reverse(batch, axis=[2]) if teacher.graph_compatible
                                 else batch[:, :, ::-1]) if flip else None
        return plain, mirrored

    def as_numpy(result, sample_ids, mirrored=False):
        values = result.numpy() if hasattr(result, "numpy") else result
        return _l2_normalize(values, teacher, source, sample_ids, mirrored)

    buffers: dict[int, _ShardBuffer] = {}
    bar = tqdm(total=len(ids), desc="embed", unit="img", disable=not progress, leave=False)

    def finish(sample_ids, results):
        embeddings = as_numpy(results[0], sample_ids)
        flipped = as_numpy(results[1], sample_ids, mirrored=True) if flip else None
        shards = sample_ids // manifest.shard_size
        for k in np.unique(shards):
            rows = shards == k
            if k not in buffers:
                buffers[k] = _ShardBuffer(int(k), manifest, flip)
            buffers[k].add(sample_ids[rows], embeddings[rows], None if flipped is None else flipped[rows])
        for k in [k for k in buffers if k < int(shards[-1])]:
            writer.put(buffers.pop(k).finish(source, skip_bad))
        bar.update(len(sample_ids))

    pending = None
    for sample_ids, images in _image_stream(source, ids, batch_size):
        launched = (sample_ids.numpy(), launch(images))
        if pending is not None:
            finish(*pending)
        pending = launched
    if pending is not None:
        finish(*pending)
    for k in sorted(buffers):
        writer.put(buffers.pop(k).finish(source, skip_bad))
    bar.close()
    expected = {int(i) // manifest.shard_size for i in ids}
    for k in sorted(expected - writer.received):  # shards whose every image failed to decode
        writer.put(_ShardBuffer(k, manifest, flip).finish(source, skip_bad))


class _ShardBuffer:
    """Rows of one shard as they arrive; ``finish`` checks for missing (undecodable) samples."""

    def __init__(self, index: int, manifest: Manifest, flip: bool):
        self.index = int(index)
        self.first, self.end = manifest.shard_range(index)
        self.manifest = manifest
        size = self.end - self.first
        self.embedding = np.zeros((size, manifest.embedding_dim), dtype=manifest.dtype)
        self.embedding_flip = np.zeros_like(self.embedding) if flip else None
        self.present = np.zeros(size, dtype=bool)

    def add(self, sample_ids, embeddings, flipped):
        rows = sample_ids - self.first
        if np.any(self.present[rows]):
            raise StoreError(f"shard {self.index}: sample_id delivered twice (pipeline bug)")
        self.present[rows] = True
        self.embedding[rows] = embeddings
        if self.embedding_flip is not None:
            self.embedding_flip[rows] = flipped

    def finish(self, source, skip_bad: bool) -> dict:
        skipped = []
        for row in np.flatnonzero(~self.present):
            sample_id = self.first + int(row)
            reason = why_unreadable(source, sample_id)
            if not skip_bad:
                raise DataError(f"{source.describe(sample_id)}: {reason} (sample_id {sample_id}; "
                                "use --skip-bad to record and skip unreadable images)")
            skipped.append({"sample_id": sample_id, "path": source.describe(sample_id), "reason": reason})
        keep = self.present
        ids = np.arange(self.first, self.end, dtype=np.int64)[keep]
        return {
            "index": self.index, "first_id": self.first, "expected": self.end - self.first,
            "sample_id": ids, "label": source.labels[ids].astype(np.int64),
            "embedding": self.embedding[keep],
            "embedding_flip": None if self.embedding_flip is None else self.embedding_flip[keep],
            "skipped": skipped,
        }


class _ShardWriter:
    """Writes finished shards on a background thread (write-behind), then records them."""

    def __init__(self, out: Path, manifest: Manifest):
        self.out = out
        self.manifest = manifest
        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.received: set[int] = set()
        self.thread = threading.Thread(target=self._loop, name="shard-writer", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def put(self, shard: dict) -> None:
        self._raise_if_failed()
        self.received.add(shard["index"])
        self.queue.put(shard)

    def __exit__(self, exc_type, exc, tb):
        self.queue.put(None)
        self.thread.join()
        if exc_type is None:
            self._raise_if_failed()
        return False

    def _raise_if_failed(self):
        if self.error is not None:
            raise self.error

    def _loop(self):
        while True:
            shard = self.queue.get()
            if shard is None:
                return
            if self.error is None:
                try:
                    self._write(shard)
                except BaseException as exc:  # reported to the main thread
                    self.error = exc

    def _write(self, shard: dict) -> None:
        """Build the HDF5 file in memory (HDF5 never meets a full disk, which could crash it),
        then write it atomically and record it with its SHA-256."""
        import h5py

        name = shard_name(shard["index"])
        buffer = io.BytesIO()
        with h5py.File(buffer, "w") as handle:
            handle.create_dataset("embedding", data=shard["embedding"])
            if shard["embedding_flip"] is not None:
                handle.create_dataset("embedding_flip", data=shard["embedding_flip"])
            handle.create_dataset("label", data=shard["label"])
            handle.create_dataset("sample_id", data=shard["sample_id"])
            handle.attrs["shard_index"] = shard["index"]
            handle.attrs["first_id"] = shard["first_id"]
            handle.attrs["expected"] = shard["expected"]
            handle.attrs["skipped"] = json.dumps(shard["skipped"])
        data = buffer.getvalue()
        atomic_write_bytes(self.out / name, data)
        with file_lock(self.out / LOCK_NAME):
            current = Manifest.load(self.out)
            current.shards[name] = {"first_id": shard["first_id"], "count": len(shard["sample_id"]),
                                    "expected": shard["expected"], "sha256": digest(data)}
            current.skipped = [s for s in current.skipped
                               if not shard["first_id"] <= s["sample_id"] < shard["first_id"] + shard["expected"]]
            current.skipped.extend(shard["skipped"])
            current.skipped.sort(key=lambda s: s["sample_id"])
            current.save(self.out)
