"""The ``distill`` command line: a thin typer layer over the Python API.

Each module in ``COMMAND_MODULES`` defines ``register(app)`` adding its commands; heavy
imports (TensorFlow) happen inside the commands so that ``--help`` stays fast.
"""
from __future__ import annotations

import importlib

import typer

COMMAND_MODULES = (
    "embed",
    "train",
    "evaluate",
    "demo",
    "convert",
    "losses",
    "report",
    "deploy",
)

app = typer.Typer(
    name="distill",
    help="Knowledge distillation for face-recognition embeddings: embed with a teacher, "
    "train a student, evaluate verification accuracy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

@app.callback()
def _options(verbose: bool = typer.Option(False, "--verbose", help="Also show TensorFlow's C++ start-up and device lines (hidden by default; setting TF_CPP_MIN_LOG_LEVEL yourself shows them too).")):
    """Knowledge distillation for face-recognition embeddings."""
    from distill.quiet import quiet_tensorflow

    quiet_tensorflow(verbose)


for _module in COMMAND_MODULES:
    importlib.import_module(f"distill.cli.{_module}").register(app)


def main() -> None:
    """Console-script entry point."""
    app()
