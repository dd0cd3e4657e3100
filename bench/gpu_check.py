"""The GPU check: one table of the pipeline's throughput on this machine (bench/gpu_check.sh).

1. teacher embed img/s: IResNet-100 in float16, the bare model on uint8 batches in memory vs
   ``distill embed`` (RecordIO read, JPEG decode, embed, HDF5 shards);
2. student train img/s: MobileNet, mixed precision, with distillation against the store of 1:
   the bare compiled step on batches held on the device vs the full input pipeline with targets;
3. the input pipeline alone (RecordIO read, 112×112 JPEG decode, augmentation, normalisation):
   img/s on one core, and per core with every core, so the cores needed to feed the student's
   bare step on one GPU are a number.

Data is synthetic: the bundled ORL faces, resized to 112×112 and re-encoded as JPEG, cycled
into an InsightFace RecordIO set; models are random-init (speed does not depend on weights).
``--tiny`` shrinks everything (a MobileNet-α0.25 teacher, a few images) for a CPU test.
"""
from __future__ import annotations

import argparse
import os
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _load import report_load  # bench/ is on sys.path when a bench runs

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
AUGMENT = "flip_color"
SIZES = {  # name: (images, batch, timed steps, teacher arch, student alpha, input images)
    "full": (8192, 256, 30, "iresnet100", 1.0, 4096),
    "tiny": (24, 4, 2, "mobilenet", 0.25, 24),
}


def write_recordio(folder: Path, images: list[bytes], count: int, classes: int) -> Path:
    """``count`` records cycling ``images`` into ``folder/train.rec``/``.idx`` (MXNet framing:
    magic, cflag·2²⁹ + length, payload split at any magic word on a 4-byte boundary, padding)."""
    magic = struct.pack("<I", 0xCED7230A)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "train.rec", "wb") as rec, open(folder / "train.idx", "w") as idx:
        for key in range(count):
            payload = struct.pack("<IfQQ", 0, float(key % classes), key, 0) + images[key % len(images)]
            idx.write(f"{key}\t{rec.tell()}\n")
            cuts = [i for i in range(0, len(payload) - 3, 4) if payload[i:i + 4] == magic]
            pieces = [payload[a + (4 if n else 0):b] for n, (a, b) in
                      enumerate(zip([0, *cuts], [*cuts, len(payload)]))]
            for n, piece in enumerate(pieces):
                cflag = 0 if len(pieces) == 1 else 1 if n == 0 else 3 if n == len(pieces) - 1 else 2
                rec.write(magic + struct.pack("<I", (cflag << 29) | len(piece)))
                rec.write(piece + b"\0" * (-len(piece) % 4))
    (folder / "property").write_text(f"{classes},112,112")
    return folder


def orl_jpegs() -> list[bytes]:
    import tensorflow as tf

    from distill.data.images import read_image

    files = sorted((ROOT / "distill" / "demo_data" / "orl_faces").glob("s*/*.png"))
    return [tf.io.encode_jpeg(read_image(path), quality=95).numpy() for path in files]


def rate(count: int, run) -> float:
    started = time.perf_counter()
    run()
    return count / (time.perf_counter() - started)


def calibrate(model, pixels) -> None:
    """Set every BatchNormalization's statistics from one batch (a random-init network's
    activations would otherwise overflow float16 and the store refuses non-finite embeddings)."""
    import keras

    from distill.data.preprocess import normalize

    def layers(layer):
        yield layer
        for inner in getattr(layer, "layers", []):
            yield from layers(inner)

    for layer in layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    model(normalize(pixels), training=True)


def teacher_rates(work: Path, source, arch: str, images: int, batch: int) -> tuple[float, float]:
    """(bare img/s, ``distill embed`` img/s) of a float16 random-init teacher."""
    import keras
    import tensorflow as tf

    from distill.data.images import decode_image_bytes
    from distill.models import build_embedding_model
    from distill.store.writer import embed
    from teachers import load_teacher

    pixels = np.stack([decode_image_bytes(source.read_encoded(i)) for i in range(min(len(source), 400))])
    keras.mixed_precision.set_global_policy("mixed_float16")
    width = {"alpha": 0.25, "embedding_size": 32} if arch == "mobilenet" else {"embedding_size": 512}
    model = build_embedding_model(arch, **width)
    calibrate(model, pixels[:batch])
    model.save(work / "teacher.keras")
    keras.mixed_precision.set_global_policy("float32")
    teacher = load_teacher(work / "teacher.keras")
    held = [tf.constant(pixels[np.arange(k, k + batch) % len(pixels)]) for k in range(0, images, batch)]
    teacher.embed(held[0]).numpy()                               # trace and warm up
    bare = rate(len(held) * batch, lambda: [teacher.embed(b) for b in held][-1].numpy())
    piped = rate(len(source), lambda: embed(teacher, source, work / "store", batch_size=batch,
                                            dtype="float16", progress=False))
    return bare, piped


def student_rates(work: Path, rec: Path, alpha: float, batch: int, steps: int) -> tuple[float, float]:
    """(bare step img/s, full pipeline img/s) of a mixed-precision student with distillation."""
    import tensorflow as tf

    from distill.train.pipeline import training_dataset
    from distill.train.recipe import recipe_from_dict
    from distill.train.stages import resolve_stages
    from distill.train.trainer import Trainer

    recipe = recipe_from_dict({
        "data": {"train": str(rec), "store": str(work / "store"), "augment": AUGMENT, "targets": "pread"},
        "model": {"backbone": "mobilenet", "alpha": alpha, "embedding_size": 128},
        "distill": {"name": "l2", "weight": 64.0},
        "train": {"batch_size": batch, "mixed_precision": True, "gradient_stats": False},
        "stages": [{"epochs": 1000, "lr": 0.01}]})
    trainer = Trainer(recipe, work / "run", progress=False)
    trainer._setup()
    _, _, step = trainer._build_stage(resolve_stages(recipe)[0])

    def batches():
        for epoch in range(1000):
            yield from training_dataset(trainer.source, trainer.sample_ids, batch, 0, epoch, AUGMENT,
                                        trainer.targets)

    stream = batches()
    for _ in range(3):
        step(next(stream))["total"].numpy()                       # trace and warm up
    device = "/GPU:0" if tf.config.list_logical_devices("GPU") else "/CPU:0"
    with tf.device(device):
        held = [tf.nest.map_structure(tf.identity, next(stream)) for _ in range(min(steps, 8))]
    bare = rate(steps * batch, lambda: [step(held[i % len(held)]) for i in range(steps)][-1]["total"].numpy())
    piped = rate(steps * batch, lambda: [step(next(stream)) for _ in range(steps)][-1]["total"].numpy())
    return bare, piped


def input_rates(source, images: int, batch: int) -> tuple[float, float, int]:
    """(img/s on one core, img/s per core with every core, cores) of decode + augmentation."""
    import tensorflow as tf

    from distill.train.pipeline import training_dataset

    cores = os.cpu_count() or 1
    ids = np.arange(len(source))
    out = []
    for threads in (1, cores):
        options = tf.data.Options()
        options.threading.private_threadpool_size = threads
        repeats = -(-images // len(ids))

        def run():
            for epoch in range(repeats):
                for _ in training_dataset(source, ids, batch, 0, epoch, AUGMENT,
                                          num_parallel_calls=threads).with_options(options):
                    pass
        out.append(rate(repeats * (len(ids) // batch) * batch, run))
    return out[0], out[1] / cores, cores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU-test sizes")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    report_load()   # load average before and after (bench/_load.py)
    images, batch, steps, arch, alpha, input_images = SIZES["tiny" if args.tiny else "full"]

    import tensorflow as tf

    import distill.data.recordio  # noqa: F401  (registers the RecordIO source)
    from distill.data.sources import open_source

    gpus = tf.config.list_logical_devices("GPU")
    work = Path(tempfile.mkdtemp(prefix="gpu_check_", dir=args.work))
    os.environ.setdefault("DISTILL_CACHE_DIR", str(work / "cache"))
    try:
        rec = write_recordio(work / "rec", orl_jpegs(), images, classes=40)
        source = open_source(rec)
        teacher_bare, teacher_piped = teacher_rates(work, source, arch, images, batch)
        student_bare, student_piped = student_rates(work, rec, alpha, batch, steps)
        one_core, per_core, cores = input_rates(source, input_images, batch)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    device = gpus[0].name if gpus else "no GPU (CPU only)"
    rows = [
        (f"teacher {arch} float16, bare model (batch {batch})", teacher_bare, ""),
        ("teacher, `distill embed` (RecordIO → store)", teacher_piped, f"{teacher_piped / teacher_bare:.2f} × bare"),
        (f"student MobileNet α{alpha} mixed, bare step (batch {batch})", student_bare, ""),
        ("student, full pipeline + teacher targets", student_piped, f"{student_piped / student_bare:.2f} × bare"),
        (f"input: RecordIO + JPEG decode + {AUGMENT}, 1 core", one_core, ""),
        (f"input: the same on all {cores} cores, per core", per_core,
         f"{student_bare / per_core:.1f} cores feed the bare step"),
    ]
    print(f"gpu_check: {device}; TensorFlow {tf.__version__}; {cores} CPU cores; "
          f"{images} images 112×112 JPEG")
    print("| what | img/s | note |\n|---|---:|---|")
    for what, value, note in rows:
        print(f"| {what} | {value:,.0f} | {note} |" if value >= 10 else f"| {what} | {value:.2g} | {note} |")


if __name__ == "__main__":
    main()
