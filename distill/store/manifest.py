"""The store manifest: what was embedded, with what, how, and which shards are complete.

``STORE/manifest.json`` is rewritten atomically (temp file + rename) after every shard;
``STORE/listing.tsv`` holds the dataset listing (``path<TAB>label`` by sample_id).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from distill.utils import atomic_write_json

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
LISTING_NAME = "listing.tsv"
LOCK_NAME = ".manifest.lock"
DTYPES = ("float16", "float32")


class StoreError(ValueError):
    """A store that is missing, inconsistent, or does not match the requested run."""


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.h5"


@dataclass
class Manifest:
    """Everything needed to trust and reuse a store; see the module docstring."""

    num_samples: int
    num_classes: int
    class_names: list
    source: dict                 # kind, root, fingerprint, listing file
    teacher: dict                # kind, source, sha256, embedding_dim, preprocess
    embedding_dim: int
    dtype: str
    flip: bool
    shard_size: int
    input_normalization: dict    # the teacher's (mean, std, channel order, layout)
    embedding_normalization: str = "l2"
    shards: dict = field(default_factory=dict)   # name → {"first_id", "count", "expected", "sha256"}
    skipped: list = field(default_factory=list)  # [{"sample_id", "path", "reason"}]
    conditioning: dict = field(default_factory=lambda: {"mode": "none"})  # see store.conditioning
    format_version: int = FORMAT_VERSION

    @property
    def num_shards(self) -> int:
        return -(-self.num_samples // self.shard_size) if self.num_samples else 0

    def shard_range(self, index: int) -> tuple[int, int]:
        start = index * self.shard_size
        return start, min(self.num_samples, start + self.shard_size)

    def settings(self) -> dict:
        """The fields that must match for a rerun to continue this store."""
        return {
            "source fingerprint": self.source.get("fingerprint"),
            "number of samples": self.num_samples,
            "teacher sha256": self.teacher.get("sha256"),
            "teacher preprocessing": self.teacher.get("preprocess"),
            "dtype": self.dtype,
            "flip": self.flip,
            "shard size": self.shard_size,
        }

    def to_dict(self) -> dict:
        data = asdict(self)
        data["num_shards"] = self.num_shards
        data["complete"] = self.is_complete()
        return data

    def is_complete(self) -> bool:
        return len(self.shards) == self.num_shards

    def save(self, store_dir) -> None:
        atomic_write_json(Path(store_dir) / MANIFEST_NAME, self.to_dict())

    @classmethod
    def load(cls, store_dir) -> "Manifest":
        path = Path(store_dir) / MANIFEST_NAME
        if not path.is_file():
            raise StoreError(f"{path}: no manifest (not an embedding store, or never started)")
        try:
            data = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:   # ValueError: JSON or UTF-8
            raise StoreError(f"{path}: manifest is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise StoreError(f"{path}: manifest must be a JSON object, got {type(data).__name__}")
        data.pop("num_shards", None)
        data.pop("complete", None)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise StoreError(f"{path}: unknown manifest field(s) {', '.join(unknown)}")
        try:
            manifest = cls(**data)
        except TypeError as exc:
            raise StoreError(f"{path}: incomplete manifest ({exc})") from None
        from distill.store.integrity import manifest_problem

        problem = manifest_problem(manifest)
        if problem:
            raise StoreError(f"{path}: damaged manifest ({problem}); restore it, or rebuild the store "
                             "with the same `distill embed` command plus --overwrite")
        return manifest
