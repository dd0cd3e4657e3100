"""The run folder of `distill train`, in one place: its layout (:class:`RunDir`) and the typed
schema of ``history.json`` (:class:`EpochRecord`), read by the trainer, ``distill report``,
``distill plot`` and the sweep scripts' status check.

    RUN/recipe.yaml            the resolved recipe
    RUN/history.json           one EpochRecord per epoch done
    RUN/checkpoint/state.json  the checkpoint's state, naming its arrays file
    RUN/tensorboard/           per-epoch scalars
    RUN/best.keras, model.keras  best (by train.best_by) and final embedding models
    RUN/skipped.json           images skipped with data.skip_bad
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

try:                                   # Python 3.11+
    from typing import NotRequired
except ImportError:                    # pragma: no cover
    from typing_extensions import NotRequired


class EvalMetrics(TypedDict):
    """One evaluation set's figures (``distill.evals.verification``)."""
    accuracy: float
    accuracy_std: float
    threshold: float
    accuracy_exact: NotRequired[float]
    threshold_exact: NotRequired[float]
    auc: NotRequired[float]


class AutoWeight(TypedDict):
    """A ``weight: auto`` term's measured weight (``distill.train.auto_weight``)."""
    weight: float                   # target ÷ ratio, used for the whole run
    ratio: float                    # mean per-unit ‖∇e term‖ ÷ ‖∇e classification‖
    target: float
    steps: int                      # calibration batches


class EpochRecord(TypedDict):
    """One line of ``history.json``: an epoch's mean loss terms, its evaluations and timing."""
    epoch: int                      # 1-based
    stage: int                      # index into the recipe's stages
    lr: float                       # learning rate at the epoch's first step
    loss: dict                      # term → mean over the epoch ("total" included)
    steps: int
    seconds: float
    params: NotRequired[int]        # the embedding model's parameter count
    eval: dict                      # set name → EvalMetrics ({} when not evaluated)
    gradients: NotRequired[dict]    # grad/<term>, gradcos/<term> (train.gradient_stats)
    step_evals: NotRequired[list]   # [{"step": n, "eval": {...}}] (train.eval_every_steps)
    auto_weights: NotRequired[dict]  # term → AutoWeight, in the record of the epoch that measured it


class HistoryError(ValueError):
    """A ``history.json`` that does not follow :class:`EpochRecord`; names the file and entry."""


_FIELDS = {"epoch": int, "stage": int, "lr": (int, float), "loss": dict, "steps": int,
           "seconds": (int, float), "eval": dict}
_OPTIONAL = {"params": int, "gradients": dict, "step_evals": list, "auto_weights": dict}


def check_record(record, where: str) -> EpochRecord:
    """``record`` if it follows the schema, else :class:`HistoryError` naming ``where``."""
    if not isinstance(record, dict):
        raise HistoryError(f"{where}: expected an epoch record (a mapping), got {type(record).__name__}")
    for key, kinds in _FIELDS.items():
        if key not in record:
            raise HistoryError(f"{where}: epoch record lacks {key!r}")
    for key, kinds in {**_FIELDS, **_OPTIONAL}.items():
        if key in record and (not isinstance(record[key], kinds) or isinstance(record[key], bool)):
            raise HistoryError(f"{where}: {key!r} is {type(record[key]).__name__}, "
                               f"expected {getattr(kinds, '__name__', 'a number')}")
    for name, metrics in record["eval"].items():
        if not isinstance(metrics, dict) or not isinstance(metrics.get("accuracy"), (int, float)):
            raise HistoryError(f"{where}: eval.{name} has no numeric accuracy")
    for name, auto in record.get("auto_weights", {}).items():
        if not isinstance(auto, dict) or not isinstance(auto.get("weight"), (int, float)):
            raise HistoryError(f"{where}: auto_weights.{name} has no numeric weight")
    return record  # type: ignore[return-value]


@dataclass(frozen=True)
class RunDir:
    """The files of one run folder (paths only: nothing is created until written)."""

    path: Path

    def __init__(self, path) -> None:
        object.__setattr__(self, "path", Path(path))

    def __fspath__(self) -> str:
        return str(self.path)

    recipe = property(lambda self: self.path / "recipe.yaml")
    history = property(lambda self: self.path / "history.json")
    checkpoint = property(lambda self: self.path / "checkpoint")
    state = property(lambda self: self.path / "checkpoint" / "state.json")
    tensorboard = property(lambda self: self.path / "tensorboard")
    best_model = property(lambda self: self.path / "best.keras")
    final_model = property(lambda self: self.path / "model.keras")
    skipped = property(lambda self: self.path / "skipped.json")

    def is_run(self) -> bool:
        """Whether a run was started here (its resolved recipe exists)."""
        return self.recipe.is_file()

    def read_history(self) -> list[EpochRecord]:
        """``history.json`` checked against :class:`EpochRecord` ([] before the first epoch)."""
        if not self.history.is_file():
            return []
        try:
            records = json.loads(self.history.read_text())
        except (OSError, ValueError) as exc:
            raise HistoryError(f"{self.history}: not valid JSON ({exc})") from None
        if not isinstance(records, list):
            raise HistoryError(f"{self.history}: expected a list of epoch records")
        return [check_record(r, f"{self.history}: entry {i}") for i, r in enumerate(records)]
