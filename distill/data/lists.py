"""Build one training file list from several class-per-folder trees.

Face datasets are often pieces: LFW's View 1 training people, a Glint360K sample, a folder of
unlabelled crops. :func:`merge_folders` writes one ``path,label`` CSV over all of them (paths
relative to the CSV's folder), so that ``distill embed`` and ``distill train`` see the same
listing. Classes of the same name in different trees become one class (LFW and glint24 spell
shared people alike); a tree may be restricted to a protocol's people list;
``unlabeled`` trees contribute rows with an empty label, which only the distillation term uses.
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from distill.data.sources import IMAGE_EXTENSIONS, DataError, _natural_key
from distill.utils import atomic_write_text


def read_people(path) -> set[str]:
    """Names from an LFW ``people*.txt`` (``name<TAB>count`` rows; count-only lines skipped)
    or a plain list with one name per line."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise DataError(f"{path}: cannot read people list ({exc.strerror})") from None
    names = {line.split()[0] for line in lines if line.strip() and not line.split()[0].isdigit()}
    if not names:
        raise DataError(f"{path}: people list names nobody")
    return names


def _images(folder: Path) -> list[Path]:
    return sorted((f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS),
                  key=lambda f: _natural_key(f.name))


def _class_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder does not exist")
    return sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
                  key=lambda d: _natural_key(d.name))


def merge_folders(out, labeled=(), unlabeled=()) -> dict:
    """Write ``out`` (CSV ``path,label``) from class-per-folder trees; see the module docstring.

    ``labeled``: trees, each a path (every class) or ``(path, people)`` with ``people`` a names
    file (see :func:`read_people`) or a set of names: only those classes, and a listed person
    without a folder there is an error (a misspelled list must not shrink the data silently).
    Returns counts: ``images``, ``classes``, ``unlabeled``, ``merged`` (class names found in
    more than one tree).
    """
    out = Path(out)
    rows, seen, merged = [], {}, set()
    for entry in labeled:
        root, people = (entry, None) if isinstance(entry, (str, os.PathLike)) else entry
        root = Path(root)
        wanted = read_people(people) if isinstance(people, (str, os.PathLike)) else people
        folders = [f for f in _class_folders(root) if wanted is None or f.name in wanted]
        if wanted is not None:
            missing = sorted(wanted - {f.name for f in folders})
            if missing:
                raise DataError(f"{root}: {len(missing)} people of {people if isinstance(people, (str, os.PathLike)) else 'the list'} "
                                f"have no folder here (e.g. {', '.join(missing[:3])})")
        for folder in folders:
            images = _images(folder)
            if not images:
                continue
            if folder.name in seen and seen[folder.name] != root:
                merged.add(folder.name)
            seen.setdefault(folder.name, root)
            rows.extend((image, folder.name) for image in images)
    unlabeled_count = 0
    for root in map(Path, unlabeled):
        if not root.is_dir():
            raise DataError(f"{root}: unlabelled folder does not exist")
        images = sorted((f for f in root.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS),
                        key=lambda f: _natural_key(str(f)))
        rows.extend((image, "") for image in images)
        unlabeled_count += len(images)
    if not rows:
        raise DataError(f"{out}: no images found in the given folders")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label"])
    base = out.resolve().parent
    for image, label in rows:
        writer.writerow([os.path.relpath(image.resolve(), base), label])
    atomic_write_text(out, buffer.getvalue())
    return {"images": len(rows), "classes": len(seen), "unlabeled": unlabeled_count,
            "merged": sorted(merged)}
