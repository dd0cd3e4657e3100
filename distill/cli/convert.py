"""``distill convert rec2folder`` (RecordIO → folders), ``convert folders2list``,
``convert pth2keras`` (arcface_torch ``backbone.pth`` → Keras) and ``convert mxnet2keras``
(an MXNet checkpoint → Keras)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from distill.cli.common import user_errors

convert_app = typer.Typer(help="Convert datasets and models between formats.", no_args_is_help=True)


@convert_app.command("rec2folder")
def rec2folder_command(
    rec: Path = typer.Argument(..., help="Folder with train.rec + train.idx (InsightFace layout), or a .rec file."),
    out: Path = typer.Argument(..., help="Output folder: OUT/<label>/<key>.<jpg|png|...> (resumable)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
):
    """Unpack a RecordIO set into class-per-folder images (original encoded bytes)."""
    with user_errors():
        from distill.data.recordio import rec_to_folder

        written, present = rec_to_folder(rec, out, progress=progress)
    typer.echo(f"{out}: {written} images written, {present} already present")


@convert_app.command("folders2list")
def folders2list_command(
    out: Path = typer.Argument(..., help="CSV file list to write (path,label; paths relative to its folder)."),
    labeled: list[str] = typer.Option([], "--from", help="A class-per-folder tree DIR (every class), or DIR:PEOPLE (only the classes named in the file PEOPLE: LFW people*.txt, or one name per line). Repeat for several; same-named classes merge."),
    unlabeled: list[Path] = typer.Option([], "--unlabeled", help="A folder of images without labels (any depth; used only by distillation)."),
):
    """Merge class folders (and unlabelled folders) into one training file list."""
    with user_errors():
        from distill.data.lists import merge_folders

        trees = []
        for spec in labeled:
            folder, sep, people = spec.rpartition(":")
            trees.append((folder, people) if sep and folder and Path(people).is_file() else spec)
        counts = merge_folders(out, trees, unlabeled=unlabeled)
    merged = f"; merged by name: {', '.join(counts['merged'])}" if counts["merged"] else ""
    typer.echo(f"{out}: {counts['images']} images, {counts['classes']} classes, "
               f"{counts['unlabeled']} unlabelled{merged}")


@convert_app.command("pth2keras")
def pth2keras_command(
    pth: Path = typer.Argument(..., help="arcface_torch backbone.pth (an IResNet state dict; fp16 or fp32)."),
    out: Path = typer.Argument(..., help="Keras model file to write (.keras), runnable as --teacher."),
):
    """Convert an InsightFace arcface_torch IResNet checkpoint to Keras (no PyTorch needed)."""
    with user_errors():
        from teachers.pth_teacher import pth_to_keras

        layout = pth_to_keras(pth, out)
    typer.echo(f"{out}: IResNet blocks {layout['blocks']}, widths {layout['widths']}, "
               f"{layout['embedding']}-d embedding; input (pixel - 127.5) / 128 RGB, as every Keras teacher")


@convert_app.command("mxnet2keras")
def mxnet2keras_command(
    spec: str = typer.Argument(..., help="MXNet checkpoint: PREFIX-symbol.json or PREFIX-EPOCH.params (the partner file is found beside it), optionally PATH#NODE."),
    out: Path = typer.Argument(..., help="The .keras file to write (atomically)."),
    output: Optional[str] = typer.Option(None, "--output", help="Output node (default: fc1, InsightFace's embedding; NODE or NODE_output)."),
):
    """Convert an MXNet (InsightFace) checkpoint to Keras, without MXNet."""
    with user_errors():
        from teachers.mxnet_teacher import mxnet_to_keras

        done = mxnet_to_keras(spec, out, output)
    contract = "raw uint8 RGB pixels (the graph normalises them)" if done["raw_pixels"] else "(pixel - 127.5) / 128 RGB"
    typer.echo(f"{out}: {done['symbol'].name} + {done['params'].name} up to node {done['output']!r}, "
               f"{done['layers']} layers, {done['embedding_dim']}-d; input: {contract}")


def register(app: typer.Typer) -> None:
    app.add_typer(convert_app, name="convert")
