"""LFW-style ``pairs.txt`` verification lists.

Format: a header line ``<folds> <pairs per fold>`` (or a single pair count), then lines
``name i j`` (same person, images ``i`` and ``j``) or ``name1 i name2 j`` (different people).
Image ``i`` of ``name`` is ``<images_dir>/name/name_%04d.jpg`` (or the same stem with another
image extension, e.g. the ``.png`` crops of ``distill align``). Use aligned 112×112 crops
(e.g. the InsightFace-aligned LFW); other sizes are resized.

Sets are laid out fold by fold (:func:`in_fold_order`): fold ``k`` of 10 holds its share of
matched pairs, then its share of mismatched ones, so the contiguous 10-fold split of
``distill eval`` sees both kinds in every fold (as in View 2 and InsightFace's ``lfw.bin``);
View 1's ``pairsDevTest.txt`` lists all 500 matched pairs first.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distill.data.preprocess import INPUT_SIZE
from distill.evals.bins import VerificationSet, decode_images, save_bin


@dataclass(frozen=True)
class Pair:
    """One line of a pairs file: two (name, image number) references and the label."""

    name1: str
    index1: int
    name2: str
    index2: int
    issame: bool
    line: int


def read_pairs(path) -> list[Pair]:
    """Parse an LFW ``pairs.txt``; errors name the file and line number."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read pairs file ({exc})") from None
    numbered = [(n, line.split()) for n, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise ValueError(f"{path}: empty pairs file")
    (header_line, header), body = numbered[0], numbered[1:]
    try:
        counts = [int(v) for v in header]
    except ValueError:
        raise ValueError(f"{path}:{header_line}: expected a header '<folds> <pairs per fold>'") from None
    if len(counts) not in (1, 2) or min(counts) < 1:
        raise ValueError(f"{path}:{header_line}: expected a header '<folds> <pairs per fold>'")
    expected = 2 * counts[0] if len(counts) == 1 else 2 * counts[0] * counts[1]
    pairs = []
    for number, fields in body:
        try:
            if len(fields) == 3:
                pairs.append(Pair(fields[0], int(fields[1]), fields[0], int(fields[2]), True, number))
            elif len(fields) == 4:
                pairs.append(Pair(fields[0], int(fields[1]), fields[2], int(fields[3]), False, number))
            else:
                raise ValueError
        except ValueError:
            raise ValueError(
                f"{path}:{number}: expected 'name i j' or 'name1 i name2 j', got {' '.join(fields)!r}"
            ) from None
    if len(pairs) != expected:
        raise ValueError(f"{path}: header announces {expected} pairs but the file lists {len(pairs)}")
    return pairs


def pair_image_path(images_dir, name: str, index: int) -> Path:
    """``<images_dir>/name/name_%04d.jpg``, or that stem with another image extension if only
    such a file exists."""
    from distill.data.sources import IMAGE_EXTENSIONS

    path = Path(images_dir) / name / f"{name}_{index:04d}.jpg"
    if not path.exists():
        for extension in IMAGE_EXTENSIONS:
            other = path.with_suffix(extension)
            if other.exists():
                return other
    return path


def in_fold_order(pairs: list[Pair], n_folds: int = 10) -> list[Pair]:
    """``pairs`` reordered fold by fold (:func:`distill.evals.bins.fold_order`): fold ``k``
    takes the k-th tenth of the matched pairs (in file order), then the k-th tenth of the
    mismatched ones. View 2's order is kept as is."""
    from distill.evals.bins import fold_order

    return [pairs[i] for i in fold_order([pair.issame for pair in pairs], n_folds)]


def read_pair_images(pairs_path, images_dir) -> tuple[list[bytes], np.ndarray, list[Path]]:
    """Encoded bytes of the ``2N`` pair images, the issame array and the file paths."""
    pairs = in_fold_order(read_pairs(pairs_path))
    cache: dict[Path, bytes] = {}
    files = []
    for pair in pairs:
        for name, index in ((pair.name1, pair.index1), (pair.name2, pair.index2)):
            image = pair_image_path(images_dir, name, index)
            if image not in cache:
                try:
                    cache[image] = image.read_bytes()
                except OSError as exc:
                    raise ValueError(f"{pairs_path}:{pair.line}: cannot read {image} ({exc.strerror})") from None
            files.append(image)
    issame = np.array([pair.issame for pair in pairs], dtype=bool)
    return [cache[f] for f in files], issame, files


def load_pairs_set(pairs_path, images_dir, image_size=INPUT_SIZE, name: str | None = None) -> VerificationSet:
    """A :class:`VerificationSet` from a pairs file (name: ``name`` or the images folder name)."""
    encoded, issame, files = read_pair_images(pairs_path, images_dir)
    images = decode_images(encoded, tuple(image_size), source=str(pairs_path), names=files)
    return VerificationSet(name=name or Path(images_dir).resolve().name, images=images, issame=issame,
                           source=str(pairs_path))


def pairs_to_bin(pairs_path, images_dir, out_path) -> Path:
    """Write the pairs of an LFW ``pairs.txt`` as an InsightFace ``.bin`` (original file bytes)."""
    encoded, issame, files = read_pair_images(pairs_path, images_dir)
    decode_images(encoded, source=str(pairs_path), names=files)  # check before writing
    return save_bin(encoded, issame, out_path)
