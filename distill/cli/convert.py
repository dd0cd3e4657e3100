"""``distill convert rec2folder``: an MXNet RecordIO set → a class-per-folder image tree."""
from __future__ import annotations

import os
from pathlib import Path

import typer

from distill.cli.common import user_errors

#: leading bytes → file extension of the encoded image.
IMAGE_SIGNATURES = {
    b"\xff\xd8\xff": "jpg",
    b"\x89PNG\r\n\x1a\n": "png",
    b"BM": "bmp",
    b"GIF87a": "gif",
    b"GIF89a": "gif",
}


def image_extension(data: bytes, where: str) -> str:
    """File extension for encoded image bytes, from their signature."""
    from distill.data.sources import DataError

    for signature, extension in IMAGE_SIGNATURES.items():
        if data.startswith(signature):
            return extension
    raise DataError(f"{where}: not a JPEG/PNG/BMP/GIF image (starts with {data[:8].hex() or 'nothing'})")


def rec_to_folder(rec, out, progress: bool = True) -> tuple[int, int]:
    """Write every image of the RecordIO set ``rec`` to ``out/<label>/<key>.<ext>`` with its
    original bytes. Files already there are kept (each is written to a temporary name and
    renamed, so a present file is complete), which makes an interrupted run resumable.
    Returns ``(written, already present)``.
    """
    from tqdm import tqdm

    from distill.data.recordio import open_recordio

    source = open_recordio(rec, progress=progress)
    out = Path(out)
    written = present = 0
    current, done = None, set()  # records come grouped by class: list each folder once
    with tqdm(total=len(source), desc="rec2folder", unit="img", disable=not progress) as bar:
        for sample_id, (key, label) in enumerate(zip(source.keys.tolist(), source.labels.tolist())):
            folder = out / str(label)
            if label != current:
                folder.mkdir(parents=True, exist_ok=True)
                current = label
                done = {f.split(".")[0] for f in os.listdir(folder) if not f.startswith(".")}
            if str(key) in done:
                present += 1
            else:
                data = source.read_encoded(sample_id)
                target = folder / f"{key}.{image_extension(data, source.describe(sample_id))}"
                tmp = folder / f".{target.name}.tmp-{os.getpid()}"
                tmp.write_bytes(data)
                os.replace(tmp, target)
                written += 1
            bar.update(1)
    return written, present


convert_app = typer.Typer(help="Convert datasets between formats.", no_args_is_help=True)


@convert_app.command("rec2folder")
def rec2folder_command(
    rec: Path = typer.Argument(..., help="Folder with train.rec + train.idx (InsightFace layout), or a .rec file."),
    out: Path = typer.Argument(..., help="Output folder: OUT/<label>/<key>.<jpg|png|...> (resumable)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
):
    """Unpack a RecordIO set into class-per-folder images (original encoded bytes)."""
    with user_errors():
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


def register(app: typer.Typer) -> None:
    app.add_typer(convert_app, name="convert")
