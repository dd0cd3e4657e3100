"""The store manifest: what was embedded, with what, how, and which shards are complete.

``STORE/manifest.json`` is rewritten atomically (temp file + rename) after every shard;
``STORE/listing.tsv`` holds the dataset listing (``path<TAB>label`` by sample_id). A loaded
manifest whose fields have the wrong kind of value is refused (:func:`manifest_problem`).
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
        problem = manifest_problem(manifest)
        if problem:
            raise StoreError(f"{path}: damaged manifest ({problem}); restore it, or rebuild the store "
                             "with the same `distill embed` command plus --overwrite")
        return manifest


def _whole(minimum):
    return lambda v: not isinstance(v, bool) and isinstance(v, int) and v >= minimum


_FIELDS = {   # field → (test, what it must be)
    "num_samples": (_whole(0), "a whole number ≥ 0"),
    "num_classes": (_whole(0), "a whole number ≥ 0"),
    "embedding_dim": (_whole(1), "a whole number ≥ 1"),
    "shard_size": (_whole(1), "a whole number ≥ 1"),
    "dtype": (lambda v: v in DTYPES, f"one of {', '.join(DTYPES)}"),
    "flip": (lambda v: isinstance(v, bool), "true or false"),
    "class_names": (lambda v: isinstance(v, list), "a list"),
    "source": (lambda v: isinstance(v, dict) and isinstance(v.get("listing", ""), str), "an object"),
    "teacher": (lambda v: isinstance(v, dict), "an object"),
    "input_normalization": (lambda v: isinstance(v, dict), "an object"),
    "shards": (lambda v: isinstance(v, dict) and all(
        isinstance(e, dict) and _whole(0)(e.get("first_id")) and _whole(0)(e.get("count"))
        for e in v.values()), "an object of {first_id, count} entries"),
    "skipped": (lambda v: isinstance(v, list) and all(
        isinstance(e, dict) and _whole(0)(e.get("sample_id")) for e in v), "a list of {sample_id, …} entries"),
    "conditioning": (lambda v: isinstance(v, dict) and isinstance(v.get("mode", "none"), str), "an object"),
}


def manifest_problem(manifest) -> str | None:
    """The first field of a loaded manifest that has the wrong kind of value, in words."""
    for name, (test, what) in _FIELDS.items():
        value = getattr(manifest, name)
        if not test(value):
            return f"field '{name}' must be {what}, got {str(value)[:60]!r}"
    return None
