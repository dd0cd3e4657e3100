"""Shared CLI plumbing: turn the API's input errors into one clear line and exit code 2."""
from __future__ import annotations

import contextlib
import errno
import logging
import os
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


_OS_REASONS = {   # errno → what it means for the user, and the fix
    errno.ENOSPC: "no space left on the device; free some space and run the same command again "
                  "(finished work is kept)",
    errno.EDQUOT: "disk quota exceeded; free some space and run the same command again (finished work is kept)",
    errno.EFBIG: "file too large for this file system or limit; free space or raise the limit and run again",
    errno.EACCES: "permission denied; choose a writable location or fix the permissions",
    errno.EPERM: "operation not permitted; choose a writable location or fix the permissions",
    errno.EROFS: "read-only file system; choose a writable location",
    errno.ENOTDIR: "a part of this path is a file, not a folder; choose another path",
    errno.EEXIST: "exists and is not a folder; choose another path",
    errno.EISDIR: "is a folder; give a file name",
}


def describe_os_error(exc: OSError) -> str:
    """One line: the path (when known), what went wrong and what to do."""
    from distill.utils import first_line

    reason = _OS_REASONS.get(exc.errno) or (exc.strerror if exc.errno else first_line(exc))
    return f"{exc.filename}: {reason}" if exc.filename else reason


@contextlib.contextmanager
def user_errors():
    """Print one line ``error: <message>`` (exit 2) instead of a traceback: for expected input
    errors, file system errors (full disk, unwritable output) and, as a last resort, any other
    error (``DISTILL_TRACEBACK=1`` shows its traceback instead)."""
    from distill.utils import first_line

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except OSError as exc:
        fail(describe_os_error(exc) if exc.errno else first_line(exc))
    except (known_errors() + (ValueError,)) as exc:  # ValueError: registries (unknown loss, ...)
        fail(first_line(exc))
    except Exception as exc:  # noqa: BLE001 - the last resort: one line, never a traceback
        if os.environ.get("DISTILL_TRACEBACK") or type(exc).__module__.startswith("typer"):
            raise
        fail(f"{first_line(exc)} ({type(exc).__name__}; set DISTILL_TRACEBACK=1 to see where)")


def check_writable(path, option: str) -> None:
    """Fail at once (one line naming ``option``) if the output file ``path`` cannot be written."""
    import tempfile
    from pathlib import Path

    if path is None:
        return
    path = Path(path)
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"):
            pass
    except OSError as exc:
        fail(f"{option} {describe_os_error(exc)}")


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2) from None


def echo_table(rows: list[dict], file=sys.stdout) -> None:
    from distill.report.table import format_table

    typer.echo(format_table(rows), file=file)
