"""``distill demo``."""
from __future__ import annotations

from pathlib import Path

import typer

from distill.cli.common import user_errors


def demo_command(
    workdir: Path = typer.Option(Path("demo_output"), "--workdir", help="Folder for the demo's data, store, runs and results (recreated)."),
    quick: bool = typer.Option(False, "--quick", help="A tiny budget (a smoke test, about a minute); accuracies are meaningless."),
    seed: int = typer.Option(0, help="Random seed of every stage."),
    teacher: str = typer.Option("auto", help="dlib (pretrained, needs the [dlib] extra), trained (a MobileNet trained on the demo's images), or auto: dlib when installed."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
):
    """Teacher → store → two students (without and with distillation, weight auto) on the bundled ORL faces."""
    with user_errors():
        from dataclasses import replace

        from distill.demo import QUICK, DemoSettings, run_demo

        settings = replace(QUICK if quick else DemoSettings(), seed=seed, teacher=teacher)
        run_demo(workdir, settings, progress=progress, echo=typer.echo)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
