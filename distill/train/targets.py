"""Teacher targets read per batch from the store's shards, never as a whole table.

``data.targets`` (``TARGET_MODES``) picks how :func:`open_targets` serves them:

* ``memory``: the whole table (and the flipped one) as tensors (:class:`TeacherTargets`);
* ``pread``: each batch's rows read from the shard files at the contiguous HDF5 datasets'
  byte offsets (``os.pread``): resident memory stays flat whatever the store's size, only the
  rows asked for are read (the flipped row where the image was flipped), and the OS page
  cache is shared by the workers of one machine;
* ``mmap``: the same datasets memory-mapped (faster lookups, but every page touched counts
  in the process's resident set);
* ``auto``: ``memory`` when the tables fit in ``AUTO_MEMORY_BYTES``, else ``pread``.

Every row is checked as it is read (finite, unit norm: :func:`distill.store.integrity.bad_row`)
and each shard file against the SHA-256 in the manifest when it is opened; a bad one stops the
run naming the shard and the sample_id (kept in ``failure`` for the trainer to report, since an
error raised inside tf.data reaches it wrapped). Rows pass through the store's conditioning (:meth:`Conditioning.apply_numpy`, cast back to
the store dtype) exactly as :meth:`Store.load_table` does, so every mode gives the same
targets. A dataset that is not contiguous (chunked or compressed; shards written by
:mod:`distill.store.writer` never are) is read into memory, one shard at a time.
"""
from __future__ import annotations

import logging
import os

import numpy as np

from distill.store.integrity import bad_row, bad_row_message, check_shard_file
from distill.store.manifest import StoreError
from distill.train.pipeline import TeacherTargets
from distill.utils import first_line

log = logging.getLogger(__name__)

TARGET_MODES = ("auto", "memory", "pread", "mmap")
#: ``auto`` keeps tables up to this many bytes (plain + flipped) in memory
AUTO_MEMORY_BYTES = 1 << 30


def table_bytes(manifest) -> int:
    """Bytes of the whole target table(s) of a store: rows × dim × dtype size × (1 or 2)."""
    fields = 2 if manifest.flip else 1
    return manifest.num_samples * manifest.embedding_dim * np.dtype(manifest.dtype).itemsize * fields


def open_targets(store, source, mode: str = "auto"):
    """Targets of ``store`` for training on ``source`` (fingerprints must match)."""
    if mode not in TARGET_MODES:
        raise ValueError(f"data.targets must be one of {', '.join(TARGET_MODES)}, got {mode!r}")
    if mode == "auto":
        mode = "memory" if table_bytes(store.manifest) <= AUTO_MEMORY_BYTES else "pread"
    if mode == "memory":
        return TeacherTargets(store, source).build()
    return ShardTargets(store, source, mapped=mode == "mmap").build()


class ShardTargets(TeacherTargets):
    """Targets looked up per batch in the shard files; see the module docstring."""

    def __init__(self, store, source, mapped: bool = False):
        super().__init__(store, source)
        self.mapped = mapped
        self._fds: list[int] = []
        self.failure = None

    def build(self):
        """Open every shard once: offsets (or maps) of its embedding datasets, which rows it holds."""
        import h5py

        manifest = self.store.manifest
        self.dtype = np.dtype(manifest.dtype)
        self.fields = ("embedding", "embedding_flip") if self.store.has_flip else ("embedding",)
        self.row_bytes = self.dim * self.dtype.itemsize
        self.conditioning = self.store.conditioning
        num_keys = manifest.num_shards * len(self.fields)
        self._fd = np.full(num_keys, -1, dtype=np.int64)     # key = shard · fields + field
        self._offset = np.zeros(num_keys, dtype=np.int64)
        self._held: dict[int, np.ndarray] = {}               # key → rows (maps, or non-contiguous data)
        self.present = np.zeros(manifest.num_samples, dtype=bool)
        self._shard_first = np.zeros(manifest.num_shards, dtype=np.int64)
        skipped, self._paths = [], self.store.shard_paths()
        for k, path in enumerate(self._paths):
            first, end = manifest.shard_range(k)
            self._shard_first[k] = first
            check_shard_file(path, manifest)
            fd = os.open(path, os.O_RDONLY)
            self._fds.append(fd)
            try:
                with h5py.File(path, "r") as handle:
                    ids = handle["sample_id"][...]
                    for f, name in enumerate(self.fields):
                        self._open_dataset(k * len(self.fields) + f, path, fd, handle[name])
            except (OSError, KeyError, ValueError) as exc:
                raise StoreError(f"{path}: not a readable shard ({first_line(exc)}); delete it and "
                                 "rerun the same `distill embed` command to redo it") from None
            self.present[ids] = True
            if len(ids) != end - first:
                skipped.append(np.setdiff1d(np.arange(first, end), ids))
        self._skipped = np.concatenate(skipped) if skipped else np.zeros(0, np.int64)
        self._skipped_before = np.searchsorted(self._skipped, self._shard_first)
        if self._held and not self.mapped:
            log.info("%s: %d dataset(s) are not contiguous and are held in memory", self.store.path,
                     len(self._held))
        return self

    def _open_dataset(self, key: int, path, fd: int, dataset) -> None:
        if len(dataset.shape) != 2 or dataset.shape[1] != self.dim:
            raise StoreError(f"{path}: {dataset.name.lstrip('/')} has shape {dataset.shape}, expected "
                             f"(rows, {self.dim}); rerun `distill embed` to redo the shard")
        offset = dataset.id.get_offset() if dataset.shape[0] else None
        contiguous = dataset.chunks is None and dataset.compression is None and offset is not None
        if not dataset.shape[0]:
            self._held[key] = np.zeros((0, self.dim), self.dtype)
        elif not contiguous or dataset.dtype != self.dtype:
            self._held[key] = dataset[...].astype(self.dtype)
        elif self.mapped:
            self._held[key] = np.memmap(path, dtype=self.dtype, mode="r", offset=offset,
                                        shape=dataset.shape).view(np.ndarray)
        else:
            self._fd[key], self._offset[key] = fd, offset

    def rows(self, sample_ids, flipped=None) -> np.ndarray:
        """Conditioned targets [B, D] in the store dtype: the flipped row where ``flipped``."""
        sample_ids = np.asarray(sample_ids, dtype=np.int64)
        shard = sample_ids // self.store.manifest.shard_size
        row = (sample_ids - self._shard_first[shard]
               - (np.searchsorted(self._skipped, sample_ids) - self._skipped_before[shard]))
        key = shard * len(self.fields)
        if flipped is not None and len(self.fields) == 2:
            key = key + np.asarray(flipped, dtype=np.int64)
        held = self._fd[key] < 0
        if not held.any():
            out = self._pread(key, row)
        else:
            out = np.empty((len(sample_ids), self.dim), self.dtype)
            _gather_held(out, self._held, key, row, np.flatnonzero(held))
            if not held.all():
                where = np.flatnonzero(~held)
                out[where] = self._pread(key[where], row[where])
        self._check(out, sample_ids, shard)
        if not self.conditioning.is_identity:
            out = self.conditioning.apply_numpy(out).astype(self.dtype)
        return out

    def _check(self, out, sample_ids, shard) -> None:
        """Refuse an unsound raw row, naming its shard and sample_id (kept in ``failure``)."""
        found = bad_row(out, self.store.manifest.dtype)
        if found is not None:
            i, what = found
            self.failure = StoreError(bad_row_message(self._paths[int(shard[i])], int(sample_ids[i]), what))
            raise self.failure

    def _pread(self, key, row) -> np.ndarray:
        """Rows [len(key), D] read at their byte offsets, one ``pread`` each."""
        offsets = (self._offset[key] + row * self.row_bytes).tolist()
        pread, size = os.pread, self.row_bytes
        data = b"".join([pread(fd, size, at) for fd, at in zip(self._fd[key].tolist(), offsets)])
        return np.frombuffer(data, self.dtype).reshape(-1, self.dim)

    def gather(self, sample_id, flipped):
        """float32 targets of a batch inside a tf.data map (a NumPy call per batch)."""
        import tensorflow as tf

        out = tf.numpy_function(self.rows, [sample_id, flipped], tf.as_dtype(self.dtype), stateful=False)
        return tf.cast(tf.ensure_shape(out, [None, self.dim]), tf.float32)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def __del__(self):
        try:
            self.close()
        except (OSError, AttributeError, TypeError):
            pass


def _gather_held(out, held: dict, key, row, where) -> None:
    """``out[where] = held[key][row]``, one fancy index per (shard, field)."""
    order = where[np.argsort(key[where], kind="stable")]
    keys = key[order]
    cuts = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    for start, end in zip(np.r_[0, cuts], np.r_[cuts, len(order)]):
        chosen = order[start:end]
        out[chosen] = held[int(keys[start])][row[chosen]]
