"""The recorded teacher-space conditioning as a transform the store's reader applies.

``STORE/conditioning.npz`` (written by :func:`distill.store.conditioning.fit_conditioning`)
holds ``mean`` and ``matrix``; the manifest records its mode and SHA-256.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distill.store.manifest import Manifest, StoreError

FILE_NAME = "conditioning.npz"


@dataclass(frozen=True)
class Conditioning:
    """``x ↦ normalise((x − mean) @ matrix)``; identity when ``mode == "none"``."""

    mode: str
    mean: np.ndarray | None = None
    matrix: np.ndarray | None = None

    @property
    def is_identity(self) -> bool:
        return self.mode == "none"

    def apply_numpy(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if self.is_identity:
            return x
        y = (x - self.mean.astype(np.float32)) @ self.matrix.astype(np.float32)
        return y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)

    @classmethod
    def load(cls, store_dir, manifest: Manifest) -> "Conditioning":
        record = manifest.conditioning or {"mode": "none"}
        if record["mode"] == "none":
            return cls("none")
        path = Path(store_dir) / record.get("file", FILE_NAME)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise StoreError(f"{path}: conditioning recorded in the manifest cannot be read "
                             f"({exc.strerror}); rerun `distill store condition`") from None
        if hashlib.sha256(data).hexdigest() != record.get("sha256"):
            raise StoreError(f"{path}: does not match the SHA-256 in the manifest (changed or "
                             "damaged); rerun `distill store condition`")
        with np.load(io.BytesIO(data)) as arrays:
            return cls(record["mode"], arrays["mean"], arrays["matrix"])
