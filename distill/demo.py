"""``distill demo``: the whole idea on the bundled ORL faces, in minutes on a CPU.

People s1–s30 train, s31–s40 are held out as a ``.bin`` of verification pairs. A teacher embeds
the training set into a store, and two identical students are trained at equal budget —
without distillation and with it — then teacher and both students are evaluated on the
held-out pairs. Settings are fixed in advance (never tuned on the held-out pairs); the table
says plainly whether distillation helped.

The teacher (``--teacher``): ``dlib`` is dlib's pretrained ResNet face model (the ``[dlib]``
extra; a real teacher, trained by its author on millions of faces); ``trained`` trains a
MobileNet α1.0 with ArcFace on the same 300 images; ``auto`` (default) takes dlib when the
extra is installed. dlib's space is a narrow cone, so its store is centred (``--condition
center``), as the project recommends for such spaces (``distill store info`` shows it).
The distillation weight is ``auto``: set from the gradient balance with classification on the
first steps (``distill.train.auto_weight``), as for any new teacher.

Learning rates were chosen on the *training* loss only: the trained teacher uses lr 0.1 →
0.01; the students 0.01 → 0.001 (both students' training losses fall faster there).
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
    distill_weight: float | str = "auto"
    teacher: str = "auto"                  # auto | dlib | trained (see the module docstring)
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
        "distill": {"name": "l2", "weight": distill_weight or 0.0},
        "train": {"batch_size": settings.batch_size, "eval_every_epochs": 4},
        "stages": stages,
    }


DLIB_TEACHER = "teachers.dlib_resnet:embed"
TEACHER_NAMES = {"dlib": "dlib's ResNet face model, pretrained ([dlib] extra)",
                 "trained": "MobileNet trained by the demo on the same 300 images"}


def resolve_teacher(choice: str) -> str:
    """``dlib`` or ``trained`` for ``--teacher`` ``auto`` / ``dlib`` / ``trained``; ``dlib``
    without the extra is refused with the install command."""
    if choice not in ("auto", *TEACHER_NAMES):
        raise ValueError(f"--teacher must be auto, dlib or trained, got {choice!r}")
    if choice == "trained":
        return choice
    from teachers.dlib_resnet import DlibUnavailable, models

    try:
        models()
    except DlibUnavailable as exc:
        if choice == "dlib":
            raise ValueError(str(exc)) from None
        return "trained"
    return "dlib"


def _weight_label(result, weight) -> str:
    """The distillation weight a student trained with: the recipe's number, or ``auto 8.2``."""
    auto = result.history[0].get("auto_weights", {}).get("distill")
    return f"auto {auto['weight']:.3g}" if auto else f"{weight:g}"


def _row(model, params, weight, metrics) -> dict:
    return {"model": model, "params": params, "distill weight": weight,
            "accuracy": f"{metrics['accuracy']:.4f} ± {metrics['accuracy_std']:.4f}",
            "threshold": f"{metrics['threshold']:.2f}", "_accuracy": float(metrics["accuracy"])}


def run_demo(workdir="demo_output", settings: DemoSettings | None = None, progress: bool = True,
             echo=print) -> list[dict]:
    """Run the whole demo in ``workdir`` (recreated); return the table rows."""
    from distill.evals.bins import load_bin
    from distill.evals.verification import evaluate_set, model_embed_fn
    from distill.report.table import format_table
    from distill.store.writer import embed
    from distill.train.trainer import train

    settings = settings or DemoSettings()
    teacher_kind = resolve_teacher(settings.teacher)
    workdir = Path(workdir)
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    started = time.time()
    train_dir, heldout_bin = prepare_data(workdir, settings)
    echo(f"[demo] data: {train_dir} (30 people, 300 images), held-out pairs: {heldout_bin}")

    runs, store = {}, workdir / "store"
    if teacher_kind == "dlib":
        echo("[demo] 1/4 teacher: dlib's pretrained ResNet face model ([dlib] extra)")
        teacher_model, condition = DLIB_TEACHER, "center"
    else:
        echo(f"[demo] 1/4 training the teacher (MobileNet alpha {settings.teacher_alpha}, ArcFace)"
             + ("; pip install 'distill[dlib]' for a real pretrained teacher" if settings.teacher == "auto" else ""))
        runs["teacher"] = train(_recipe("teacher", train_dir, heldout_bin, settings.teacher_alpha,
                                        settings.teacher_epochs, settings.teacher_lrs, settings),
                                workdir / "runs" / "teacher", progress=progress)
        teacher_model, condition = runs["teacher"].final_model, None
    echo("[demo] 2/4 embedding the training set with the teacher"
         + (" (centred: dlib's space is a narrow cone)" if condition else ""))
    embed(teacher_model, train_dir, store, batch_size=50, shard_size=128, flip=True,
          condition=condition, progress=progress)
    for step, (name, weight) in enumerate((("student", 0.0), ("student+distill", settings.distill_weight)), 3):
        echo(f"[demo] {step}/4 training {name} (MobileNet alpha {settings.student_alpha}, "
             f"distill weight {weight})")
        runs[name] = train(_recipe(name.replace("+", "_"), train_dir, heldout_bin,
                                   settings.student_alpha, settings.student_epochs,
                                   settings.student_lrs, settings,
                                   store=store, distill_weight=weight),
                           workdir / "runs" / name.replace("+", "_"), progress=progress)

    heldout = load_bin(heldout_bin)
    rows = []
    if teacher_kind == "dlib":
        metrics = evaluate_set(model_embed_fn(DLIB_TEACHER), heldout)
        rows.append(_row("teacher (dlib)", "-", "-", metrics))
    for name, result in runs.items():
        metrics = evaluate_set(model_embed_fn(result.final_model), heldout)
        weight = "-" if name == "teacher" else "0" if name == "student" else _weight_label(result, settings.distill_weight)
        rows.append(_row(name, f"{result.history[-1]['params']:,}", weight, metrics))
    plain, distilled = rows[1]["_accuracy"], rows[2]["_accuracy"]
    gain = round(distilled - plain, 4)       # accuracies are multiples of 1/pairs: a tie is a tie
    verdict = (f"distillation helped: {gain:+.4f}" if gain > 0 else
               f"distillation did NOT beat the plain student here ({gain:+.4f}; one seed of "
               f"{len(heldout)} pairs: the fold std is larger); README 'Results on real faces' has "
               "the LFW-sized experiment over three seeds")
    table = format_table([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    elapsed = time.time() - started
    text = (f"Held-out verification on ORL s31–s40 ({len(heldout)} pairs, 10-fold, flip), "
            f"final models after equal budgets:\n\n{table}\n\n{verdict}\n"
            f"teacher: {TEACHER_NAMES[teacher_kind]}\ntotal time: {elapsed:.0f} s")
    echo(text)
    (workdir / "results.md").write_text(text + "\n")
    (workdir / "results.json").write_text(json.dumps({"rows": rows, "teacher": teacher_kind,
                                                      "seconds": elapsed}, indent=2))
    return rows


from distill.utils import make_module_callable  # noqa: E402  (``distill.demo()`` after ``import distill.demo``)

make_module_callable(__name__, "distill.demo:run_demo")
