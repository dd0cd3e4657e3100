"""Conditioning of the teacher's space, and a measure of its shape.

Many teachers' L2-normalised embeddings sit in a narrow cone: dlib's face model puts every
face within ~17° of one direction (mean cosine 0.95 to the mean direction), so a student
that outputs one constant vector already scores an L2 distillation loss near its floor, and
the identity information lives in small deviations from the common direction. Subtracting
the training set's mean (and optionally whitening) turns those deviations into the space the
student has to match.

``fit_conditioning(store, mode)`` computes the transform from every stored embedding of the
training set (plain and, if stored, flipped), writes ``STORE/conditioning.npz`` and records it
in the manifest (mode, sample count, SHA-256). :class:`~distill.store.transform.Conditioning`
(re-exported here) then maps raw teacher
embeddings ``x`` to ``normalise((x − mean) @ matrix)``; the store's reader applies it wherever
targets are read (training tables, lookups), so embed and train see one definition.

Modes (``CONDITIONINGS``): ``none``; ``center`` (mean only, matrix = I); ``whiten``
(ZCA: matrix = U diag((λ + ε·mean λ)^−½) Uᵀ of the centred covariance, ε = ``shrinkage``).
"""
from __future__ import annotations

import hashlib
import io

import numpy as np

from distill.store.manifest import LOCK_NAME, Manifest, StoreError
from distill.store.reader import Store
from distill.store.transform import FILE_NAME, Conditioning  # noqa: F401  (re-exported)
from distill.utils import atomic_write_bytes, file_lock

#: a teacher space whose mean cosine to its mean direction exceeds this is called a cone
CONE_WARNING = 0.5


def _center(mean, covariance, shrinkage):
    return np.eye(mean.size)


def _whiten(mean, covariance, shrinkage):
    values, vectors = np.linalg.eigh(covariance)
    values = np.maximum(values, 0.0) + shrinkage * max(float(values.mean()), 1e-12)
    return vectors @ np.diag(values ** -0.5) @ vectors.T


#: mode → f(mean, covariance, shrinkage) → matrix
CONDITIONINGS = {"none": None, "center": _center, "whiten": _whiten}


def _moments(store) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean and covariance (float64) of every stored embedding, streamed shard by shard."""
    fields = ("embedding", "embedding_flip") if store.has_flip else ("embedding",)
    dim = store.manifest.embedding_dim
    total, outer, count = np.zeros(dim), np.zeros((dim, dim)), 0
    for shard in store.iter_shards(fields, conditioned=False):
        for field in fields:
            x = shard[field].astype(np.float64)
            total += x.sum(axis=0)
            outer += x.T @ x
            count += len(x)
    if count < 2:
        raise StoreError(f"{store.path}: {count} embeddings are too few to fit a conditioning")
    mean = total / count
    return mean, outer / count - np.outer(mean, mean), count


def fit_conditioning(store_dir, mode: str = "center", shrinkage: float = 0.1) -> Manifest:
    """Fit ``mode`` on the (complete) store and record it; ``none`` removes a conditioning."""
    if mode not in CONDITIONINGS:
        raise StoreError(f"unknown conditioning {mode!r}; available: {', '.join(CONDITIONINGS)}")
    if shrinkage < 0:
        raise StoreError(f"conditioning shrinkage must be ≥ 0, got {shrinkage}")
    store = Store(store_dir).require_complete()
    record = {"mode": "none"}
    if mode != "none":
        mean, covariance, count = _moments(store)
        matrix = CONDITIONINGS[mode](mean, covariance, shrinkage)
        buffer = io.BytesIO()
        np.savez(buffer, mean=mean, matrix=matrix)
        data = buffer.getvalue()
        atomic_write_bytes(store.path / FILE_NAME, data)
        record = {"mode": mode, "file": FILE_NAME, "samples": count,
                  "sha256": hashlib.sha256(data).hexdigest(),
                  **({"shrinkage": shrinkage} if mode == "whiten" else {})}
    with file_lock(store.path / LOCK_NAME):
        manifest = Manifest.load(store.path)
        manifest.conditioning = record
        manifest.save(store.path)
    return manifest


def space_shape(embeddings: np.ndarray, labels: np.ndarray, max_pairs: int = 200_000, seed: int = 0) -> dict:
    """How the (normalised) embeddings fill the sphere: mean cosine to their mean direction,
    mean cosine of same-label and of different-label pairs (sampled), and their gap in units
    of the different-label spread (a d′ of the space)."""
    x = np.asarray(embeddings, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    labels = np.asarray(labels)
    direction = x.mean(axis=0)
    direction /= max(np.linalg.norm(direction), 1e-12)
    rng = np.random.default_rng(seed)
    first, second = rng.integers(0, len(x), (2, max_pairs))
    keep = (first != second) & (labels[first] >= 0) & (labels[second] >= 0)
    first, second = first[keep], second[keep]
    cosines = np.sum(x[first] * x[second], axis=1)
    same = labels[first] == labels[second]
    same_cos = _same_label_cosines(x, labels, rng, max_pairs)
    diff_cos = cosines[~same]
    out = {"mean_cosine_to_mean_direction": float(np.mean(x @ direction)),
           "different_label_cosine": float(diff_cos.mean()) if diff_cos.size else float("nan"),
           "same_label_cosine": float(same_cos.mean()) if same_cos.size else float("nan")}
    spread = float(diff_cos.std()) if diff_cos.size > 1 else float("nan")
    out["separation"] = (out["same_label_cosine"] - out["different_label_cosine"]) / spread if spread else float("nan")
    return out


def _same_label_cosines(x, labels, rng, max_pairs):
    """Cosines of random same-label pairs (drawn within classes, so rare pairs are found)."""
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    sizes = np.diff(np.r_[starts, len(labels)])
    usable = (sizes >= 2) & (sorted_labels[starts] >= 0)
    if not usable.any():
        return np.zeros(0)
    classes = rng.choice(np.flatnonzero(usable), max_pairs // 4, p=sizes[usable] / sizes[usable].sum())
    a = starts[classes] + (rng.random(classes.size) * sizes[classes]).astype(int)
    b = starts[classes] + (rng.random(classes.size) * sizes[classes]).astype(int)
    keep = a != b
    return np.sum(x[order[a[keep]]] * x[order[b[keep]]], axis=1)
