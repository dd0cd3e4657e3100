"""Shared CLI plumbing: turn the API's input errors into one clear line and exit code 2."""
from __future__ import annotations

import contextlib
import logging
import sys

import typer


def known_errors() -> tuple:
    """Error classes whose message is meant for the user (file + problem)."""
    from distill.data.sources import DataError
    from distill.store.manifest import StoreError
    from distill.train.recipe import RecipeError
    from teachers.base import TeacherError

    errors = [DataError, StoreError, RecipeError, TeacherError, FileNotFoundError]
    with contextlib.suppress(ImportError):
        from distill.train.trainer import TrainingError

        errors.append(TrainingError)
    return tuple(errors)


@contextlib.contextmanager
def user_errors():
    """Print ``error: <message>`` for expected input errors instead of a traceback."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        yield
    except known_errors() as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    except ValueError as exc:  # validation errors from registries (unknown loss, backbone, ...)
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None


def echo_table(rows: list[dict], file=sys.stdout) -> None:
    from distill.report.table import format_table

    typer.echo(format_table(rows), file=file)
