"""Reading a store: manifest, per-shard arrays, and whole tables indexed by sample_id."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from distill.store.integrity import read_shard
from distill.store.manifest import Manifest, StoreError, shard_name
from distill.store.transform import Conditioning


class Store:
    """An embedding store folder opened for reading."""

    def __init__(self, path):
        self.path = Path(path)
        self.manifest = Manifest.load(self.path)

    def __len__(self) -> int:
        return self.manifest.num_samples

    @property
    def has_flip(self) -> bool:
        return bool(self.manifest.flip)

    def require_complete(self) -> "Store":
        if not self.manifest.is_complete():
            raise StoreError(f"{self.path}: store is incomplete ({len(self.manifest.shards)} of "
                             f"{self.manifest.num_shards} shards); rerun `distill embed` to finish it")
        return self

    def shard_paths(self):
        return [self.path / shard_name(k) for k in range(self.manifest.num_shards)
                if shard_name(k) in self.manifest.shards]

    @property
    def conditioning(self):
        """The teacher-space conditioning recorded in the manifest (identity if none)."""
        if not hasattr(self, "_conditioning"):
            self._conditioning = Conditioning.load(self.path, self.manifest)
        return self._conditioning

    def iter_shards(self, fields=("sample_id", "label", "embedding"), conditioned: bool = True):
        """Yield a dict of arrays per complete shard, in sample_id order; embedding fields
        pass through the store's conditioning unless ``conditioned=False``. Each shard is
        checked first (SHA-256, raw rows: :func:`distill.store.integrity.read_shard`)."""
        for path in self.shard_paths():
            arrays = read_shard(path, fields, self.manifest)
            if conditioned and not self.conditioning.is_identity:
                for name in fields:
                    if name.startswith("embedding"):
                        arrays[name] = self.conditioning.apply_numpy(arrays[name]).astype(arrays[name].dtype)
            yield arrays

    def load_table(self, field: str = "embedding", dtype=np.float32):
        """``(table [num_samples, D], present [num_samples] bool)``: rows by sample_id,
        conditioned as recorded in the manifest.

        Rows of skipped samples are zero and ``present`` is False there.
        """
        if field == "embedding_flip" and not self.has_flip:
            raise StoreError(f"{self.path}: store has no embedding_flip (embed with --flip)")
        self.require_complete()
        table = np.zeros((self.manifest.num_samples, self.manifest.embedding_dim), dtype=dtype)
        present = np.zeros(self.manifest.num_samples, dtype=bool)
        for shard in self.iter_shards(("sample_id", field)):
            table[shard["sample_id"]] = shard[field]
            present[shard["sample_id"]] = True
        return table, present

    def lookup(self, sample_ids, field: str = "embedding", dtype=np.float32) -> np.ndarray:
        """Embeddings of the given sample_ids (read shard by shard; no full table in memory)."""
        sample_ids = np.asarray(sample_ids, dtype=np.int64)
        result = np.zeros((len(sample_ids), self.manifest.embedding_dim), dtype=dtype)
        shards = sample_ids // self.manifest.shard_size
        for k in np.unique(shards):
            rows = np.flatnonzero(shards == k)
            arrays = read_shard(self.path / shard_name(int(k)), ("sample_id", field), self.manifest)
            stored_ids, values = arrays["sample_id"], arrays[field]
            positions = np.minimum(np.searchsorted(stored_ids, sample_ids[rows]), len(stored_ids) - 1)
            if len(stored_ids) == 0 or np.any(stored_ids[positions] != sample_ids[rows]):
                raise StoreError(f"{self.path}: sample_id(s) missing from shard {int(k)}")
            result[rows] = values[positions]
        return result if self.conditioning.is_identity else self.conditioning.apply_numpy(result).astype(dtype)
