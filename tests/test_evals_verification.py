"""Embedding models on verification sets: flip protocol, Keras wrapping, model loading, ``distill eval``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from distill.data.preprocess import normalize
from distill.evals import bins as B
from distill.evals.metrics import verification_metrics
from distill.evals.verification import (
    embed_images,
    evaluate_models,
    evaluate_set,
    evaluate_sets,
    keras_embed_fn,
    model_embed_fn,
)

ORL = Path(__file__).resolve().parents[1] / "distill" / "demo_data" / "orl_faces"


class PixelEmbedder:
    """A deterministic, asymmetric embed_fn (mirroring changes the output) that counts images."""

    def __init__(self):
        self.seen = 0
        self.projection = np.random.default_rng(0).normal(size=(112 * 112 // 64, 32))

    def __call__(self, batch):
        self.seen += len(batch)
        grey = batch.astype(np.float64).mean(axis=3).reshape(len(batch), 14, 8, 14, 8).mean(axis=(2, 4))
        grey = grey - grey.mean(axis=(1, 2), keepdims=True)
        return grey.reshape(len(batch), -1) @ self.projection + np.linspace(0, 1, 32)


@pytest.fixture(scope="module")
def orl_set(tmp_path_factory):
    path = B.make_bin(ORL, tmp_path_factory.mktemp("bins") / "orl.bin", n_pairs=80, seed=0)
    return B.load_bin(path)


def test_embed_images_batches_and_checks():
    images = np.random.default_rng(0).integers(0, 255, (10, 112, 112, 3), dtype=np.uint8)
    sizes = []
    out = embed_images(lambda b: sizes.append(len(b)) or np.ones((len(b), 4)), images, batch_size=4)
    assert out.shape == (10, 4) and out.dtype == np.float32 and sizes == [4, 4, 2]
    with pytest.raises(ValueError, match="returned shape"):
        embed_images(lambda b: np.ones((len(b) + 1, 4)), images)
    with pytest.raises(ValueError, match="NaN"):
        embed_images(lambda b: np.full((len(b), 4), np.nan), images)
    with pytest.raises(ValueError, match="uint8"):
        embed_images(lambda b: b, images.astype(np.float32))


def test_evaluate_set_flip_and_noflip_match_manual_metrics(orl_set):
    embed = PixelEmbedder()
    result = evaluate_set(embed, orl_set, batch_size=32)
    distinct = len({image.tobytes() for image in orl_set.images})
    assert distinct < len(orl_set.images) and embed.seen == 2 * distinct  # each distinct image and its mirror once
    plain = PixelEmbedder()(orl_set.images)
    mirrored = PixelEmbedder()(orl_set.images[:, :, ::-1])
    combined = plain + mirrored
    combined /= np.linalg.norm(combined, axis=1, keepdims=True)
    want_flip = verification_metrics(combined[0::2], combined[1::2], orl_set.issame)
    want_plain = verification_metrics(plain[0::2], plain[1::2], orl_set.issame)
    assert result["flip"] is True and result["pairs"] == 80
    for key in ("accuracy", "accuracy_std", "tar_at_far_1e-2", "auc", "eer", "val_at_far_1e-3"):
        assert result[key] == pytest.approx(want_flip[key], abs=1e-6)
        assert result[f"noflip_{key}"] == pytest.approx(want_plain[key], abs=1e-6)
    assert result["accuracy"] > 0.6  # pixel features do tell ORL people apart
    noflip = evaluate_set(PixelEmbedder(), orl_set, flip=False, roc=True)
    assert noflip["flip"] is False and not any(k.startswith("noflip_") for k in noflip)
    assert noflip["accuracy"] == pytest.approx(want_plain["accuracy"], abs=1e-9)
    assert len(noflip["roc"]) == 2
    renamed = B.VerificationSet("other", orl_set.images, orl_set.issame)
    assert set(evaluate_sets(PixelEmbedder(), [orl_set, renamed], flip=False)) == {"orl", "other"}
    with pytest.raises(ValueError, match="named 'orl'"):
        evaluate_sets(PixelEmbedder(), [orl_set, orl_set])


def tiny_model(seed=0, batch=None):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((112, 112, 3), batch_size=batch)
    x = keras.layers.Conv2D(4, 5, strides=4, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(8)(x)
    return keras.Model(inputs, outputs)


def test_keras_embed_fn_matches_direct_call_and_fixed_batch():
    images = np.random.default_rng(1).integers(0, 255, (7, 112, 112, 3), dtype=np.uint8)
    model = tiny_model()
    want = model(normalize(images), training=False).numpy()
    np.testing.assert_allclose(keras_embed_fn(model, batch_size=3)(images), want, rtol=1e-5, atol=1e-6)
    fixed = tiny_model(batch=4)
    fixed.set_weights(model.get_weights())
    np.testing.assert_allclose(keras_embed_fn(fixed)(images), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="expects 112x112"):
        keras_embed_fn(model)(images[:, :100, :100])


def test_every_model_kind_is_evaluable_with_the_keras_figures(tmp_path, monkeypatch):
    """.keras, .h5, SavedModel, ONNX, TFLite and a plugin give the Keras model's embeddings and
    the same `distill eval` figures (one model runtime)."""
    import textwrap

    import tensorflow as tf
    import tf2onnx

    model = tiny_model()
    images = np.random.default_rng(2).integers(0, 255, (3, 112, 112, 3), dtype=np.uint8)
    want = model(normalize(images), training=False).numpy()
    model.save(tmp_path / "m.keras")
    model.save(tmp_path / "m.h5")
    model.export(str(tmp_path / "saved"), verbose=False)
    (tmp_path / "m.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    spec = [tf.TensorSpec((None, 112, 112, 3), tf.float32, name="x")]
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
    (tmp_path / "m.onnx").write_bytes(proto.SerializeToString())
    (tmp_path / "tiny_plugin.py").write_text(textwrap.dedent(f"""
        import keras
        MODEL = keras.models.load_model({str(tmp_path / "m.keras")!r}, compile=False)

        def embed(batch):
            return MODEL((batch.astype("float32") - 127.5) / 128.0, training=False)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    kinds = ["m.keras", "m.h5", "saved", "m.tflite", "m.onnx", "tiny_plugin:embed"]
    specs = [str(tmp_path / k) if ":" not in k else k for k in kinds]
    for spec_ in specs:
        np.testing.assert_allclose(model_embed_fn(spec_)(images), want, rtol=1e-4, atol=1e-4, err_msg=spec_)
    path = B.make_bin(ORL, tmp_path / "orl.bin", n_pairs=40, seed=1)
    rows = evaluate_models(specs, [path], batch_size=16)
    for row in rows[1:]:
        for key in ("accuracy", "accuracy_exact", "tar_at_far_1e-3", "auc"):
            assert row[key] == pytest.approx(rows[0][key], abs=1e-6), (row["model"], key)
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "bad.keras").write_bytes(b"not a zip")
    (tmp_path / "empty").mkdir()
    for name, pattern in [
        ("notes.txt", "not a model file this project can run"),
        ("bad.keras", "not a loadable Keras model"),
        ("empty", "not a SavedModel"),
        ("missing.keras", "does not exist"),
    ]:
        with pytest.raises(ValueError, match=pattern) as info:
            model_embed_fn(tmp_path / name)
        assert name in str(info.value)


def test_eval_and_make_bin_cli(tmp_path):
    from typer.testing import CliRunner

    from distill.cli import app

    runner = CliRunner()
    made = runner.invoke(app, ["make-bin", str(ORL), "--out", str(tmp_path / "orl.bin"), "--pairs", "40"])
    assert made.exit_code == 0, made.output
    assert "20 same, 20 different" in made.output
    for seed in (0, 1):
        tiny_model(seed).save(tmp_path / f"student{seed}.keras")
    args = ["eval", "--model", str(tmp_path / "student0.keras"), "--model", str(tmp_path / "student1.keras")]
    args += ["--bin", str(tmp_path / "orl.bin"), "--batch-size", "16", "--json", str(tmp_path / "r.json")]
    args += ["--csv", str(tmp_path / "r.csv"), "--roc", str(tmp_path / "roc.png")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:4] == ["model", "set", "accuracy", "threshold"] and "TAR@FAR=1e-3" in lines[0]
    assert any("student0.keras" in line and " orl " in line and "±" in line for line in lines)
    assert any("student1.keras" in line and " orl " in line and "±" in line for line in lines)
    rows = json.loads((tmp_path / "r.json").read_text())
    assert [r["model"].endswith(f"student{i}.keras") for i, r in enumerate(rows)] == [True, True]
    assert rows[0]["set"] == "orl" and 0.0 <= rows[0]["accuracy"] <= 1.0 and "noflip_accuracy" in rows[0]
    assert (tmp_path / "r.csv").read_text().startswith("model,set,flip,accuracy")
    assert (tmp_path / "roc.png").stat().st_size > 1000
    direct = evaluate_models([tmp_path / "student0.keras"], [tmp_path / "orl.bin"], batch_size=16)
    assert direct[0]["accuracy"] == pytest.approx(rows[0]["accuracy"])
    bad = runner.invoke(app, ["eval", "--model", "m.keras", "--pairs", "pairs.txt"])
    assert bad.exit_code == 2 and "--pairs and --images" in bad.output
    missing = runner.invoke(app, ["eval", "--model", str(tmp_path / "nope.keras"), "--bin", str(tmp_path / "orl.bin")])
    assert missing.exit_code == 2 and "nope.keras" in missing.output
