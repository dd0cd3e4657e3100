"""``distill losses list`` and ``distill losses plot``."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from distill.cli.common import user_errors

MARGIN_LOSSES = ("arcface", "cosface", "sphereface", "sphere_arc", "cm1", "cm2")

losses_app = typer.Typer(help="The loss registry: list the losses, plot the margin presets.",
                         no_args_is_help=True)


def _format(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def loss_rows(kind: Optional[str] = None) -> list[dict]:
    """One row per registered loss: name, kind, params with defaults, reference."""
    from distill.losses import available

    return [{"name": name, "kind": spec.kind,
             "params": ", ".join(f"{k}={_format(v)}" for k, v in spec.defaults.items()),
             "reference": spec.reference}
            for name, spec in available().items() if kind in (None, spec.kind)]


def margin_curves(names=MARGIN_LOSSES, points: int = 361) -> dict:
    """name → (θ in degrees, target logit) of the registry's margin losses, computed with
    the losses' own transform; ``"no margin"`` is cosθ."""
    import numpy as np

    from distill.losses import get
    from distill.losses.margin import CombinedMargin, margin_target

    theta = np.linspace(0.0, np.pi, points)
    curves = {"no margin": (np.degrees(theta), np.cos(theta))}
    for name in names:
        loss = get(name)
        if not isinstance(loss, CombinedMargin):
            raise ValueError(f"'{name}' is not a combined-margin loss; valid: {', '.join(MARGIN_LOSSES)}, combined_margin")
        target = margin_target(np.cos(theta).astype(np.float32), loss.m1, loss.m2, loss.m3,
                               loss.easy_margin).numpy()
        label = f"{name} ({_format(loss.m1)}, {_format(loss.m2)}, {_format(loss.m3)})"
        curves[label] = (np.degrees(theta), target.astype(np.float64))
    return curves


def plot_curves(curves: dict, out: Path) -> None:
    """One labelled line per curve; x: θ (degrees), y: target logit."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        typer.echo("error: plotting needs matplotlib; install it with: pip install 'distill[plot]'",
                   err=True)
        raise typer.Exit(code=2) from None
    fig, ax = plt.subplots(figsize=(7, 5))
    for label, (x, y) in curves.items():
        ax.plot(x, y, label=label, linestyle="--" if label == "no margin" else "-")
    ax.set_xlabel("θ (degrees) between embedding and class weight")
    ax.set_ylabel("target logit  cos(m1·θ + m2) − m3")
    ax.set_xlim(0, 180)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


@losses_app.command("list")
def list_command(kind: Optional[str] = typer.Option(None, help="Only this kind: classification, metric or distillation.")):
    """Table of every loss: name, kind, parameters with defaults, reference."""
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
        curves = margin_curves(tuple(name) if name else MARGIN_LOSSES)
        plot_curves(curves, out)
        typer.echo(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(losses_app, name="losses")
