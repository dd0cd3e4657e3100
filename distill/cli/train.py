"""``distill train``."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from distill.cli.common import user_errors


def train_command(
    recipe: Optional[Path] = typer.Option(None, "--recipe", help="YAML recipe (may 'extends:' a base recipe)."),
    set_: List[str] = typer.Option([], "--set", help="Override a recipe key, e.g. --set stages.0.epochs=3 --set model.dropout=0.4 (repeatable)."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Run directory (default: runs/<recipe name>)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this directory from its last checkpoint."),
    stop_after_epochs: Optional[int] = typer.Option(None, "--stop-after-epochs", help="End this call after N epochs (checkpointed); continue later with --resume."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    check: bool = typer.Option(False, "--check", help="Only check the recipe (names, parameters, ranges, files), print it resolved with the model's size and each stage's terms, and exit."),
):
    """Train a student on classification + embedding distillation from a recipe."""
    with user_errors():
        from distill.train.trainer import TrainingError, train

        if resume is None and recipe is None:
            raise TrainingError("give --recipe FILE.yaml (or --resume RUN_DIR)")
        if check:
            from distill.train.checks import preflight
            from distill.train.recipe import load_recipe
            from distill.train.run_dir import RunDir

            source = RunDir(resume).recipe if resume else recipe
            for line in preflight(load_recipe(source, set_), str(source)):
                typer.echo(line)
            return
        result = train(recipe, run_dir=resume or run_dir, overrides=set_, resume=resume is not None,
                       progress=progress, stop_after_epochs=stop_after_epochs)
        typer.echo(f"run: {result.run_dir}")
        if result.best:
            typer.echo(f"best {result.best['set']} accuracy {result.best['accuracy']:.4f} "
                       f"at epoch {result.best['epoch']} -> {result.best_model}")
        typer.echo(f"final model: {result.final_model}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
