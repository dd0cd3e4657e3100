"""``distill eval`` (verification accuracy of models on sets) and ``distill make-bin``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from distill.cli.common import check_writable, describe_os_error, fail, user_errors


def eval_command(
    model: List[str] = typer.Option(..., "--model", "-m", help="Embedding model: .keras/.h5/SavedModel, .onnx, .tflite, MXNet PREFIX-EPOCH.params[#NODE], or a plugin package.module:function (as for --teacher); repeat for several."),
    bin_: Optional[List[Path]] = typer.Option(None, "--bin", "-b", help="InsightFace .bin verification set; repeat for several."),
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="LFW-style pairs.txt (needs --images)."),
    images: Optional[Path] = typer.Option(None, "--images", help="Image folder for --pairs: DIR/name/name_0001.jpg."),
    flip: bool = typer.Option(True, "--flip/--no-flip", help="Flip test: add the embedding of the mirrored image."),
    batch_size: int = typer.Option(128, "--batch-size", min=1, help="Images per model call."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write all metrics of every model and set as JSON."),
    csv_out: Optional[Path] = typer.Option(None, "--csv", help="Write all metrics as CSV, one line per model and set."),
    roc: Optional[Path] = typer.Option(None, "--roc", help="Save ROC curves of all models (log FAR axis) to this image."),
) -> None:
    """Verification accuracy (10-fold, InsightFace protocol) of models on .bin sets / a pairs file."""
    with user_errors():
        if (pairs is None) != (images is None):
            fail("--pairs and --images must be given together")
        if not bin_ and pairs is None:
            fail("give at least one --bin or a --pairs file with --images")
        for option, path in (("--json", json_out), ("--csv", csv_out), ("--roc", roc)):
            check_writable(path, option)   # before any work, not after it
        from distill.evals.pairs import load_pairs_set
        from distill.evals.verification import evaluate_models
        from distill.report.verification import plot_roc, verification_table, write_csv
        from distill.utils import atomic_write_text

        extra = [load_pairs_set(pairs, images)] if pairs is not None else []
        rows = evaluate_models(model, bin_ or [], flip=flip, batch_size=batch_size, sets=extra, roc=roc is not None)
        typer.echo(verification_table(rows))
        metrics = [{k: v for k, v in r.items() if k != "roc"} for r in rows]
        outputs = [(json_out, lambda p: atomic_write_text(p, json.dumps(metrics, indent=2))),
                   (csv_out, lambda p: write_csv(rows, p)), (roc, lambda p: plot_roc(rows, p))]
        failed = [path for path, write in outputs if path is not None and not _write_output(path, write)]
        if failed:   # every other output was still written
            raise typer.Exit(code=2)


def make_bin_command(
    source: Optional[Path] = typer.Argument(None, help="Class-per-folder image tree (one folder per person)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .bin file."),
    n_pairs: int = typer.Option(600, "--pairs", min=2, help="Number of pairs (half same, half different)."),
    seed: int = typer.Option(0, "--seed", help="Random seed for drawing the pairs."),
    pairs_file: Optional[Path] = typer.Option(None, "--pairs-file", help="Use the pairs of an LFW-style pairs.txt instead of drawing them."),
    images: Optional[Path] = typer.Option(None, "--images", help="Image folder for --pairs-file: DIR/name/name_0001.jpg."),
) -> None:
    """Build an InsightFace .bin verification set from a folder tree or an LFW pairs.txt."""
    with user_errors():
        if pairs_file is not None:
            if images is None or source is not None:
                fail("--pairs-file needs --images and no DIR argument")
        elif source is None or images is not None:
            fail("give DIR (a class-per-folder tree), or --pairs-file with --images")
        check_writable(out, "--out")
        if pairs_file is not None:
            from distill.evals.pairs import pairs_to_bin

            path = pairs_to_bin(pairs_file, images, out)
        else:
            from distill.evals.bins import make_bin

            path = make_bin(source, out, n_pairs=n_pairs, seed=seed)
        from distill.evals.bins import read_bin

        _, issame = read_bin(path)
    typer.echo(f"wrote {path}: {issame.size} pairs ({int(issame.sum())} same, {int((~issame).sum())} different)")


def eval_ijb_command(
    model: List[str] = typer.Option(..., "--model", "-m", help="Embedding model: .keras/.h5/SavedModel, .onnx, .tflite or a plugin module:function; repeat for several."),
    root: Path = typer.Option(..., "--root", help="IJB-B/IJB-C folder: loose_crop images + meta files (*_face_tid_mid.txt, *_name_5pts_score.txt, *_template_pair_label.txt)."),
    prefix: Optional[str] = typer.Option(None, "--prefix", help="Meta file prefix, e.g. ijbc or ijbb (default: found in --root)."),
    flip: bool = typer.Option(True, "--flip/--no-flip", help="Add the embedding of the mirrored face."),
    batch_size: int = typer.Option(128, "--batch-size", min=1, help="Images per model call."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON."),
) -> None:
    """IJB-B/C 1:1 verification: align with 5 landmarks, template features, TAR@FAR 1e-6…1e-1."""
    with user_errors():
        check_writable(json_out, "--json")
        from distill.evals.ijb import evaluate_ijb
        from distill.evals.verification import model_embed_fn
        from distill.report.table import format_table as plain_table
        from distill.utils import atomic_write_text

        rows = []
        for path in model:
            result = evaluate_ijb(model_embed_fn(path, batch_size), root,
                                  prefix=prefix, batch_size=batch_size, flip=flip)
            rows.append({"model": str(path), **{k: (f"{v:.4f}" if isinstance(v, float) else v)
                                                 for k, v in result.items()}})
        typer.echo(plain_table(rows))
        if json_out is not None and not _write_output(json_out, lambda p: atomic_write_text(p, json.dumps(rows, indent=2))):
            raise typer.Exit(code=2)


def _write_output(path: Path, write) -> bool:
    """Write one output of results already printed; a failure is reported, not fatal to the others."""
    from distill.utils import remove_temporaries

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_temporaries(path.parent, f".{path.name}.")   # left by an interrupted earlier write
        write(path)
    except OSError as exc:
        message = describe_os_error(exc) if exc.filename else f"{path}: {exc.strerror or exc}"
        typer.echo(f"error: {message} (the table above holds the results)", err=True)
        return False
    typer.echo(f"wrote {path}")
    return True


def register(app: typer.Typer) -> None:
    """Add ``eval``, ``eval-ijb`` and ``make-bin`` to the ``distill`` app."""
    app.command("eval")(eval_command)
    app.command("eval-ijb")(eval_ijb_command)
    app.command("make-bin")(make_bin_command)
