"""IJB-B / IJB-C 1:1 template verification from the standard InsightFace meta files.

Layout (``<root>`` is e.g. ``IJB_release/IJBC``)::

    <root>/meta/<p>_face_tid_mid.txt          image name, template id, media id
    <root>/meta/<p>_name_5pts_score.txt       image name, 10 landmark coords (x1 y1 … x5 y5), score
    <root>/meta/<p>_template_pair_label.txt   template 1, template 2, label (1 = same)
    <root>/loose_crop/<image name>

with ``<p>`` = ``ijbb`` or ``ijbc``. Every face is aligned with :func:`distill.align.warp_face`
and embedded (by default with flip: embedding(face) + embedding(mirrored face)). As in the
InsightFace IJB script (defaults N1 D1 F1), image features keep their norm
(``normalize_images=False``) and are weighted by the detection score
(``use_detector_score=True``); a template is the sum over its media of the mean feature of
each media, L2-normalised; a pair's score is the cosine similarity of its two templates.
"""
from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from distill.align import warp_face
from distill.evals.metrics import far_key, roc_auc, roc_curve, tar_at_far

IJB_FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def _rows(path, n_fields: int, what: str):
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read {what} ({exc})") from None
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != n_fields:
            raise ValueError(f"{path}:{number}: expected {n_fields} fields ({what}), got {len(fields)}")
        yield number, fields


def read_face_tid_mid(path):
    """``*_face_tid_mid.txt`` → (image names, template ids int64, media ids int64)."""
    names, tids, mids = [], [], []
    for number, (name, tid, mid) in _rows(path, 3, "image name, template id, media id"):
        try:
            tids.append(int(tid))
            mids.append(int(mid))
        except ValueError:
            raise ValueError(f"{path}:{number}: template and media ids must be integers") from None
        names.append(name)
    if not names:
        raise ValueError(f"{path}: no faces listed")
    return names, np.array(tids, np.int64), np.array(mids, np.int64)


def read_landmarks(path) -> dict:
    """``*_name_5pts_score.txt`` → ``{image name: (landmarks float64 (5, 2), detection score)}``."""
    out = {}
    for number, fields in _rows(path, 12, "image name, 10 landmark coordinates, score"):
        try:
            values = np.array([float(v) for v in fields[1:]])
        except ValueError:
            raise ValueError(f"{path}:{number}: landmark coordinates and score must be numbers") from None
        if fields[0] in out:
            raise ValueError(f"{path}:{number}: image {fields[0]} is listed twice")
        out[fields[0]] = (values[:10].reshape(5, 2), float(values[10]))
    return out


def read_template_pairs(path):
    """``*_template_pair_label.txt`` → (template 1 ids, template 2 ids, bool labels)."""
    t1, t2, labels = [], [], []
    for number, fields in _rows(path, 3, "template 1, template 2, label"):
        try:
            a, b, label = (int(v) for v in fields)
        except ValueError:
            raise ValueError(f"{path}:{number}: template ids and label must be integers") from None
        if label not in (0, 1):
            raise ValueError(f"{path}:{number}: label must be 0 or 1, got {label}")
        t1.append(a)
        t2.append(b)
        labels.append(bool(label))
    if not labels:
        raise ValueError(f"{path}: no template pairs listed")
    return np.array(t1, np.int64), np.array(t2, np.int64), np.array(labels, bool)


def find_meta(root, prefix: str | None = None) -> dict:
    """Paths of the three meta files and the image folder under ``root`` (prefix auto-detected)."""
    root = Path(root)
    meta = root / "meta"
    if prefix is None:
        found = sorted(p.name[: -len("_face_tid_mid.txt")] for p in meta.glob("*_face_tid_mid.txt"))
        if len(found) != 1:
            raise ValueError(f"{meta}: expected exactly one *_face_tid_mid.txt, found {len(found)}")
        prefix = found[0]
    paths = {
        "prefix": prefix,
        "faces": meta / f"{prefix}_face_tid_mid.txt",
        "landmarks": meta / f"{prefix}_name_5pts_score.txt",
        "pairs": meta / f"{prefix}_template_pair_label.txt",
        "images": root / "loose_crop",
    }
    for key in ("faces", "landmarks", "pairs", "images"):
        if not paths[key].exists():
            raise ValueError(f"{paths[key]}: missing (IJB {key} file)")
    return paths


def load_aligned_face(path, landmarks) -> np.ndarray:
    """Read an image file at full resolution and warp it onto the 112×112 template."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(Path(path).read_bytes())) as image:
            rgb = np.asarray(image.convert("RGB"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read image ({exc})") from None
    return warp_face(rgb, landmarks)


def group_sums(values: np.ndarray, groups: np.ndarray):
    """Sum the rows of ``values`` per group → (sorted unique groups, sums, counts)."""
    order = np.argsort(groups, kind="stable")
    sorted_groups = groups[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_groups)) + 1]
    sums = np.add.reduceat(values[order], starts, axis=0)
    counts = np.diff(np.r_[starts, len(groups)])
    return sorted_groups[starts], sums, counts


def template_features(features, template_ids, media_ids):
    """Template = sum over its media of the mean feature of that media, L2-normalised.

    Returns (sorted unique template ids, features ``[n_templates, d]``).
    """
    features = np.asarray(features, np.float64)
    tids, mids = np.asarray(template_ids, np.int64), np.asarray(media_ids, np.int64)
    if not (len(features) == len(tids) == len(mids)):
        raise ValueError(f"{len(features)} features for {len(tids)} template ids and {len(mids)} media ids")
    media, media_key = np.unique(np.stack([tids, mids], axis=1), axis=0, return_inverse=True)
    keys, sums, counts = group_sums(features, media_key.ravel())  # keys = 0 … n_media-1
    templates, feats, _ = group_sums(sums / counts[:, None], media[keys, 0])
    return templates, feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)


def pair_scores(templates, feats, t1, t2, chunk: int = 100_000) -> np.ndarray:
    """Cosine scores of template pairs ``(t1[i], t2[i])``; error on a template without faces."""
    idx = []
    for name, ids in (("template 1", t1), ("template 2", t2)):
        pos = np.clip(np.searchsorted(templates, ids), 0, len(templates) - 1)
        missing = templates[pos] != ids
        if np.any(missing):
            k = int(np.argmax(missing))
            raise ValueError(f"pair {k + 1}: {name} id {int(ids[k])} has no faces in the face list")
        idx.append(pos)
    scores = np.empty(len(t1), np.float64)
    for start in range(0, len(t1), chunk):
        a, b = feats[idx[0][start : start + chunk]], feats[idx[1][start : start + chunk]]
        scores[start : start + chunk] = np.sum(a * b, axis=1)
    return scores


def image_features(embed_fn, image_dir, names, landmarks, batch_size=128, flip=True, chunk=2048, workers=None):
    """Aligned-face features ``[n, d]`` (flip: sum of plain and mirrored embeddings), in chunks."""
    from distill.evals.verification import embed_with_flip

    workers = workers or min(8, os.cpu_count() or 1)
    image_dir = Path(image_dir)
    out = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(names), chunk):
            part = names[start : start + chunk]
            faces = np.stack(list(pool.map(lambda n: load_aligned_face(image_dir / n, landmarks[n][0]), part)))
            plain, mirrored = embed_with_flip(embed_fn, faces, batch_size, flip)
            out.append(plain + mirrored if flip else plain)
    return np.concatenate(out).astype(np.float64)


def evaluate_ijb(
    embed_fn,
    root,
    prefix: str | None = None,
    batch_size: int = 128,
    flip: bool = True,
    normalize_images: bool = False,
    use_detector_score: bool = True,
    fars=IJB_FARS,
    tar_mode: str = "floor",
    roc: bool = False,
) -> dict:
    """IJB-B/C 1:1 verification → ``{"set", "templates", "pairs", "tar_at_far_1e-6", …, "auc"}``.

    ``tar_mode`` is passed to :func:`distill.evals.metrics.tar_at_far` (``"nearest"`` reproduces
    the InsightFace script). ``roc=True`` adds ``roc`` = ``(fpr, tpr)``.
    """
    paths = find_meta(root, prefix)
    names, tids, mids = read_face_tid_mid(paths["faces"])
    landmarks = read_landmarks(paths["landmarks"])
    for number, name in enumerate(names, start=1):
        if name not in landmarks:
            raise ValueError(f"{paths['faces']}:{number}: image {name} has no landmarks in {paths['landmarks']}")
    feats = image_features(embed_fn, paths["images"], names, landmarks, batch_size=batch_size, flip=flip)
    if normalize_images:
        feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    if use_detector_score:
        feats = feats * np.array([landmarks[n][1] for n in names])[:, None]
    templates, template_feats = template_features(feats, tids, mids)
    t1, t2, labels = read_template_pairs(paths["pairs"])
    try:
        scores = pair_scores(templates, template_feats, t1, t2)
    except ValueError as exc:
        raise ValueError(f"{paths['pairs']}: {exc}") from None
    result = {"set": paths["prefix"], "templates": int(templates.size), "pairs": int(labels.size)}
    for far, tar in tar_at_far(scores, labels, fars, mode=tar_mode).items():
        result[f"tar_at_far_{far_key(far)}"] = tar
    result["auc"] = roc_auc(scores, labels)
    if roc:
        fpr, tpr, _ = roc_curve(scores, labels)
        result["roc"] = (fpr, tpr)
    return result
