"""``distill embed`` and ``distill store verify|info``."""
from __future__ import annotations

from pathlib import Path

import typer

from distill.cli.common import user_errors


def embed_command(
    teacher: str = typer.Option(..., "--teacher", help="Teacher model: .keras/.h5 file or SavedModel folder."),
    data: Path = typer.Option(..., "--data", help="Training images: a class-per-folder tree or a CSV/TSV file list."),
    out: Path = typer.Option(..., "--out", help="Store folder to create (or resume): manifest.json + shard-NNNNN.h5."),
    batch_size: int = typer.Option(128, help="Images per teacher call."),
    shard_size: int = typer.Option(10000, help="Rows per HDF5 shard."),
    dtype: str = typer.Option("float16", help="Stored embedding dtype: float16 or float32."),
    flip: bool = typer.Option(False, "--flip/--no-flip", help="Also store embedding_flip (teacher on the mirrored image)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over if the store was made with other settings."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Record unreadable images in the manifest and go on, instead of stopping."),
    num_workers: int = typer.Option(1, help="Total number of workers sharing this store (shards are split among them)."),
    worker_index: int = typer.Option(0, help="This worker's index in [0, num-workers)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
):
    """Embed every image with the teacher into a sharded HDF5 store (resumable)."""
    with user_errors():
        from distill.store.writer import embed

        manifest = embed(teacher, data, out, batch_size=batch_size, shard_size=shard_size,
                         dtype=dtype, flip=flip, overwrite=overwrite, skip_bad=skip_bad,
                         num_workers=num_workers, worker_index=worker_index, progress=progress)
        typer.echo(f"{out}: {sum(s['count'] for s in manifest.shards.values())} embeddings "
                   f"(dim {manifest.embedding_dim}, {manifest.dtype}) in {len(manifest.shards)}/"
                   f"{manifest.num_shards} shards; {len(manifest.skipped)} skipped")


store_app = typer.Typer(help="Inspect and check embedding stores.", no_args_is_help=True)


@store_app.command("verify")
def verify_command(store: Path = typer.Argument(..., help="Store folder.")):
    """Check every sample_id once, shapes, dtype, unit norms, no NaN, counts = manifest."""
    with user_errors():
        from distill.store.verify import verify_store

        problems = verify_store(store)
    if problems:
        for problem in problems:
            typer.echo(f"FAIL {problem}", err=True)
        raise typer.Exit(code=1)
    typer.echo(f"{store}: OK")


@store_app.command("info")
def info_command(store: Path = typer.Argument(..., help="Store folder.")):
    """Summarise a store: samples, classes, dim, dtype, shards, teacher, size."""
    with user_errors():
        from distill.store.verify import store_info

        for key, value in store_info(store).items():
            typer.echo(f"{key:>14}: {value}")


def register(app: typer.Typer) -> None:
    app.command("embed")(embed_command)
    app.add_typer(store_app, name="store")
