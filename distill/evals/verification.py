"""Pair-verification evaluation of embedding models on :class:`VerificationSet` s.

An *embed_fn* maps a uint8 RGB NHWC NumPy batch to float embeddings ``[n, d]``.
:func:`evaluate_set` returns one flat dict: with ``flip=True`` the plain metric names
(``accuracy``, ``accuracy_std``, ``tar_at_far_1e-3`` …) are the flip-test results
(embedding(image) + embedding(mirrored image), then L2-normalised) and the same metrics
without flip carry a ``noflip_`` prefix; with ``flip=False`` only the plain names exist.
Keys ``flip`` (bool) and ``pairs`` (int) are always present.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from distill.evals.bins import VerificationSet, load_bin
from distill.evals.metrics import verification_metrics


def embed_images(embed_fn, images_uint8, batch_size: int = 128) -> np.ndarray:
    """Embed ``images_uint8`` (uint8 ``[n, H, W, 3]``) in batches → float32 ``[n, d]``."""
    images = np.asarray(images_uint8)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images: expected uint8 [n, H, W, 3], got {images.dtype} {images.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    chunks = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        out = np.asarray(embed_fn(batch), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(batch):
            raise ValueError(
                f"embed_fn returned shape {out.shape} for a batch of {len(batch)} images (images {start}…); "
                "expected [batch, dim]"
            )
        if not np.all(np.isfinite(out)):
            raise ValueError(f"embed_fn returned NaN or inf for images {start}…{start + len(batch) - 1}")
        chunks.append(out)
    if not chunks:
        raise ValueError("images: nothing to embed")
    return np.concatenate(chunks)


def unique_images(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(first index of each distinct image, index into those for every image)``: pair sets
    repeat their images (LFW View 2 lists ~7,700 distinct photos in 12,000 slots), and a slow
    teacher should embed each once."""
    import hashlib

    seen: dict[bytes, int] = {}
    keep, inverse = [], np.empty(len(images), dtype=np.int64)
    for i, image in enumerate(images):
        digest = hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest()
        if digest not in seen:
            seen[digest] = len(keep)
            keep.append(i)
        inverse[i] = seen[digest]
    return np.asarray(keep, dtype=np.int64), inverse


def embed_with_flip(embed_fn, images_uint8, batch_size: int = 128, flip: bool = True):
    """``(embeddings, flipped-image embeddings or None)``; each distinct image is embedded once."""
    images = np.asarray(images_uint8)
    keep, inverse = unique_images(images)
    distinct = images[keep]
    plain = embed_images(embed_fn, distinct, batch_size)[inverse]
    mirrored = (embed_images(embed_fn, np.ascontiguousarray(distinct[:, :, ::-1]), batch_size)[inverse]
                if flip else None)
    return plain, mirrored


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def evaluate_set(embed_fn, vset: VerificationSet, batch_size: int = 128, flip: bool = True, roc: bool = False) -> dict:
    """Verification metrics of ``embed_fn`` on ``vset`` (see the module docstring for the keys).

    With ``roc=True`` the result also has ``roc`` = ``(fpr, tpr)`` (of the flip result if flip).
    """
    if vset.images.shape[0] != 2 * vset.issame.size:
        raise ValueError(f"{vset.name}: {vset.images.shape[0]} images for {vset.issame.size} pairs")
    plain, mirrored = embed_with_flip(embed_fn, vset.images, batch_size, flip)
    where = vset.source or vset.name
    noflip = verification_metrics(plain[0::2], plain[1::2], vset.issame, roc=roc and not flip, name=where)
    if not flip:
        return {"flip": False, **noflip}
    combined = _l2(plain + mirrored)  # InsightFace: sum of raw embeddings, then L2-normalise
    flipped = verification_metrics(combined[0::2], combined[1::2], vset.issame, roc=roc, name=where)
    result = {"flip": True, **flipped}
    result.update({f"noflip_{k}": v for k, v in noflip.items() if k != "pairs"})
    return result


def evaluate_sets(embed_fn, sets, batch_size: int = 128, flip: bool = True, roc: bool = False) -> dict:
    """``{set name: evaluate_set(...)}`` for each :class:`VerificationSet` in ``sets``."""
    results = {}
    for vset in sets:
        if vset.name in results:
            raise ValueError(f"two verification sets are named {vset.name!r}; names must be unique")
        results[vset.name] = evaluate_set(embed_fn, vset, batch_size=batch_size, flip=flip, roc=roc)
    return results


def _model_input(model):
    """``(batch or None, height, width)`` of a model's single image input."""
    shape = None
    try:
        if getattr(model, "inputs", None):
            shape = tuple(model.inputs[0].shape)
        elif getattr(model, "input_shape", None) is not None:
            shape = tuple(model.input_shape)
    except (AttributeError, ValueError, TypeError):
        shape = None
    if shape is None or len(shape) != 4:
        raise ValueError(f"model input must be an NHWC image batch, got input shape {shape}")
    if shape[-1] not in (None, 3):
        raise ValueError(f"model input must have 3 channels (RGB, NHWC), got input shape {shape}")
    return shape[0], shape[1], shape[2]


def keras_embed_fn(model, batch_size: int | None = None):
    """Wrap a Keras embedding model (input: normalised float32 NHWC) as a compiled uint8 ``embed_fn``.

    Inputs are normalised with :func:`distill.data.preprocess.normalize`. A model with a fixed
    batch dimension is fed exactly that many images per call (the last batch padded);
    otherwise batches of at most ``batch_size`` (if given) are used.
    """
    import tensorflow as tf

    from distill.data.preprocess import normalize

    fixed_batch, height, width = _model_input(model)
    if fixed_batch is not None:
        step = int(fixed_batch)
    else:
        step = int(batch_size) if batch_size else None

    @tf.function(
        input_signature=[tf.TensorSpec([fixed_batch, height, width, 3], tf.uint8)],
        reduce_retracing=True,
    )
    def run(images):
        out = model(normalize(images), training=False)
        if isinstance(out, dict):
            if len(out) != 1:
                raise ValueError(f"model returns {len(out)} outputs {sorted(out)}; expected one embedding")
            out = next(iter(out.values()))
        elif isinstance(out, (list, tuple)):
            if len(out) != 1:
                raise ValueError(f"model returns {len(out)} outputs; expected one embedding")
            out = out[0]
        return tf.cast(out, tf.float32)

    def embed_fn(images_uint8):
        images = np.asarray(images_uint8, dtype=np.uint8)
        if (height is not None and images.shape[1] != height) or (width is not None and images.shape[2] != width):
            raise ValueError(f"images are {images.shape[1]}x{images.shape[2]} but the model expects {height}x{width}")
        n = len(images)
        chunk = step or max(n, 1)
        outputs = []
        for start in range(0, n, chunk):
            batch = images[start : start + chunk]
            real = len(batch)
            if fixed_batch is not None and real < chunk:
                batch = np.concatenate([batch, np.zeros((chunk - real,) + batch.shape[1:], np.uint8)])
            outputs.append(run(tf.constant(batch)).numpy()[:real])
        return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)

    return embed_fn


def model_embed_fn(spec, batch_size: int = 128):
    """A uint8 ``embed_fn`` for any model file: Keras/.h5/SavedModel, ONNX, TFLite, or a plugin
    ``module:function``, run by the project's one model runtime (:func:`teachers.load_teacher`,
    each with its declared input contract); ``embed_images`` feeds it ``batch_size`` at a time."""
    from teachers import TeacherError, load_teacher

    try:
        teacher = load_teacher(spec)
    except TeacherError as exc:
        raise ValueError(str(exc)) from None
    return lambda images: np.asarray(teacher.embed(images), dtype=np.float32)


def evaluate_models(
    model_paths,
    bin_paths=(),
    flip: bool = True,
    batch_size: int = 128,
    sets=(),
    roc: bool = False,
) -> list[dict]:
    """Evaluate each model on each set → long-format rows ``{"model", "set", **metrics}``.

    ``bin_paths`` are InsightFace ``.bin`` files; ``sets`` extra loaded
    :class:`VerificationSet` s (e.g. from :func:`distill.evals.pairs.load_pairs_set`). Rows are
    ordered model by model, sets in the given order; ``roc=True`` adds ``roc`` = ``(fpr, tpr)``.
    """
    all_sets = [load_bin(p) for p in bin_paths] + list(sets)
    if not all_sets:
        raise ValueError("no verification sets given (pass .bin files or a pairs file)")
    if not model_paths:
        raise ValueError("no models given")
    rows = []
    for model_path in model_paths:
        embed_fn = model_embed_fn(model_path, batch_size)
        results = evaluate_sets(embed_fn, all_sets, batch_size=batch_size, flip=flip, roc=roc)
        for name, metrics in results.items():
            rows.append({"model": str(model_path), "set": name, **metrics})
    return rows
