"""Run directories → comparison rows: the swept settings, best accuracies, progress.

Settings come from each run's resolved ``recipe.yaml`` (never from directory names): the
columns are the flattened recipe keys (``model.dropout``, ``distill.weight``, ...) whose
values differ between the runs compared. ``data.store`` is shown as the store's teacher
(``STORE/manifest.json`` → ``teacher.source``) when the manifest can be read.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from distill.utils import read_yaml_mapping


class RunError(ValueError):
    """A run directory that cannot be read; the message names the file and the problem."""


@dataclass
class Run:
    """One run directory, read (nothing is computed on load but the epoch bookkeeping)."""

    path: Path
    recipe: object                  # distill.train.recipe.Recipe
    history: list                   # per-epoch records, one per epoch (the last if repeated)
    epochs_done: int
    has_checkpoint: bool = False    # checkpoint/state.json exists (the run can be resumed)
    settings: dict = field(default_factory=dict)   # flattened recipe: "model.dropout" → 0.4

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def total_epochs(self) -> int:
        return self.recipe.total_epochs

    @property
    def complete(self) -> bool:
        return self.epochs_done >= self.total_epochs

    @property
    def status(self) -> str:
        return "complete" if self.complete else "incomplete"

    def eval_sets(self) -> list[str]:
        names: list[str] = []
        for record in self.history:
            names.extend(n for n in record.get("eval", {}) if n not in names)
        return names

    def best(self, set_name: str) -> tuple[float, int] | None:
        """``(best accuracy, its epoch)`` on ``set_name`` (the first epoch on ties)."""
        best = None
        for record in self.history:
            metrics = record.get("eval", {}).get(set_name)
            if metrics and "accuracy" in metrics and (best is None or metrics["accuracy"] > best[0]):
                best = (float(metrics["accuracy"]), int(record["epoch"]))
        return best


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RunError(f"{path}: not valid JSON ({exc})") from None


def unique_epochs(history: list) -> list:
    """Records by epoch, keeping the last record of a repeated epoch, in epoch order."""
    by_epoch = {}
    for index, record in enumerate(history):
        if not isinstance(record, dict) or "epoch" not in record:
            raise RunError(f"history record {index} has no 'epoch'")
        by_epoch[int(record["epoch"])] = record
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def load_run(run_dir) -> Run:
    """Read ``recipe.yaml``, ``history.json`` and ``checkpoint/state.json`` of a run."""
    from distill.train.recipe import RecipeError, recipe_from_dict

    from distill.train.run_dir import HistoryError, RunDir

    files = RunDir(run_dir)
    path, recipe_path = files.path, files.recipe
    if not path.is_dir():
        raise RunError(f"{path}: not a directory (expected a run directory of `distill train`)")
    if not files.is_run():
        raise RunError(f"{path}: no recipe.yaml (not a run directory of `distill train`)")
    try:
        recipe = recipe_from_dict(read_yaml_mapping(recipe_path, RunError, "run recipe"), str(recipe_path))
    except RecipeError as exc:
        raise RunError(str(exc)) from None
    try:
        history = unique_epochs(files.read_history())
    except (HistoryError, RunError) as exc:
        message = str(exc)
        raise RunError(message if message.startswith(str(files.history)) else f"{files.history}: {message}") from None
    has_checkpoint = files.state.is_file()
    if has_checkpoint:
        epochs_done = int(_read_json(files.state).get("epochs_done", 0))
    else:
        epochs_done = max((r["epoch"] for r in history), default=0)
    return Run(path, recipe, history, epochs_done, has_checkpoint, _settings(recipe, history))


def _settings(recipe, history: list) -> dict:
    """The flattened recipe, a ``weight: auto`` shown with the weight the run measured."""
    from distill.train.checks import section_of

    settings = flatten(recipe.to_dict())
    for record in history:
        for label, auto in record.get("auto_weights", {}).items():
            settings[f"{section_of(label)}.weight"] = f"auto {auto['weight']:.3g}"
    return settings


def run_status(run_dir) -> tuple[str, str]:
    """``(state, progress)`` of a run directory for sweep scripts: ``complete`` (every epoch
    done and model.keras saved), ``resume`` (a checkpoint to continue from) or ``new``
    (nothing to continue); progress ``DONE/TOTAL`` (``-`` for a new directory)."""
    from distill.train.run_dir import RunDir

    files = RunDir(run_dir)
    if not files.is_run():
        return "new", "-"
    run = load_run(files.path)
    done = run.complete and files.final_model.is_file()
    word = "complete" if done else "resume" if run.has_checkpoint else "new"
    return word, f"{run.epochs_done}/{run.total_epochs}"


def flatten(value, prefix: str = "") -> dict:
    """Nested dicts (and lists of dicts, by index) → ``{"a.b.0.c": leaf}``."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return {prefix: value}
    out = {}
    for key, item in items:
        out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def differing_keys(runs: list[Run]) -> list[str]:
    """Recipe keys whose values are not the same in every run, in recipe order."""
    keys: list[str] = []
    for run in runs:
        keys.extend(k for k in run.settings if k not in keys)
    return [k for k in keys if len({_canonical(r.settings.get(k)) for r in runs}) > 1]


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def store_teacher(store) -> str | None:
    """The teacher a store was made with (``manifest.json`` → ``teacher.source``), or None."""
    if not store:
        return None
    try:
        manifest = json.loads((Path(store) / "manifest.json").read_text())
        source = str(manifest["teacher"]["source"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    parts = Path(source).parts
    return str(Path(*parts[-2:])) if len(parts) > 2 else source


# How a setting is shown, by key; anything else goes through _show.
DISPLAY = {"data.store": lambda value: store_teacher(value) or _show(value)}


def _show(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(_show(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def compare_runs(run_dirs, sort_by: str | None = None) -> list[dict]:
    """One row per run: ``run``, the differing settings, ``SET``/``SET_epoch`` per
    evaluation set (best accuracy), ``epochs`` (done/total) and ``status``.

    ``sort_by`` (an evaluation set name) sorts by that best accuracy, descending; runs
    without it come last. Settings are display strings, accuracies floats and epochs ints
    (None where a run has no such set); see :func:`format_report`.
    """
    runs = [load_run(d) for d in run_dirs]
    if not runs:
        raise RunError("no run directories given")
    sets: list[str] = []
    for run in runs:
        sets.extend(s for s in run.eval_sets() if s not in sets)
    if sort_by is not None and sort_by not in sets:
        raise RunError(f"--sort-by {sort_by!r}: no run has that evaluation set; "
                       f"available: {', '.join(sets) or '(none)'}")
    keys = differing_keys(runs)
    rows = []
    for run in runs:
        row = {"run": run.name}
        for key in keys:
            row[key] = DISPLAY.get(key, _show)(run.settings.get(key))
        for name in sets:
            best = run.best(name)
            row[name], row[f"{name}_epoch"] = best if best else (None, None)
        row["epochs"] = f"{run.epochs_done}/{run.total_epochs}"
        row["status"] = run.status
        rows.append(row)
    if sort_by is not None:
        rows.sort(key=lambda r: (r[sort_by] is None, -(r[sort_by] or 0.0)))
    return rows


def final_metrics(run: Run, set_name: str) -> dict | None:
    """The metrics of ``set_name`` at the last epoch that evaluated it (the final model's)."""
    for record in reversed(run.history):
        metrics = record.get("eval", {}).get(set_name)
        if metrics:
            return metrics
    return None


def _mean_std(values: list[float], single_std: float | None) -> str:
    import numpy as np

    if not values:
        return "-"
    std = float(np.std(values)) if len(values) > 1 else single_std
    return f"{np.mean(values):.4f}" + ("" if std is None else f" ± {std:.4f}")


def _as_set(value):
    """The recipe value a run was given: ``auto 8.38`` (a measured weight) counts as ``auto``,
    so seeds of one ``weight: auto`` recipe merge although each measured its own weight."""
    return "auto" if isinstance(value, str) and value.startswith("auto ") else value


def _merged_setting(key: str, values: list) -> str:
    """One cell for a merged row: the setting, or the range of the weights ``auto`` measured."""
    shown = [DISPLAY.get(key, _show)(v) for v in values]
    if len(set(shown)) == 1:
        return shown[0]
    weights = sorted(float(v.split()[1]) for v in values)
    return f"auto {weights[0]:.3g}–{weights[-1]:.3g}"


def summarize_runs(run_dirs, evals=()) -> list[dict]:
    """Final-model results, runs that differ only in ``seed`` merged into one row.

    Seeds of a ``weight: auto`` recipe merge too (the weights they measured are shown as a
    range). Per evaluation set: accuracy as mean ± std over the seeds (one seed: ± the 10-fold std)
    and TAR@FAR=1e-3 (mean); then ``seeds``, ``params``, training minutes (mean over seeds) and
    seconds per epoch (mean over every epoch of every seed; training steps only, no evaluation). Nothing
    is selected on the evaluation sets (the last epoch counts). ``evals``: rows of
    ``distill eval --json`` (e.g. teachers that were not trained here), one row per model.
    """
    import numpy as np

    runs = [load_run(d) for d in run_dirs]
    keys = [k for k in differing_keys(runs) if k not in ("seed", "name")] if len(runs) > 1 else []
    sets: list[str] = []
    for run in runs:
        sets.extend(s for s in run.eval_sets() if s not in sets)
    for row in evals:
        if row["set"] not in sets:
            sets.append(row["set"])
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(_canonical([_as_set(run.settings.get(k)) for k in keys]), []).append(run)
    rows = []
    for members in groups.values():
        first = members[0]
        row = {"run": first.name if len(members) == 1 else f"{first.name} (+{len(members) - 1})"}
        row.update({k: _merged_setting(k, [m.settings.get(k) for m in members]) for k in keys})
        for name in sets:
            found = [m for m in (final_metrics(r, name) for r in members) if m]
            row[name] = _mean_std([m["accuracy"] for m in found], found[0].get("accuracy_std") if found else None)
            tars = [m["tar_at_far_1e-3"] for m in found if "tar_at_far_1e-3" in m]
            row[f"{name} TAR@1e-3"] = f"{np.mean(tars):.4f}" if tars else "-"
        row["seeds"] = len(members)
        params = [r.history[-1].get("params") for r in members if r.history and r.history[-1].get("params")]
        row["params"] = f"{params[0]:,}" if params else "-"
        minutes = [sum(h.get("seconds", 0) for h in r.history) / 60 for r in members]
        row["train min"] = f"{np.mean(minutes):.1f}" if any(minutes) else "-"
        per_epoch = [h["seconds"] for r in members for h in r.history if h.get("seconds")]
        row["s/epoch"] = f"{np.mean(per_epoch):.1f}" if per_epoch else "-"
        row["status"] = "complete" if all(r.complete for r in members) else "incomplete"
        rows.append(row)
    by_model: dict[str, dict] = {}
    for item in evals:
        row = by_model.setdefault(str(item["model"]), {"run": str(item["model"])})
        row[item["set"]] = _mean_std([item["accuracy"]], item.get("accuracy_std"))
        if "tar_at_far_1e-3" in item:
            row[f"{item['set']} TAR@1e-3"] = f"{item['tar_at_far_1e-3']:.4f}"
    columns = list(rows[0]) if rows else ["run"] + [c for s in sets for c in (s, f"{s} TAR@1e-3")]
    extra = [{c: row.get(c, "-") for c in columns} for row in by_model.values()]
    return extra + rows


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _text(rows: list[dict], markdown: bool) -> str:
    from distill.report.table import format_table

    return format_table([{k: _cell(v) for k, v in row.items()} for row in rows], markdown=markdown)


def _csv(rows: list[dict]) -> str:
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue().rstrip("\n")


FORMATS = {
    "markdown": lambda rows: _text(rows, markdown=True),
    "text": lambda rows: _text(rows, markdown=False),
    "csv": _csv,
}


def format_report(rows: list[dict], fmt: str = "markdown") -> str:
    """``rows`` of :func:`compare_runs` as ``markdown``, ``text`` or ``csv``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; available: {', '.join(FORMATS)}")
    return FORMATS[fmt](rows)
