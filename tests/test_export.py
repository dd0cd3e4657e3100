"""``distill export``: each format run in its own runtime matches the Keras model on real faces.

The student is a MobileNet alpha 0.25 trained for a few SGD epochs on the ORL faces, with its
BN statistics then set from a forward pass, so embeddings differ between people and parity
checks mean something (a random-init model gives near-identical embeddings for every face).
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distill.export import EXPORTERS, ExportError, export_model, load_exported

ORL = Path(__file__).resolve().parents[1] / "distill" / "demo_data" / "orl_faces"
# parity images: one per person, read without the project's pipeline (PIL)
PARITY_PATHS = [ORL / f"s{p}" / "10.png" for p in range(1, 41)]


def orl_native(paths) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


def orl_112(paths) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p).convert("RGB").resize((112, 112), Image.BILINEAR))
                     for p in paths])


def keras_embeddings(model, images_uint8) -> np.ndarray:
    out = np.asarray(model((images_uint8.astype(np.float32) - 127.5) / 128.0, training=False))
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def cosines(a, b) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def _batchnorms(layer):
    import keras

    if isinstance(layer, keras.layers.BatchNormalization):
        yield layer
    for sub in getattr(layer, "layers", []):
        yield from _batchnorms(sub)


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """(path, model): a small trained student with exact BN statistics, saved as .keras."""
    import keras

    import tensorflow as tf

    from distill.models import build_embedding_model

    # Grappler's options are process-wide, and a training test run earlier in this worker turns
    # the arithmetic optimizer off (train.deterministic): train this student under TensorFlow's
    # default, whatever ran before, so it is the same student in every test order
    tf.config.optimizer.set_experimental_options({"arithmetic_optimization": True})
    keras.utils.set_random_seed(0)
    paths = sorted(ORL.glob("s*/*.png"))
    labels = np.array([int(p.parent.name[1:]) - 1 for p in paths])
    x = (orl_112(paths).astype(np.float32) - 127.5) / 128.0
    model = build_embedding_model("mobilenet", alpha=0.25, embedding_size=64)
    classifier = keras.Sequential([model, keras.layers.Dense(40)])
    classifier.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    order = np.random.RandomState(0).permutation(len(x))
    classifier.fit(x[order], labels[order], batch_size=40, epochs=4, verbose=0)
    layers = list(_batchnorms(model))
    for bn in layers:  # moving statistics := statistics of all 400 faces
        bn.momentum = 0.0
    model(x, training=True)
    for bn in layers:
        bn.momentum = 0.9
    path = tmp_path_factory.mktemp("student") / "student.keras"
    model.save(path)
    return path, model


@pytest.fixture(scope="module")
def exported(student, tmp_path_factory):
    """Export on first use, share across tests: (fmt, resize) → ExportReport."""
    folder, cache = tmp_path_factory.mktemp("exports"), {}

    def get(fmt, resize=False):
        if (fmt, resize) not in cache:
            suffix = {"savedmodel": "", "onnx": ".onnx"}.get(fmt, ".tflite")
            out = folder / f"{fmt}{'-resize' if resize else ''}{suffix}"
            cache[fmt, resize] = export_model(student[0], fmt, out, resize=resize, calibration=ORL,
                                              latency_runs=5)
        return cache[fmt, resize]

    return get


def test_student_embeddings_are_not_degenerate(student):
    emb = keras_embeddings(student[1], orl_112(PARITY_PATHS))
    off_diagonal = (emb @ emb.T)[~np.eye(len(emb), dtype=bool)]
    assert off_diagonal.mean() < 0.3 and off_diagonal.max() < 0.97


@pytest.mark.parametrize("fmt,threshold", [("savedmodel", 0.9999), ("tflite", 0.9999), ("onnx", 0.9999),
                                           ("tflite-fp16", 0.999)])
def test_format_matches_keras_in_its_runtime(exported, student, fmt, threshold):
    report = exported(fmt)
    images = orl_112(PARITY_PATHS)
    got = load_exported(report.path, fmt)(images)
    assert got.shape == (40, 64) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-3)  # L2-normalised inside
    assert cosines(got, keras_embeddings(student[1], images)).min() > threshold
    assert report.cosine_min > threshold and report.parity_images == 32
    assert report.size_bytes > 100_000 and report.latency_ms > 0


def test_int8_is_quantised_and_close(exported, student):
    import tensorflow as tf

    report = exported("tflite-int8")
    images = orl_112(PARITY_PATHS)
    got = load_exported(report.path, "tflite-int8")(images)
    want = keras_embeddings(student[1], images)
    cos = cosines(got, want)
    assert cos.mean() > 0.98 and cos.min() > 0.95, (cos.mean(), cos.min())
    assert report.cosine_mean > 0.98
    # each face's int8 embedding is nearest to its own Keras embedding among the 40 people
    got_n = got / np.linalg.norm(got, axis=1, keepdims=True)
    assert np.array_equal(np.argmax(got_n @ want.T, axis=1), np.arange(len(images)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreter = tf.lite.Interpreter(model_path=report.path)
    dtypes = [d["dtype"] for d in interpreter.get_tensor_details()]
    assert sum(dt == np.int8 for dt in dtypes) > 50  # weights and activations really int8
    assert report.size_bytes < 0.4 * exported("tflite").size_bytes


def test_resize_inside_any_size(exported, student):
    import tensorflow as tf

    report = exported("tflite", resize=True)
    run = load_exported(report.path, "tflite")
    native = orl_native(PARITY_PATHS[:8])  # 112 high, 92 wide
    resized = tf.cast(tf.image.resize(tf.cast(native, tf.float32), (112, 112)), tf.float32).numpy()
    want = np.array(student[1]((resized - 127.5) / 128.0, training=False))
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    assert cosines(run(native), want).min() > 0.9999
    big = np.repeat(np.repeat(native[:2], 2, axis=1), 2, axis=2)  # 224×184
    assert run(big).shape == (2, 64)
    assert run(native[0]).shape == (1, 64)  # one image without a batch axis


def test_cli_export_onnx_with_resize(cli, student, tmp_path):
    calib = tmp_path / "calib"
    for person in ("s3", "s4"):
        (calib / person).mkdir(parents=True)
        for i in (1, 2, 3):
            (calib / person / f"{i}.png").write_bytes((ORL / person / f"{i}.png").read_bytes())
    out = tmp_path / "student.onnx"
    code, stdout, stderr = cli("export", student[0], "--format", "onnx", "--out", out, "--resize",
                               "--calibration", calib, "--latency-runs", "3")
    assert code == 0, stderr
    assert "parity vs Keras on 6 images" in stdout and "cosine min 1.0000" in stdout
    assert load_exported(out, "onnx")(orl_native(PARITY_PATHS[:2])).shape == (2, 64)
    code, _, stderr = cli("export", student[0], "--format", "onnx", "--out", out)
    assert code == 2 and "already exists" in stderr


def test_errors_name_the_problem(student, tmp_path, monkeypatch):
    with pytest.raises(ExportError, match="unknown export format 'tflite-int4'"):
        export_model(student[0], "tflite-int4", tmp_path / "x")
    with pytest.raises(ExportError, match="tflite-int8 needs calibration images"):
        export_model(student[0], "tflite-int8", tmp_path / "x.tflite")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="empty: no images"):
        export_model(student[0], "tflite", tmp_path / "x.tflite", calibration=tmp_path / "empty")
    with pytest.raises(ValueError, match="missing.keras: model file does not exist"):
        export_model(tmp_path / "missing.keras", "tflite", tmp_path / "x.tflite")
    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    with pytest.raises(ExportError, match=r"needs tf2onnx: pip install 'distill\[onnx\]'"):
        export_model(student[0], "onnx", tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists() and not list(tmp_path.glob(".x.onnx*"))
    with pytest.raises(ExportError, match="unknown export format"):
        load_exported(tmp_path / "x", "caffe")
    assert set(EXPORTERS) == {"savedmodel", "tflite", "tflite-fp16", "tflite-int8", "onnx"}
