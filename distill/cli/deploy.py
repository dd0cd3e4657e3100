"""``distill export`` (deployable model with preprocessing inside) and ``distill align`` (face crops)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from distill.cli.common import user_errors

FORMATS_HELP = "savedmodel, tflite, tflite-fp16, tflite-int8 or onnx"


def export_command(
    model: Path = typer.Argument(..., help="Embedding model to export (.keras or .h5 file)."),
    fmt: str = typer.Option(..., "--format", "-f", help=f"Export format: {FORMATS_HELP}."),
    out: Path = typer.Option(..., "--out", "-o", help="Output path: a folder for savedmodel, a file otherwise."),
    resize: bool = typer.Option(False, "--resize", help="Accept uint8 images of any size and resize them to 112×112 inside the model (bilinear)."),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="Folder tree of images: int8 calibration (required for tflite-int8) and the parity check (without it, parity uses the bundled ORL demo faces)."),
    parity_images: int = typer.Option(32, help="Images on which the exported model is compared with the Keras model."),
    calibration_images: int = typer.Option(200, help="Most images used to calibrate int8 quantisation."),
    latency_runs: int = typer.Option(50, help="Single-image runs timed for the latency (median)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for the runtime in the parity/latency check (default: the runtime's choice)."),
    opset: int = typer.Option(17, help="ONNX opset (onnx format only)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
):
    """Export a model that takes uint8 RGB images and returns L2-normalised embeddings; check parity."""
    with user_errors():
        from distill.export import export_model

        options = {"opset": opset} if fmt == "onnx" else {}
        report = export_model(model, fmt, out, resize=resize, calibration=calibration,
                              parity_images=parity_images, calibration_images=calibration_images,
                              latency_runs=latency_runs, overwrite=overwrite, threads=threads, **options)
        typer.echo(report.summary())


def align_command(
    src: Path = typer.Argument(..., help="Photos: a class-per-folder tree or a flat folder."),
    dst: Path = typer.Argument(..., help="Output folder: aligned 112×112 PNG crops in the same layout, plus align_report.json."),
    all_faces: bool = typer.Option(False, "--all-faces", help="Write every face as <stem>_<k>.png (k=0 largest) instead of only the largest as <stem>.png."),
    min_face: int = typer.Option(20, "--min-face", help="Smallest face to keep, in pixels (shorter side of the detected box)."),
    detector: str = typer.Option("mtcnn", help="Face detector (registered in distill.align_faces.DETECTORS)."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Try again the photos an earlier run reported without a face or unreadable."),
    pick: str = typer.Option("largest", help="Which face of a photo with several: largest, or center (nearest the photo centre, as in LFW)."),
    fallback: str = typer.Option(None, help="Detector for photos where none is found, e.g. 'center' (a centre crop); they are listed in the report."),
    center_crop: float = typer.Option(0.5, "--center-crop", help="Side of the 'center' detector's crop as a fraction of the shorter side (LFW deep-funneled: 0.512 = 128 of 250 px)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
):
    """Detect faces and warp them onto the ArcFace 112×112 template (resumable)."""
    with user_errors():
        from distill.align_faces import align_folder

        report = align_folder(src, dst, all_faces=all_faces, min_face=min_face, detector=detector,
                              retry_failed=retry_failed, progress=progress, pick=pick,
                              fallback=fallback, center_crop=center_crop)
        typer.echo(report.summary(dst))


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
    app.command("align")(align_command)
