"""``distill embed`` and ``distill store verify|info``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from distill.cli.common import user_errors


def embed_command(
    teacher: Optional[str] = typer.Option(None, "--teacher", help="Teacher model: .keras/.h5 file, SavedModel folder, .onnx, .tflite, an MXNet checkpoint PREFIX-symbol.json or PREFIX-EPOCH.params (optionally #NODE), or a plugin package.module:function."),
    data: Optional[Path] = typer.Option(None, "--data", help="Training images: a class-per-folder tree, a CSV/TSV file list, or an InsightFace train.rec folder."),
    out: Optional[Path] = typer.Option(None, "--out", help="Store folder to create (or resume): manifest.json + shard-NNNNN.h5."),
    recipe: Optional[Path] = typer.Option(None, "--recipe", help="YAML file with any of these settings (command-line options override it), e.g. recipes/embed_r100.yaml."),
    batch_size: Optional[int] = typer.Option(None, help="Images per teacher call (default: 128)."),
    shard_size: Optional[int] = typer.Option(None, help="Rows per HDF5 shard (default: 10000)."),
    dtype: Optional[str] = typer.Option(None, help="Stored embedding dtype: float16 or float32 (default: float16)."),
    flip: Optional[bool] = typer.Option(None, "--flip/--no-flip", help="Also store embedding_flip (teacher on the mirrored image) (default: no)."),
    mean: Optional[float] = typer.Option(None, help="Teacher input: subtract this from pixels (default: 127.5)."),
    std: Optional[float] = typer.Option(None, help="Teacher input: then divide by this (default: 128; InsightFace ONNX models use 127.5)."),
    bgr: Optional[bool] = typer.Option(None, "--bgr/--rgb", help="Teacher input channel order (default: RGB)."),
    nchw: Optional[bool] = typer.Option(None, "--nchw/--nhwc", help="Teacher input layout (default: NHWC; ONNX/TFLite read it from the graph)."),
    condition: Optional[str] = typer.Option(None, "--condition", help="When complete, fit a conditioning of the teacher space: center (subtract the training mean), whiten, or none. Training then reads conditioned targets."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over if the store was made with other settings."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Record unreadable images in the manifest and go on, instead of stopping."),
    strict: bool = typer.Option(False, "--strict", help="Fingerprint the images by their SHA-256 (default: size and modification time); training refuses the store if they change."),
    num_workers: int = typer.Option(1, help="Total number of workers sharing this store (shards are split among them)."),
    worker_index: int = typer.Option(0, help="This worker's index, from 0 to num-workers − 1."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
):
    """Embed every image with the teacher into a sharded HDF5 store (resumable)."""
    with user_errors():
        from distill.store.config import load_embed_config
        from distill.store.manifest import StoreError
        from distill.store.writer import embed

        settings = load_embed_config(recipe) if recipe else {}
        given = {"teacher": teacher, "data": data, "out": out, "batch_size": batch_size,
                 "shard_size": shard_size, "dtype": dtype, "flip": flip, "condition": condition}
        settings.update({k: v for k, v in given.items() if v is not None})
        missing = [f"--{k}" for k in ("teacher", "data", "out") if not settings.get(k)]
        if missing:
            raise StoreError(f"missing {', '.join(missing)} (give them, or a --recipe that sets them)")
        out = Path(settings["out"])
        if any(v is not None for v in (mean, std, bgr, nchw)):
            from teachers.base import Preprocess

            defaults = Preprocess()
            settings["preprocess"] = Preprocess(
                mean=defaults.mean if mean is None else mean, std=defaults.std if std is None else std,
                channel_order="BGR" if bgr else "RGB", layout="NCHW" if nchw else "NHWC")
        settings["strict"] = strict or settings.get("strict", False)
        manifest = embed(**settings, overwrite=overwrite, skip_bad=skip_bad,
                         num_workers=num_workers, worker_index=worker_index, progress=progress)
        typer.echo(f"{out}: {sum(s['count'] for s in manifest.shards.values())} embeddings "
                   f"(dim {manifest.embedding_dim}, {manifest.dtype}) in {len(manifest.shards)}/"
                   f"{manifest.num_shards} shards; {len(manifest.skipped)} skipped; "
                   f"conditioning {manifest.conditioning.get('mode', 'none')}")


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
def info_command(store: Path = typer.Argument(..., help="Store folder."),
                 shape: bool = typer.Option(True, "--shape/--no-shape", help="Measure the teacher space's shape (reads every embedding).")):
    """Summarise a store: samples, classes, dim, dtype, shards, teacher, size, space shape."""
    with user_errors():
        from distill.store.verify import store_info, store_shape

        for key, value in store_info(store).items():
            typer.echo(f"{key:>14}: {value}")
        if shape:
            for line in store_shape(store):
                typer.echo(line)


@store_app.command("condition")
def condition_command(store: Path = typer.Argument(..., help="Store folder (complete)."),
                      mode: str = typer.Option("center", help="center (subtract the training-set mean), whiten (ZCA, shrunk), or none (remove)."),
                      shrinkage: float = typer.Option(0.1, help="whiten: add this × the mean eigenvalue to every eigenvalue.")):
    """Fit a conditioning of the teacher space on the store and record it in the manifest."""
    with user_errors():
        from distill.store.conditioning import fit_conditioning
        from distill.store.verify import store_shape

        manifest = fit_conditioning(store, mode, shrinkage)
        typer.echo(f"{store}: conditioning {manifest.conditioning['mode']}")
        for line in store_shape(store):
            typer.echo(line)


def register(app: typer.Typer) -> None:
    app.command("embed")(embed_command)
    app.add_typer(store_app, name="store")
