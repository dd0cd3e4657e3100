"""How much of its teacher's space a student learned, on its training images and on held-out ones.

For each student model: the mean cosine between the student's embedding of an image and the
teacher's (normalised; the teacher's as the store holds it, conditioning included), on
``--train-samples`` images of the store's training list (targets read from the store) and on
every image of a verification ``.bin`` (teacher run live, the store's conditioning applied);
and on the ``.bin``'s pairs, the Pearson correlation of the student's pair scores (cosine)
with the teacher's. A student that matches its teacher on the training images but not on
held-out ones learned the targets, not the teacher's function: more data, not a stronger
term, is what it lacks.

    python bench/agreement.py --store STORE --teacher SPEC --bin view1_test.bin \
        RUN_OR_MODEL [RUN_OR_MODEL ...] [--train-samples 2000] [--seed 0]
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from _load import report_load  # bench/ is on sys.path when a bench runs

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from distill.evals.metrics import l2_normalize

    return np.sum(l2_normalize(a) * l2_normalize(b), axis=1)


def pair_scores(embeddings: np.ndarray) -> np.ndarray:
    """Cosine of each .bin pair (images 2k and 2k+1)."""
    from distill.evals.metrics import l2_normalize

    e = l2_normalize(embeddings)
    return np.sum(e[0::2] * e[1::2], axis=1)


def training_images(store, count: int, seed: int):
    """``(sample_ids, uint8 images, stored targets)`` of ``count`` random present samples."""
    from distill.data.images import read_image
    from distill.store.manifest import LISTING_NAME

    listing = (store.path / store.manifest.source.get("listing", LISTING_NAME)).read_text().splitlines()
    table, present = store.load_table("embedding")
    ids = np.flatnonzero(present)
    ids = np.sort(np.random.default_rng(seed).choice(ids, size=min(count, len(ids)), replace=False))
    root = Path(store.manifest.source["root"])
    images = np.stack([read_image(root / listing[i].split("\t")[0]) for i in ids])
    return ids, images, table[ids]


def model_path(spec: str) -> str:
    """A run directory means its final model."""
    path = Path(spec)
    return str(path / "model.keras") if path.is_dir() and (path / "model.keras").is_file() else spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("students", nargs="+", help="run directories (their model.keras) or model files")
    parser.add_argument("--store", required=True, type=Path, help="the teacher store the students trained on")
    parser.add_argument("--teacher", required=True, help="the teacher that made the store (any `distill eval --model` spec)")
    parser.add_argument("--bin", required=True, type=Path, help="held-out verification .bin")
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    report_load()

    from distill.evals.bins import load_bin
    from distill.evals.verification import embed_images, model_embed_fn
    from distill.store import Store

    store = Store(args.store).require_complete()
    _, train_images, train_targets = training_images(store, args.train_samples, args.seed)
    held_out = load_bin(args.bin).images
    teacher_held_out = store.conditioning.apply_numpy(embed_images(model_embed_fn(args.teacher), held_out))
    teacher_scores = pair_scores(teacher_held_out)
    print(f"store {args.store}: {len(train_images)} training images; {args.bin.name}: "
          f"{len(held_out)} images, {len(held_out) // 2} pairs; teacher {args.teacher}")
    print(f"{'student':40s} {'cos train':>10s} {'cos held-out':>13s} {'pair-score r':>13s}")
    for spec in args.students:
        embed = model_embed_fn(model_path(spec))
        train_cos = row_cosines(embed_images(embed, train_images), train_targets)
        student_held_out = embed_images(embed, held_out)
        held_cos = row_cosines(student_held_out, teacher_held_out)
        r = float(np.corrcoef(pair_scores(student_held_out), teacher_scores)[0, 1])
        print(f"{Path(spec).name:40s} {train_cos.mean():10.3f} {held_cos.mean():13.3f} {r:13.3f}")


if __name__ == "__main__":
    main()
