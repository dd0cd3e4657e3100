"""A tiny `distill train` with EKD on identity-balanced batches: the EMA thresholds live in the
checkpoint, so a run stopped and resumed equals the uninterrupted one."""
from __future__ import annotations

import numpy as np
import pytest

import tiny_backbone  # noqa: F401  (registers tiny_cnn)
from conftest import copy_people


@pytest.fixture(scope="module")
def faces_store(tmp_path_factory, tiny_teacher):
    from distill.store.writer import embed

    root = tmp_path_factory.mktemp("ekd")
    copy_people(root / "train", [f"s{i}" for i in range(1, 7)])
    embed(tiny_teacher, root / "train", root / "store", shard_size=32, flip=True, progress=False)
    return root


def recipe(root) -> dict:
    return {
        "name": "ekd", "seed": 2,
        "data": {"train": str(root / "train"), "store": str(root / "store"), "augment": "flip",
                 "sampler": "identity_balanced", "images_per_identity": 3},
        "model": {"backbone": "tiny_cnn", "embedding_size": 16},
        "loss": {"name": "arcface", "scale": 16.0, "margin": 0.3},
        "terms": {"ekd": {"name": "ekd", "weight": 50.0, "momentum": 0.5, "top_k": 20, "temperature": 0.05}},
        "train": {"batch_size": 12, "gradient_stats": False},
        "stages": [{"epochs": 3, "lr": 0.05}],
    }


def test_ekd_on_balanced_batches_stops_and_resumes_like_uninterrupted(faces_store, tmp_path):
    import keras

    from distill.train.trainer import train

    full = train(recipe(faces_store), tmp_path / "full", progress=False)
    # 6 people × 10 images, K = 3: ⌈10/3⌉ = 4 groups each, 24 groups / P = 4 → 6 steps per epoch
    assert [h["steps"] for h in full.history] == [6, 6, 6]
    assert all(h["loss"]["ekd"] > 0 for h in full.history)
    part = train(recipe(faces_store), tmp_path / "part", progress=False, stop_after_epochs=2)
    assert len(part.history) == 2
    resumed = train(None, tmp_path / "part", resume=True, progress=False)
    assert resumed.history[-1]["loss"] == pytest.approx(full.history[-1]["loss"], rel=1e-5)
    a = keras.models.load_model(full.final_model, compile=False)
    b = keras.models.load_model(resumed.final_model, compile=False)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)
