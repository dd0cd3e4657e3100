"""``distill losses list`` and ``distill losses plot``."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from distill.cli.common import user_errors

losses_app = typer.Typer(help="The loss registry: list the losses, plot the margin presets.",
                         no_args_is_help=True)


@losses_app.command("list")
def list_command(kind: Optional[str] = typer.Option(None, help="Only this kind: classification, metric or distillation.")):
    """Table of every loss: name, kind, parameters with defaults, reference."""
    from distill.report.losses import loss_rows
    from distill.report.table import format_table

    with user_errors():
        from distill.losses import KINDS

        if kind is not None and kind not in KINDS:
            raise ValueError(f"unknown kind '{kind}'; valid: {', '.join(KINDS)}")
        typer.echo(format_table(loss_rows(kind)))


@losses_app.command("plot")
def plot_command(
    out: Path = typer.Option(Path("margins.png"), "--out", "-o", help="PNG to write."),
    name: Optional[List[str]] = typer.Option(None, "--name", "-n", help="Margin loss to draw (repeatable); default: all presets."),
):
    """Plot the target-logit transform of the margin presets against θ."""
    with user_errors():
        from distill.report.losses import MARGIN_LOSSES, margin_curves, plot_curves

        curves = margin_curves(tuple(name) if name else MARGIN_LOSSES)
        plot_curves(curves, out)
        typer.echo(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(losses_app, name="losses")
