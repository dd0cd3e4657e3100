"""Benchmark: every export format of a MobileNet alpha 0.25 student — size, parity, CPU latency.

Run: ``python bench/bench_export.py [--model student.keras] [--calibration DIR] [--markdown]``.
Without ``--model`` a demo student is trained for a few SGD epochs on the bundled ORL faces
(its BN statistics then set from a forward pass), so its embeddings are meaningful. Parity is
the cosine between each exported model (in its own runtime) and the Keras model on images not
used for int8 calibration; latency is the median single-image time on this machine's CPU.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from distill.export import EXPORTERS, DEFAULT_PARITY_DIR, export_model, format_size
from distill.report.table import format_table

from _load import report_load  # bench/ is on sys.path when a bench runs

SUFFIX = {"savedmodel": "", "onnx": ".onnx"}


def train_demo_student(path: Path, embedding_size: int, epochs: int) -> Path:
    """MobileNet alpha 0.25 trained briefly on the 400 ORL faces; BN statistics from all of them."""
    import keras
    from PIL import Image

    from distill.models import build_embedding_model

    keras.utils.set_random_seed(0)
    paths = sorted(DEFAULT_PARITY_DIR.glob("s*/*.png"))
    labels = np.array([int(p.parent.name[1:]) - 1 for p in paths])
    images = np.stack([np.asarray(Image.open(p).convert("RGB").resize((112, 112), Image.BILINEAR))
                       for p in paths])
    x = (images.astype(np.float32) - 127.5) / 128.0
    model = build_embedding_model("mobilenet", alpha=0.25, embedding_size=embedding_size)
    classifier = keras.Sequential([model, keras.layers.Dense(len(set(labels)))])
    classifier.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    order = np.random.RandomState(0).permutation(len(x))
    classifier.fit(x[order], labels[order], batch_size=40, epochs=epochs, verbose=0)
    norms = [layer for layer in _all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0
    model(x, training=True)
    for layer in norms:
        layer.momentum = 0.9
    model.save(path)
    return path


def _all_layers(layer):
    yield layer
    for sub in getattr(layer, "layers", []):
        yield from _all_layers(sub)


def keras_latency_ms(model_path: Path, runs: int) -> float:
    """The Keras model on one normalised image, as a tf.function (no preprocessing)."""
    import keras
    import tensorflow as tf

    model = keras.models.load_model(model_path, compile=False)
    fn = tf.function(lambda x: model(x, training=False))
    x = tf.zeros((1, 112, 112, 3), tf.float32)
    for _ in range(3):
        fn(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(x).numpy()
        times.append((time.perf_counter() - start) * 1000.0)
    return float(statistics.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="Keras embedding model to export [default: train a demo student]")
    parser.add_argument("--calibration", type=Path, default=DEFAULT_PARITY_DIR, help="folder tree of images")
    parser.add_argument("--formats", nargs="*", default=list(EXPORTERS), help="formats to export")
    parser.add_argument("--embedding-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=4, help="training epochs of the demo student")
    parser.add_argument("--latency-runs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None, help="runtime CPU threads [default: runtime's]")
    parser.add_argument("--resize", action="store_true", help="export with the resize built in")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    report_load()   # load average before and after (bench/_load.py)

    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        tmp = Path(tmp)
        model_path = args.model or train_demo_student(tmp / "student.keras", args.embedding_size, args.epochs)
        rows = [{"format": "keras (reference)", "size": format_size(model_path.stat().st_size),
                 "cos min": "ref", "cos mean": "ref",
                 "latency ms": f"{keras_latency_ms(model_path, args.latency_runs):.2f}"}]
        for fmt in args.formats:
            start = time.perf_counter()
            report = export_model(model_path, fmt, tmp / f"model-{fmt}{SUFFIX.get(fmt, '.tflite')}",
                                  resize=args.resize, calibration=args.calibration,
                                  latency_runs=args.latency_runs, threads=args.threads)
            rows.append({**report.row(), "export s": f"{time.perf_counter() - start:.1f}"})
        print(f"model: {args.model or 'demo student: MobileNet alpha 0.25, ORL-trained'}, "
              f"embedding {args.embedding_size if not args.model else '?'}; parity on "
              f"{report.parity_images} images of {args.calibration}; CPU threads: {args.threads or 'default'}")
        print(format_table(rows, markdown=args.markdown))


if __name__ == "__main__":
    main()
