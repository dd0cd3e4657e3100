"""``distill demo``: the whole idea on the bundled ORL faces, in minutes on a CPU.

People s1–s30 train, s31–s40 are held out as a ``.bin`` of verification pairs. A larger
teacher is trained with ArcFace, embeds the training set into a store, and two identical
students are trained at equal budget — distill weight 0 and > 0 — then teacher and both
students are evaluated on the held-out pairs. Settings are fixed in advance (never tuned
on the held-out pairs); the table says plainly whether distillation helped.

Learning rates were chosen on the *training* loss only: the teacher uses lr 0.1 → 0.01;
the students use 0.01 → 0.001, because at lr 0.1 a distill weight of 64 (the reference
weight) scales the gradients so much that the student's training loss stalls, while both
students' training losses fall faster at 0.01.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

DEMO_DATA = Path(__file__).parent / "demo_data" / "orl_faces"
TRAIN_PEOPLE = [f"s{i}" for i in range(1, 31)]
HELDOUT_PEOPLE = [f"s{i}" for i in range(31, 41)]


@dataclass
class DemoSettings:
    """Budgets of the demo (the tests use a smaller one)."""

    teacher_alpha: float = 1.0
    student_alpha: float = 0.25
    embedding_size: int = 128
    teacher_epochs: tuple = (4, 12, 8)     # ArcFace scale 16 → 32 → 64
    student_epochs: tuple = (4, 12, 8)
    teacher_lrs: tuple = (0.1, 0.1, 0.01)
    student_lrs: tuple = (0.01, 0.01, 0.001)
    batch_size: int = 30
    distill_weight: float = 64.0
    heldout_pairs: int = 600
    seed: int = 0
    extra: dict = field(default_factory=dict)


QUICK = DemoSettings(teacher_alpha=0.5, teacher_epochs=(1, 1, 0), student_epochs=(1, 1, 0),
                     heldout_pairs=200)


def prepare_data(workdir: Path, settings: DemoSettings) -> tuple[Path, Path]:
    """Copy s1–s30 to ``workdir/train`` and write ``workdir/heldout.bin`` from s31–s40."""
    from distill.evals.bins import make_bin

    train_dir, heldout_dir = workdir / "train", workdir / "heldout_images"
    for people, target in ((TRAIN_PEOPLE, train_dir), (HELDOUT_PEOPLE, heldout_dir)):
        for person in people:
            if not (target / person).is_dir():
                shutil.copytree(DEMO_DATA / person, target / person)
    heldout_bin = workdir / "heldout.bin"
    make_bin(heldout_dir, heldout_bin, n_pairs=settings.heldout_pairs, seed=settings.seed)
    return train_dir, heldout_bin


def _recipe(name, train_dir, heldout_bin, alpha, epochs, lrs, settings, store=None,
            distill_weight=0.0):
    scales = (16.0, 32.0, 64.0)
    stages = [{"epochs": e, "lr": lr, "scale": s} for e, lr, s in zip(epochs, lrs, scales) if e > 0]
    return {
        "name": name, "seed": settings.seed,
        "data": {"train": str(train_dir), "store": str(store) if store else None,
                 "eval": [str(heldout_bin)], "augment": "flip"},
        "model": {"backbone": "mobilenet", "alpha": alpha, "embedding_size": settings.embedding_size,
                  "output_layer": "E", "dropout": 0.0},
        "optimizer": {"name": "sgd", "momentum": 0.9, "weight_decay": 5e-4},
        "loss": {"name": "arcface", "scale": 16.0, "margin": 0.3},
        "distill": {"name": "l2", "weight": distill_weight},
        "train": {"batch_size": settings.batch_size, "eval_every_epochs": 4},
        "stages": stages,
    }


def run_demo(workdir="demo_output", settings: DemoSettings | None = None, progress: bool = True,
             echo=print) -> list[dict]:
    """Run the whole demo in ``workdir`` (recreated); return the table rows."""
    from distill.evals.bins import load_bin
    from distill.evals.verification import evaluate_set, model_embed_fn
    from distill.report.table import format_table
    from distill.store.writer import embed
    from distill.train.trainer import train

    settings = settings or DemoSettings()
    workdir = Path(workdir)
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    started = time.time()
    train_dir, heldout_bin = prepare_data(workdir, settings)
    echo(f"[demo] data: {train_dir} (30 people, 300 images), held-out pairs: {heldout_bin}")

    echo("[demo] 1/4 training the teacher (MobileNet alpha "
         f"{settings.teacher_alpha}, ArcFace)")
    teacher = train(_recipe("teacher", train_dir, heldout_bin, settings.teacher_alpha,
                            settings.teacher_epochs, settings.teacher_lrs, settings),
                    workdir / "runs" / "teacher",
                    progress=progress)
    echo("[demo] 2/4 embedding the training set with the teacher")
    store = workdir / "store"
    embed(teacher.final_model, train_dir, store, batch_size=50, shard_size=128, flip=True,
          progress=progress)
    runs = {"teacher": teacher}
    for step, (name, weight) in enumerate((("student", 0.0), ("student+distill", settings.distill_weight)), 3):
        echo(f"[demo] {step}/4 training {name} (MobileNet alpha {settings.student_alpha}, "
             f"distill weight {weight:g})")
        runs[name] = train(_recipe(name.replace("+", "_"), train_dir, heldout_bin,
                                   settings.student_alpha, settings.student_epochs,
                                   settings.student_lrs, settings,
                                   store=store, distill_weight=weight),
                           workdir / "runs" / name.replace("+", "_"), progress=progress)

    heldout = load_bin(heldout_bin)
    rows = []
    for name, result in runs.items():
        metrics = evaluate_set(model_embed_fn(result.final_model), heldout)
        rows.append({"model": name, "params": f"{result.history[-1]['params']:,}",
                     "distill weight": "-" if name == "teacher" else
                     f"{settings.distill_weight if 'distill' in name else 0:g}",
                     "accuracy": f"{metrics['accuracy']:.4f} ± {metrics['accuracy_std']:.4f}",
                     "threshold": f"{metrics['threshold']:.2f}",
                     "_accuracy": float(metrics["accuracy"])})
    plain, distilled = rows[1]["_accuracy"], rows[2]["_accuracy"]
    verdict = ("distillation helped: +{:.4f}".format(distilled - plain) if distilled > plain else
               "distillation did NOT beat the plain student here ({:+.4f})".format(distilled - plain))
    table = format_table([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    elapsed = time.time() - started
    text = (f"Held-out verification on ORL s31–s40 ({len(heldout)} pairs, 10-fold, flip), "
            f"final models after equal budgets:\n\n{table}\n\n{verdict}\n"
            f"total time: {elapsed:.0f} s")
    echo(text)
    (workdir / "results.md").write_text(text + "\n")
    (workdir / "results.json").write_text(json.dumps({"rows": rows, "seconds": elapsed}, indent=2))
    return rows


from distill.utils import make_module_callable  # noqa: E402  (``distill.demo()`` after ``import distill.demo``)

make_module_callable(__name__, "distill.demo:run_demo")
