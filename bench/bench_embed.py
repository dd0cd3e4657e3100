"""Benchmark: `distill embed` throughput ÷ the bare teacher's on the same batches in memory.

Run: ``python bench/bench_embed.py [--images 2000] [--batch-size 128] [--data RECORDIO_OR_FOLDER]``.
Cycles the ORL faces into a temporary class-per-folder tree of ``--images`` images, builds a
random-init MobileNet (alpha 0.5) teacher, then times (1) ``teacher.embed`` over the
already-decoded uint8 batches and (2) ``distill.store.writer.embed`` (read, decode, embed,
L2-normalise, write HDF5 shards) on the files. Prints both throughputs and the ratio
(goal ≥ 0.9), and each run's process CPU time per image: on a CPU-only machine the teacher
and the decoder share the cores, so ``teacher CPU / embed CPU`` bounds the ratio whatever
the writer does. ``--aligned`` stores 112×112 JPEGs (like InsightFace sets: no resize);
with ``--data`` a given dataset (folder, file list or RecordIO) is used.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from _load import report_load  # bench/ is on sys.path when a bench runs

ORL = Path(__file__).resolve().parents[1] / "distill" / "demo_data" / "orl_faces"


def make_images(folder: Path, count: int, aligned: bool = False) -> Path:
    """``count`` images: ORL files cycled into ``folder/sN/<k>.png`` (hard links where possible),
    or with ``aligned`` 112×112 JPEG re-encodings ``folder/sN/<k>.jpg``."""
    files = sorted(ORL.glob("s*/*.png"))
    if aligned:
        files = _aligned_jpegs(folder.parent / f"{folder.name}_aligned", files)
    for k in range(count):
        src = files[k % len(files)]
        target = folder / src.parent.name / f"{k}{src.suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, target)
        except OSError:
            shutil.copyfile(src, target)
    return folder


def _aligned_jpegs(folder: Path, files: list[Path]) -> list[Path]:
    import tensorflow as tf

    from distill.data.images import read_image

    out = []
    for src in files:
        target = folder / src.parent.name / f"{src.stem}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(tf.io.encode_jpeg(read_image(src), quality=95).numpy())
        out.append(target)
    return out


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def make_teacher(folder: Path, arch: str = "mobilenet") -> Path:
    """A random-init teacher: MobileNet α0.5 (128-d, a very light teacher) or any registered
    backbone, e.g. ``iresnet18`` (512-d, the smallest real teacher)."""
    import keras

    from distill.models import build_embedding_model

    keras.utils.set_random_seed(0)
    path = folder / f"{arch}.keras"
    if arch == "mobilenet":
        build_embedding_model("mobilenet", embedding_size=128, alpha=0.5).save(path)
    else:
        build_embedding_model(arch, embedding_size=512).save(path)
    return path


def bare_throughput(teacher, source, batch_size: int) -> tuple[float, float]:
    """(images/s, CPU ms/image) of ``teacher.embed`` alone on uint8 batches already in memory."""
    from distill.data.images import decode_image_bytes

    images = np.stack([decode_image_bytes(source.read_encoded(i)) for i in range(len(source))])
    batches = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
    if teacher.graph_compatible:
        import tensorflow as tf

        batches = [tf.constant(b) for b in batches]
    for batch in {b.shape[0]: b for b in batches}.values():  # trace every batch shape once
        np.asarray(teacher.embed(batch))
    cpu, start = cpu_seconds(), time.perf_counter()
    for batch in batches:
        np.asarray(teacher.embed(batch))
    elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    return len(images) / elapsed, 1000 * cpu / len(images)


def pipeline_throughput(teacher, source, out: Path, batch_size: int) -> tuple[float, float]:
    """(images/s, CPU ms/image) of ``distill.store.writer.embed`` from encoded files to a store."""
    from distill.store.writer import embed

    cpu, start = cpu_seconds(), time.perf_counter()
    manifest = embed(teacher, source, out, batch_size=batch_size, progress=False)
    elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    assert sum(s["count"] for s in manifest.shards.values()) == len(source), "store incomplete"
    return len(source) / elapsed, 1000 * cpu / len(source)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--data", type=Path, default=None, help="Use this dataset instead of ORL copies.")
    parser.add_argument("--teacher", default=None, help="Teacher spec instead of the MobileNet 0.5.")
    parser.add_argument("--arch", default="mobilenet", help="Random-init teacher backbone, e.g. iresnet18.")
    parser.add_argument("--aligned", action="store_true", help="112×112 JPEG copies (no resize).")
    parser.add_argument("--repeats", type=int, default=3, help="Alternating bare/pipeline repeats.")
    args = parser.parse_args()
    report_load()   # load average before and after (bench/_load.py)

    import distill.data.recordio  # noqa: F401  (RecordIO sets for --data)
    from distill.data.sources import open_source
    from teachers import load_teacher

    with tempfile.TemporaryDirectory(prefix="bench_embed_") as tmp:
        tmp = Path(tmp)
        data = args.data or make_images(tmp / "images", args.images, args.aligned)
        source = open_source(data)
        teacher = load_teacher(args.teacher or make_teacher(tmp, args.arch))
        runs = []
        for repeat in range(args.repeats):  # alternate, so both see the same (shared) machine
            runs.append(bare_throughput(teacher, source, args.batch_size)
                        + pipeline_throughput(teacher, source, tmp / f"store{repeat}", args.batch_size))
        ratios = [piped / bare for bare, _, piped, _ in runs]
        bare, bare_cpu, piped, piped_cpu = runs[int(np.argsort(ratios)[len(ratios) // 2])]
    print(f"per-repeat ratios: {', '.join(f'{r:.3f}' for r in ratios)} (median run below)")
    print(f"images: {len(source)}  batch: {args.batch_size}  teacher: {teacher.kind} "
          f"(dim {teacher.embedding_dim})  cpus: {os.cpu_count()}  load: {os.getloadavg()[0]:.1f}")
    print(f"bare teacher.embed : {bare:9.1f} img/s   CPU {bare_cpu:.3f} ms/img")
    print(f"distill embed      : {piped:9.1f} img/s   CPU {piped_cpu:.3f} ms/img")
    print(f"ratio              : {piped / bare:9.3f}  (goal >= 0.9; CPU-only bound "
          f"{bare_cpu / piped_cpu:.3f} = teacher CPU / embed CPU)")


if __name__ == "__main__":
    main()
