"""Training curves of several runs on shared axes, one subplot per metric.

Metrics: ``loss`` (the history's total loss), ``loss.TERM`` (any loss term, e.g.
``loss.distill``), ``lr``, or an evaluation set name (its accuracy). Stage boundaries are
drawn as vertical lines named by the stage's loss, scale, extra terms and learning rate.
A resumed run is one continuous curve (its history is appended; a repeated epoch keeps
its last record). :func:`curve_data` returns exactly what is drawn.
"""
from __future__ import annotations

from pathlib import Path

from distill.report.runs import Run, RunError, load_run


def _loss_term(term: str):
    return lambda record: record.get("loss", {}).get(term)


def _accuracy(set_name: str):
    return lambda record: record.get("eval", {}).get(set_name, {}).get("accuracy")


# Named metrics; "loss.TERM" reads a loss term, any other name an evaluation set.
METRICS = {
    "loss": _loss_term("total"),
    "lr": lambda record: record.get("lr"),
}
PREFIXES = {"loss.": _loss_term}


def metric_reader(name: str):
    """``record → value or None`` for a metric name (see the module docstring)."""
    if name in METRICS:
        return METRICS[name]
    for prefix, factory in PREFIXES.items():
        if name.startswith(prefix):
            return factory(name[len(prefix):])
    return _accuracy(name)


def available_metrics(runs: list[Run]) -> list[str]:
    names = list(METRICS)
    for run in runs:
        for record in run.history:
            names.extend(f"loss.{t}" for t in record.get("loss", {}) if f"loss.{t}" not in names)
        names.extend(s for s in run.eval_sets() if s not in names)
    return names


def stage_label(stage) -> str:
    """E.g. ``arcface s=64 + distill×64, lr 0.001`` for a resolved stage."""
    parts = []
    if stage.weight("classification"):
        text = stage.loss.get("name", "?")
        if stage.loss.get("scale") is not None:
            text += f" s={float(stage.loss['scale']):g}"
        weight = stage.weight("classification")
        parts.append(text if weight == 1 else f"{text}×{weight:g}")
    for label, config in stage.term_configs().items():
        if label != "classification" and stage.weight(label):
            weight = "auto" if label in stage.auto_targets() else f"{stage.weight(label):g}"
            parts.append(f"{config.get('name', label)}×{weight}")
    return f"{' + '.join(parts) or '-'}, lr {stage.lr:g}"


def _stages(run: Run) -> list[dict]:
    from distill.train.stages import resolve_stages

    return [{"index": s.index, "first_epoch": s.first_epoch + 1, "x": s.first_epoch + 0.5,
             "label": stage_label(s)} for s in resolve_stages(run.recipe)]


def curve_data(run_dirs, metrics) -> dict:
    """What :func:`plot_runs` draws::

        {"metrics": [...],
         "runs": [{"run", "path", "curves": {metric: {"x": [epoch...], "y": [value...]}},
                   "stages": [{"index", "first_epoch", "x", "label"}]}],
         "boundaries": [{"x", "label"}]}      # stage starts of all runs, merged by x

    ``x`` is the 1-based global epoch; an epoch without the metric is left out.
    """
    metrics = [m.strip() for m in metrics if m.strip()]
    if not metrics:
        raise RunError("no metrics given (e.g. loss,lfw)")
    runs = [load_run(d) for d in run_dirs]
    if not runs:
        raise RunError("no run directories given")
    out = {"metrics": metrics, "runs": [], "boundaries": []}
    for run in runs:
        curves = {}
        for metric in metrics:
            read = metric_reader(metric)
            points = [(r["epoch"], read(r)) for r in run.history]
            points = [(x, float(y)) for x, y in points if y is not None]
            curves[metric] = {"x": [x for x, _ in points], "y": [y for _, y in points]}
        out["runs"].append({"run": run.name, "path": str(run.path), "curves": curves,
                            "stages": _stages(run)})
    for metric in metrics:
        if not any(r["curves"][metric]["x"] for r in out["runs"]):
            raise RunError(f"metric {metric!r} is in no run's history; available: "
                           f"{', '.join(available_metrics(runs))}")
    labels: dict[float, list[str]] = {}
    for run in out["runs"]:
        for stage in run["stages"]:
            labels.setdefault(stage["x"], [])
            if stage["label"] not in labels[stage["x"]]:
                labels[stage["x"]].append(stage["label"])
    out["boundaries"] = [{"x": x, "label": " | ".join(labels[x])} for x in sorted(labels)]
    return out


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise RunError("plotting needs matplotlib, which is not installed: "
                       "pip install 'distill[plot]' (or pip install matplotlib)") from None
    return Figure, FigureCanvasAgg, MaxNLocator


def plot_runs(run_dirs, metrics, out) -> Path:
    """Draw :func:`curve_data` into the image file ``out`` (PNG, SVG, PDF by suffix)."""
    Figure, FigureCanvasAgg, MaxNLocator = _matplotlib()
    data = curve_data(run_dirs, metrics)
    out = Path(out)
    n = len(data["metrics"])
    figure = Figure(figsize=(9, 2.6 * n + 0.8), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    for ax, metric in zip(axes, data["metrics"]):
        for index, run in enumerate(data["runs"]):        # a run keeps its colour in every subplot
            curve = run["curves"][metric]
            ax.plot(curve["x"], curve["y"], marker="o", markersize=3, color=f"C{index % 10}",
                    label=run["run"])
        for boundary in data["boundaries"]:
            ax.axvline(boundary["x"], color="0.5", linestyle="--", linewidth=0.8)
        ax.set_ylabel(metric if metric in METRICS or metric.startswith("loss.") else f"{metric} accuracy")
        ax.grid(True, alpha=0.3)
    top = axes[0]
    lines = max((b["label"].count(" | ") + 1) * 2 for b in data["boundaries"]) if data["boundaries"] else 0
    low, high = top.get_ylim()
    top.set_ylim(low, high + 0.08 * lines * (high - low))      # headroom for the stage names
    for boundary in data["boundaries"]:
        text = "\n".join(label.replace(", lr", "\nlr") for label in boundary["label"].split(" | "))
        note = top.text(boundary["x"], 0.98, text, transform=top.get_xaxis_transform(), va="top",
                        ha="left", fontsize=6.5, color="0.25",
                        bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 1})
        note.set_in_layout(False)
    top.legend(fontsize=8, loc="lower right")
    axes[-1].set_xlabel("epoch")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    last = max((x for r in data["runs"] for c in r["curves"].values() for x in c["x"]), default=1)
    axes[-1].set_xlim(0.4, last + 0.6)
    figure.suptitle("training curves: " + ", ".join(r["run"] for r in data["runs"]), fontsize=10)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    return out
