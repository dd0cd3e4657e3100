"""``distill report``, ``distill plot`` and ``distill run-status``: compare run directories."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from distill.cli.common import user_errors


def report_command(
    runs: List[Path] = typer.Argument(..., help="Run directories of `distill train` (e.g. sweeps/out/*)."),
    csv: bool = typer.Option(False, "--csv", help="Comma-separated values instead of Markdown."),
    markdown: bool = typer.Option(False, "--markdown", help="A Markdown table (the default)."),
    sort_by: Optional[str] = typer.Option(None, "--sort-by", help="Sort by this evaluation set's best accuracy, descending."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the table to this file instead of printing it."),
    final: bool = typer.Option(False, "--final", help="Final models only (no selection on evaluation sets): runs differing only in seed merged (mean ± std), TAR@FAR=1e-3, params, training minutes, seconds per epoch."),
    evals: List[Path] = typer.Option([], "--evals", help="With --final: also rows from `distill eval --json` files (e.g. teachers)."),
):
    """One row per run: the settings that differ (from each recipe.yaml), best accuracy and epoch per set, progress."""
    with user_errors():
        from distill.report.runs import RunError, compare_runs, format_report, summarize_runs

        if csv and markdown:
            raise RunError("give --csv or --markdown, not both")
        if final:
            import json

            rows = [row for path in evals for row in json.loads(path.read_text())]
            table = summarize_runs(runs, rows)
        else:
            table = compare_runs(runs, sort_by=sort_by)
        text = format_report(table, "csv" if csv else "markdown")
        if out is None:
            typer.echo(text)
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        typer.echo(f"report: {out}")


def plot_command(
    runs: List[Path] = typer.Argument(..., help="Run directories of `distill train`."),
    metrics: str = typer.Option("loss", "--metrics", help="Comma-separated: loss, loss.TERM (e.g. loss.distill), lr, or evaluation set names (accuracy)."),
    out: Path = typer.Option(Path("curves.png"), "--out", help="Image file to write (.png, .svg, .pdf)."),
):
    """Curves over epochs of several runs, one subplot per metric, stage boundaries marked."""
    with user_errors():
        from distill.report.plots import plot_runs

        typer.echo(f"plot: {plot_runs(runs, metrics.split(','), out)}")


def run_status_command(
    runs: List[Path] = typer.Argument(..., help="Run directories (they need not exist)."),
):
    """Print `complete|resume|new<TAB>RUN<TAB>DONE/TOTAL` per run, for sweep scripts; exit 0 only if all are complete.

    complete: every epoch of the recipe is done and model.keras saved; resume: a checkpoint to continue from
    (`distill train --resume RUN`); new: nothing to continue (train it from its recipe).
    """
    with user_errors():
        from distill.report.runs import run_status

        all_complete = True
        for path in runs:
            word, progress = run_status(path)
            all_complete &= word == "complete"
            typer.echo(f"{word}\t{path}\t{progress}")
    if not all_complete:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
    app.command("plot")(plot_command)
    app.command("run-status")(run_status_command)
