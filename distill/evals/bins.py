"""InsightFace ``.bin`` verification sets (LFW, CFP-FP, AgeDB-30, …): safe loading and writing.

A ``.bin`` file is a pickle of ``(bins, issame_list)``: ``2N`` encoded images (the two images
of pair ``i`` at ``2i`` and ``2i + 1``) and ``N`` booleans. Pickles can run code, so loading
uses a bounded, restricted unpickler (:mod:`distill.safe_pickle`).
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distill.data.preprocess import INPUT_SIZE
from distill.safe_pickle import safe_unpickle
from distill.utils import atomic_write_bytes, remove_temporaries

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


@dataclass
class VerificationSet:
    """A pair-verification set: ``images[2i]`` and ``images[2i+1]`` form pair ``i``."""

    name: str
    images: np.ndarray  # uint8 [2N, H, W, 3]
    issame: np.ndarray  # bool [N]
    source: str = ""    # the file it was read from (.bin or pairs file), named in errors

    def __len__(self) -> int:
        return int(self.issame.size)


def read_bin(path) -> tuple[list[bytes], np.ndarray]:
    """Read and validate a ``.bin`` file → (encoded images, issame bool array), without decoding."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror})") from None
    obj = safe_unpickle(data, str(path))
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise ValueError(f"{path}: expected a pickled (bins, issame_list) pair, got {type(obj).__name__}")
    bins, issame = obj
    if not isinstance(bins, (list, tuple)) or not isinstance(issame, (list, tuple)):
        raise ValueError(f"{path}: bins and issame_list must be lists")
    for index, item in enumerate(bins):
        if not isinstance(item, (bytes, bytearray)):
            raise ValueError(f"{path}: image {index} is {type(item).__name__}, expected encoded bytes")
    if len(bins) % 2:
        raise ValueError(f"{path}: odd number of images ({len(bins)}); pairs need two images each")
    if len(issame) != len(bins) // 2:
        raise ValueError(
            f"{path}: {len(issame)} issame labels for {len(bins)} images (expected {len(bins) // 2})"
        )
    for index, label in enumerate(issame):
        if not isinstance(label, bool):
            shown = f" {label!r}" if isinstance(label, (int, float, str, bytes)) else ""
            raise ValueError(f"{path}: issame[{index}] is {type(label).__name__}{shown[:40]}, expected bool")
    return [bytes(item) for item in bins], np.array(issame, dtype=bool)


def decode_images(encoded, size=INPUT_SIZE, source: str = "images", names=None) -> np.ndarray:
    """Decode encoded images to uint8 ``[n, H, W, 3]``; an error names ``source`` and the index (or ``names[i]``)."""
    import tensorflow as tf

    from distill.data.images import decode_and_resize, decode_image_bytes

    height, width = size
    if not encoded:
        return np.zeros((0, height, width, 3), np.uint8)
    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(list(encoded), dtype=tf.string))
    dataset = dataset.map(lambda x: decode_and_resize(x, size), num_parallel_calls=tf.data.AUTOTUNE)
    out = np.empty((len(encoded), height, width, 3), np.uint8)
    try:
        start = 0
        for batch in dataset.batch(256).prefetch(2):
            out[start : start + batch.shape[0]] = batch.numpy()
            start += batch.shape[0]
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError):
        for index, data in enumerate(encoded):  # slow path, only to name the broken image
            label = f"{source}: image {index}" if names is None else str(names[index])
            decode_image_bytes(data, size, source=label)
        raise
    return out


def load_bin(path, image_size=INPUT_SIZE) -> VerificationSet:
    """Load an InsightFace ``.bin`` verification set (name = file stem), decoding to uint8 RGB."""
    path = Path(path)
    encoded, issame = read_bin(path)
    if not issame.size:
        raise ValueError(f"{path}: holds no pairs; a verification set needs same and different pairs")
    if issame.all() or not issame.any():
        kind = "same-person" if issame.all() else "different-person"
        raise ValueError(f"{path}: all {issame.size} pairs are {kind} pairs; a verification set needs "
                         "both kinds (rebuild it with `distill make-bin`)")
    images = decode_images(encoded, tuple(image_size), source=str(path))
    return VerificationSet(name=path.stem, images=images, issame=issame, source=str(path))


def save_bin(bins, issame, path) -> Path:
    """Write ``(bins, issame)`` as an InsightFace ``.bin`` pickle, atomically (temp file + rename)."""
    path = Path(path)
    bins = [bytes(item) for item in bins]
    issame = [bool(label) for label in np.asarray(issame, dtype=bool).ravel()]
    if len(bins) != 2 * len(issame):
        raise ValueError(f"{path}: {len(bins)} images for {len(issame)} pairs (expected {2 * len(issame)})")
    remove_temporaries(path.parent, f".{path.name}.")   # left by an interrupted earlier write
    atomic_write_bytes(path, pickle.dumps((bins, issame), protocol=4))
    return path


def list_class_images(source_dir) -> list[tuple[str, list[Path]]]:
    """Class-per-folder tree → ``[(class name, sorted image files)]`` in sorted folder order."""
    root = Path(source_dir)
    if not root.is_dir():
        raise ValueError(f"{root}: not a directory")
    classes = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if files:
            classes.append((folder.name, files))
    if not classes:
        raise ValueError(f"{root}: no class folders with images ({', '.join(IMAGE_EXTENSIONS)})")
    return classes


def fold_order(issame, n_folds: int = 10) -> np.ndarray:
    """Indices that lay pairs out fold by fold: contiguous fold ``k`` of ``n_folds`` takes the
    k-th share of the matched pairs (in their order), then the k-th share of the mismatched
    ones — the layout of LFW View 2 and InsightFace's ``.bin`` files. Too few of a kind to
    fill the folds: the order is kept."""
    issame = np.asarray(issame, dtype=bool)
    same, diff = np.flatnonzero(issame), np.flatnonzero(~issame)
    if min(same.size, diff.size) < n_folds:
        return np.arange(issame.size)
    parts = []
    for fold in range(n_folds):
        for group in (same, diff):
            parts.append(group[fold * group.size // n_folds:(fold + 1) * group.size // n_folds])
    return np.concatenate(parts)


def sample_pairs(labels, n_pairs: int, seed: int = 0) -> list[tuple[int, int, bool]]:
    """``n_pairs/2`` distinct same-class and ``n_pairs/2`` distinct different-class pairs, in a
    random order laid out fold by fold (:func:`fold_order`).

    ``labels[k]`` is the class of image ``k``; each pair is ``(k1, k2, issame)`` with ``k1 < k2``,
    drawn uniformly without repetition; deterministic for a given seed.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if n_pairs < 2 or n_pairs % 2:
        raise ValueError(f"number of pairs must be a positive even number, got {n_pairs}")
    half = n_pairs // 2
    sizes = np.bincount(labels)
    n_same = int(np.sum(sizes * (sizes - 1) // 2))
    n_diff = int((labels.size * (labels.size - 1)) // 2 - n_same)
    if half > n_same:
        raise ValueError(f"asked for {half} same-person pairs but only {n_same} exist")
    if half > n_diff:
        raise ValueError(f"asked for {half} different-person pairs but only {n_diff} exist")
    rng = np.random.default_rng(seed)
    if labels.size * (labels.size - 1) // 2 <= _ENUMERATE_LIMIT:
        first, second = np.triu_indices(labels.size, k=1)
        is_same = labels[first] == labels[second]
        picks = [rng.choice(np.flatnonzero(is_same == flag), size=half, replace=False) for flag in (True, False)]
        chosen = np.concatenate(picks)
        pairs = [(int(first[k]), int(second[k]), bool(is_same[k])) for k in chosen]
    else:
        pairs = _rejection_pairs(rng, labels, sizes, half)
    pairs = [pairs[i] for i in rng.permutation(len(pairs))]
    return [pairs[i] for i in fold_order([same for _, _, same in pairs])]


_ENUMERATE_LIMIT = 4_000_000


def _rejection_pairs(rng, labels, sizes, half):
    """Uniform distinct pairs by rejection, for trees too large to enumerate (sparse requests)."""
    members = [np.flatnonzero(labels == c) for c in range(sizes.size)]
    weights = sizes * (sizes - 1) / 2.0
    weights = weights / weights.sum()
    out, seen = [], set()
    for flag in (True, False):
        count = 0
        while count < half:
            if flag:
                cls = int(rng.choice(sizes.size, p=weights))
                a, b = (int(v) for v in rng.choice(members[cls], size=2, replace=False))
            else:
                a, b = (int(v) for v in rng.integers(labels.size, size=2))
                if labels[a] == labels[b]:
                    continue
            key = (min(a, b), max(a, b))
            if key not in seen:
                seen.add(key)
                out.append((key[0], key[1], flag))
                count += 1
    return out


def make_bin(source_dir, out_path, n_pairs: int = 600, seed: int = 0) -> Path:
    """Build a balanced same/different ``.bin`` from a class-per-folder tree (original file bytes).

    Folders and files are taken in sorted order; every used image is decoded once as a check
    before the file is written (atomically).
    """
    classes = list_class_images(source_dir)
    files = [path for _, paths in classes for path in paths]
    labels = np.repeat(np.arange(len(classes)), [len(paths) for _, paths in classes])
    pairs = sample_pairs(labels, n_pairs, seed)
    used = sorted({k for a, b, _ in pairs for k in (a, b)})
    data = {}
    for k in used:
        try:
            data[k] = files[k].read_bytes()
        except OSError as exc:
            raise ValueError(f"{files[k]}: cannot read ({exc.strerror})") from None
    decode_images([data[k] for k in used], source=str(source_dir), names=[files[k] for k in used])
    bins = [data[k] for a, b, _ in pairs for k in (a, b)]
    return save_bin(bins, [same for _, _, same in pairs], out_path)
