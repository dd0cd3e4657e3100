"""Training throughput: real input pipeline ÷ the same batches held in memory (one run).

The pipeline reads the ORL images from disk, decodes, augments (flip), normalises and joins
the stored teacher embeddings by sample_id; the in-memory run feeds the very same batches,
already materialised, to the same compiled train step. Prints both rates and the ratio.

    python bench/bench_train.py [--alpha 0.5] [--batch 32] [--steps 60]
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from _load import report_load  # bench/ is on sys.path when a bench runs

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--per-class", type=int, default=50, help="images per person (ORL cycled)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=-1, help="decode threads (-1: AUTOTUNE)")
    args = parser.parse_args()
    report_load()   # load average before and after (bench/_load.py)

    import keras

    from distill.demo import DEMO_DATA
    from distill.models import build_embedding_model
    from distill.store.writer import embed
    from distill.train.recipe import recipe_from_dict
    from distill.train.stages import resolve_stages
    from distill.train.trainer import Trainer

    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    try:
        _replicate_faces(DEMO_DATA, work / "faces", per_class=args.per_class)
        teacher = build_embedding_model("mobilenet", embedding_size=128, alpha=0.25)
        teacher.save(work / "teacher.keras")
        embed(work / "teacher.keras", work / "faces", work / "store", flip=True, progress=False)
        recipe = recipe_from_dict({
            "data": {"train": str(work / "faces"), "store": str(work / "store"), "augment": "flip"},
            "model": {"backbone": "mobilenet", "alpha": args.alpha, "embedding_size": 128},
            "distill": {"name": "l2", "weight": 64.0},
            "train": {"batch_size": args.batch},
            "stages": [{"epochs": 1000, "lr": 0.01}],
        })
        trainer = Trainer(recipe, work / "run", progress=False)
        trainer._setup()
        stage = resolve_stages(recipe)[0]
        _, _, step = trainer._build_stage(stage)

        from distill.train.pipeline import training_dataset

        def batches(epochs):
            for epoch in range(epochs):
                yield from training_dataset(trainer.source, trainer.sample_ids, args.batch,
                                            recipe.seed, epoch, "flip", trainer.targets,
                                            num_parallel_calls=args.parallel)

        steps_per_epoch = len(trainer.sample_ids) // args.batch
        epochs = -(-(args.steps + 5) // steps_per_epoch)
        for batch in _take(batches(1), 5):        # compile and warm up
            step(batch)["total"].numpy()
        held = list(_take(batches(epochs), args.steps))

        def timed(source):
            started = time.perf_counter()
            for batch in source:
                step(batch)["total"].numpy()
            return args.steps / (time.perf_counter() - started)

        pipeline_rates, memory_rates = [], []
        for _ in range(args.repeats):             # alternate, so both see the same machine
            pipeline_rates.append(timed(_take(batches(epochs), args.steps)))
            memory_rates.append(timed(held))
        pipeline_rate, memory_rate = np.median(pipeline_rates), np.median(memory_rates)

        print(f"model: MobileNet alpha {args.alpha}, batch {args.batch}, {len(trainer.sample_ids)} images, "
              f"median of {args.repeats} × {args.steps} steps, "
              f"{os.cpu_count()} CPU cores, keras {keras.__version__}")
        print(f"real pipeline (read+decode+flip+join store): {pipeline_rate:.2f} steps/s")
        print(f"same batches held in memory:                 {memory_rate:.2f} steps/s")
        print(f"ratio pipeline / in-memory: {pipeline_rate / memory_rate:.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _replicate_faces(source: Path, target: Path, per_class: int) -> None:
    """``per_class`` files per ORL person, cycling its 10 photos (real images, bigger epochs)."""
    for person in sorted(p for p in source.iterdir() if p.is_dir()):
        files = sorted(person.glob("*.png"))
        (target / person.name).mkdir(parents=True)
        for i in range(per_class):
            shutil.copy(files[i % len(files)], target / person.name / f"{i}.png")


def _take(iterable, n):
    for i, item in enumerate(iterable):
        if i >= n:
            return
        yield item


if __name__ == "__main__":
    main()
