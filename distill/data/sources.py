"""Dataset sources: an ordered listing of samples (sample_id = position, label, encoded image).

Every source gives the same thing to the rest of the framework:

* ``len(source)``, ``source.labels`` (int64 array), ``source.class_names``;
* ``source.describe(i)`` – a human-readable name of sample ``i`` (a path) for errors;
* ``source.read_encoded(i)`` – the encoded image bytes of sample ``i``;
* ``source.encoded_dataset(sample_ids)`` – a ``tf.data`` dataset of
  ``(sample_id, encoded bytes)`` in the order given, reading in parallel;
* ``source.fingerprint()`` – a hash of the listing (names and labels, in order);
* ``source.write_listing(path)`` – the listing as a TSV file ``name<TAB>label``;
* ``source.content_files()`` (optional) – the files holding the images, for a content
  fingerprint (:mod:`distill.data.content`).

Sources are opened by :func:`open_source`, which picks a registered opener for the
given path (class-per-folder tree, CSV/TSV file list, ...).
"""
from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path
from typing import Callable

import numpy as np

from distill.registry import Registry

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


class DataError(ValueError):
    """Bad dataset input: the message names the file or folder and what is wrong."""


class ListedSource:
    """What every source derives from its ``listing_lines()``: fingerprint and listing file."""

    def listing_lines(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for line in self.listing_lines():
            digest.update(line.encode("utf-8"))
        return digest.hexdigest()

    def write_listing(self, path) -> None:
        """Write the listing (streamed to a temporary file in the same folder, then renamed)."""
        from distill.utils import TMP_SUFFIX

        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
        try:
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.writelines(self.listing_lines())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise OSError(exc.errno, exc.strerror, str(path)) from None


class FileSource(ListedSource):
    """Samples stored as image files: ``paths`` (absolute) with integer ``labels``."""

    kind = "files"

    def __init__(self, root: Path, paths: list[str], labels: np.ndarray, class_names: list[str]):
        self.root = Path(root)
        self.paths = paths
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_names = list(class_names)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def describe(self, sample_id: int) -> str:
        return self.paths[int(sample_id)]

    def content_files(self) -> list[str]:
        """The files whose content the samples are (see :mod:`distill.data.content`)."""
        return list(self.paths)

    def read_encoded(self, sample_id: int) -> bytes:
        path = self.paths[int(sample_id)]
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except OSError as exc:
            raise DataError(f"{path}: cannot read image ({exc.strerror})") from None

    def encoded_dataset(self, sample_ids):
        import tensorflow as tf

        ids = np.asarray(sample_ids, dtype=np.int64)
        paths = np.asarray(self.paths, dtype=object)[ids] if len(ids) else np.zeros(0, dtype=object)
        dataset = tf.data.Dataset.from_tensor_slices((ids, paths.astype(str)))
        return dataset.map(
            lambda sample_id, path: (sample_id, tf.io.read_file(path)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )

    def listing_lines(self):
        """``relative path<TAB>label`` per sample, in sample_id order."""
        for path, label in zip(self.paths, self.labels):
            yield f"{os.path.relpath(path, self.root)}\t{int(label)}\n"


def _natural_key(name: str):
    """Sort key so that ``s2`` < ``s10`` (digits compared as numbers)."""
    import re

    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def open_folder(root) -> FileSource:
    """A class-per-folder tree: ``root/<class>/<image>``; classes and files in natural order."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: dataset folder does not exist")
    if not root.is_dir():
        raise DataError(f"{root}: expected a folder of class sub-folders")
    class_dirs = sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
                        key=lambda d: _natural_key(d.name))
    if not class_dirs:
        raise DataError(f"{root}: no class sub-folders found (expected {root}/<class>/<image>)")
    paths, labels = [], []
    for label, class_dir in enumerate(class_dirs):
        files = sorted((f for f in class_dir.iterdir()
                        if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS),
                       key=lambda f: _natural_key(f.name))
        if not files:
            raise DataError(f"{class_dir}: class folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        paths.extend(str(f) for f in files)
        labels.extend([label] * len(files))
    return FileSource(root, paths, np.array(labels), [d.name for d in class_dirs])


#: label cells that mark an unlabelled image (label -1: used by distillation terms only)
UNLABELED = ("", "-1")


def open_file_list(list_path) -> FileSource:
    """A CSV/TSV file list with rows ``path,label`` (paths relative to the list's folder).

    Labels may be integers or class names; class names are sorted naturally and numbered.
    An empty label (or ``-1``) marks an unlabelled image: label -1, seen only by the
    distillation terms. A header row ``path,label`` is allowed.
    """
    list_path = Path(list_path)
    if not list_path.is_file():
        raise DataError(f"{list_path}: file list does not exist")
    delimiter = "\t" if list_path.suffix.lower() in (".tsv", ".txt", ".lst") else ","
    rows = []
    with open(list_path, newline="", encoding="utf-8") as handle:
        for line_no, row in enumerate(csv.reader(handle, delimiter=delimiter), start=1):
            if not row or not "".join(row).strip():
                continue
            if line_no == 1 and [c.strip().lower() for c in row[:2]] == ["path", "label"]:
                continue
            if len(row) < 2:
                raise DataError(f"{list_path}:{line_no}: expected 'path{delimiter}label' (an empty "
                                f"label marks an unlabelled image), got {row!r}")
            rows.append((row[0].strip(), row[1].strip(), line_no))
    if not rows:
        raise DataError(f"{list_path}: file list has no rows")
    raw_labels = [label for _, label, _ in rows]
    named = [label for label in raw_labels if label not in UNLABELED]
    if not named:
        class_names, labels = [], [-1] * len(raw_labels)
    elif all(label.isdigit() for label in named):
        class_names = [str(n) for n in range(max(int(label) for label in named) + 1)]
        labels = [-1 if label in UNLABELED else int(label) for label in raw_labels]
    else:
        for label, (_, _, line_no) in zip(raw_labels, rows):
            if label.lstrip("-").isdigit() and int(label) < 0 and label not in UNLABELED:
                raise DataError(f"{list_path}:{line_no}: negative label {label} (leave the label "
                                "empty or write -1 for an unlabelled image)")
        class_names = sorted(set(named), key=_natural_key)
        index = {name: i for i, name in enumerate(class_names)}
        labels = [-1 if label in UNLABELED else index[label] for label in raw_labels]
    base = list_path.parent
    paths = [str(Path(p) if os.path.isabs(p) else base / p) for p, _, _ in rows]
    return FileSource(base, paths, np.array(labels), class_names)


#: name → opener(path) → source, tried in order; ``accepts`` (a predicate on the path) says
#: which paths an opener takes. The first accepting entry opens the path.
def find_rec(path) -> Path | None:
    """``path`` itself if it is a ``.rec`` file, ``path/train.rec`` for a folder, else None."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".rec":
        return path
    if path.is_dir() and (path / "train.rec").is_file():
        return path / "train.rec"
    return None


SOURCES = Registry("dataset source", error=DataError)
SOURCES.register("recordio", "distill.data.recordio:open_recordio",    # InsightFace train.rec/.idx
                 accepts=lambda p: find_rec(p) is not None)
SOURCES.register("file_list", open_file_list,
                 accepts=lambda p: p.is_file() and p.suffix.lower() in (".csv", ".tsv", ".txt", ".lst"))
SOURCES.register("folder", open_folder, accepts=lambda p: True)


def register_source(name: str, predicate: Callable[[Path], bool], opener: Callable, first=True) -> None:
    """Register a source kind (e.g. MXNet RecordIO); ``first`` puts it ahead of the folder fallback."""
    SOURCES.register(name, opener, first=first, accepts=predicate)


def open_source(path):
    """Open a dataset at ``path`` with the first registered opener that accepts it."""
    path = Path(path)
    for entry in SOURCES.entries():
        if entry.info["accepts"](path):
            return SOURCES.builder(entry.name)(path)
    raise DataError(f"{path}: not a known dataset format")


