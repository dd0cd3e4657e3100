"""Verification results (rows of :func:`distill.evaluate`) as a table, CSV and ROC plot."""
from __future__ import annotations

import csv
from pathlib import Path

from distill.report.table import format_table


def _plain_rows(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "roc"} for r in rows]


def verification_table(rows: list[dict], markdown: bool = False) -> str:
    """One line per (model, set): 10-fold accuracy ± std and its threshold (InsightFace grid),
    the exact-search accuracy and threshold beside them when any differs, TAR@FAR=1e-3, AUC,
    and the fold layout when a set had to be stratified."""
    show_exact = any(abs(r.get("accuracy_exact", r["accuracy"]) - r["accuracy"]) > 1e-9 for r in rows)
    show_folds = any(r.get("folds", "contiguous") != "contiguous" for r in rows)
    table = []
    for r in rows:
        line = {"model": str(r["model"]), "set": r["set"],
                "accuracy": f"{100 * r['accuracy']:.2f} ± {100 * r['accuracy_std']:.2f}",
                "threshold": f"{r['threshold']:.3f}"}
        if show_exact:
            line["accuracy (exact)"] = f"{100 * r['accuracy_exact']:.2f} ± {100 * r['accuracy_exact_std']:.2f}"
            line["threshold (exact)"] = f"{r['threshold_exact']:.4f}"
        if "tar_at_far_1e-3" in r:
            line["TAR@FAR=1e-3"] = f"{100 * r['tar_at_far_1e-3']:.2f}"
        if "auc" in r:
            line["AUC"] = f"{r['auc']:.4f}"
        if show_folds:
            line["folds"] = r.get("folds", "contiguous")
        table.append(line)
    return format_table(table, markdown=markdown)


def write_csv(rows: list[dict], path) -> Path:
    """One line per (model, set) with every scalar metric."""
    path = Path(path)
    plain = _plain_rows(rows)
    fields = list(dict.fromkeys(k for r in plain for k in r))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(plain)
    return path


def plot_roc(rows: list[dict], path) -> Path:
    """ROC curves (TAR vs log FAR) of all models, one panel per set (rows need ``roc``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("ROC plots need matplotlib; install it with: pip install 'distill[plot]'") from None
    path = Path(path)
    sets = list(dict.fromkeys(r["set"] for r in rows))
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 4.5), squeeze=False)
    for ax, name in zip(axes[0], sets):
        for row in (r for r in rows if r["set"] == name):
            fpr, tpr = row["roc"]
            keep = fpr > 0
            ax.plot(fpr[keep], tpr[keep], label=f"{Path(str(row['model'])).name} ({100 * row['accuracy']:.2f}%)")
        ax.set_xscale("log")
        ax.set_xlabel("FAR (false accept rate)")
        ax.set_ylabel("TAR (true accept rate)")
        ax.set_title(name)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
