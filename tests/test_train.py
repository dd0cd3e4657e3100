"""The student stage on real ORL faces: `distill train`, distillation, stages, resume, NaN."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from conftest import copy_people


@pytest.fixture(scope="module")
def orl_setup(tmp_path_factory, tiny_teacher):
    """6 training people, a held-out .bin of 4 others, a flip store from the tiny teacher."""
    from distill.evals.bins import make_bin
    from distill.store.writer import embed

    root = tmp_path_factory.mktemp("train")
    train_dir = copy_people(root / "train", [f"s{i}" for i in range(1, 7)])
    heldout = copy_people(root / "heldout", [f"s{i}" for i in range(31, 35)])
    make_bin(heldout, root / "heldout.bin", n_pairs=40, seed=0)
    embed(tiny_teacher, train_dir, root / "store", shard_size=32, flip=True, progress=False)
    return root


def recipe(root, **changes) -> dict:
    base = {
        "name": "t", "seed": 3,
        "data": {"train": str(root / "train"), "store": str(root / "store"),
                 "eval": [str(root / "heldout.bin")], "augment": "flip"},
        "model": {"backbone": "mobilenet", "alpha": 0.25, "embedding_size": 32, "dropout": 0.2},
        "loss": {"name": "arcface", "scale": 16.0, "margin": 0.3},
        "distill": {"name": "l2", "weight": 8.0},
        "train": {"batch_size": 20},
        "stages": [{"epochs": 2, "lr": 0.05}, {"epochs": 1, "lr": 0.005}],
    }
    for key, value in changes.items():
        base[key] = value if not isinstance(value, dict) else {**base.get(key, {}), **value}
    return base


def test_train_cli_writes_run_and_lowers_loss(orl_setup, tmp_path, cli):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe(orl_setup, stages=[{"epochs": 4, "lr": 0.05}])))
    run = tmp_path / "run"
    code, out, err = cli("train", "--recipe", path, "--run-dir", run, "--no-progress",
                         "--set", "distill.weight=16", "--set", "train.eval_every_steps=1")
    assert code == 0, err
    history = json.loads((run / "history.json").read_text())
    from distill.train.run_dir import RunDir

    assert RunDir(run).read_history() == history                  # the typed schema
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["loss"]["total"] < history[0]["loss"]["total"]
    assert history[-1]["loss"]["distill"] < history[0]["loss"]["distill"]
    assert set(history[0]["eval"]["heldout"]) == {"accuracy", "accuracy_std", "threshold", "accuracy_exact",
                                                  "threshold_exact", "tar_at_far_1e-3", "auc"}
    assert [e["step"] for e in history[1]["step_evals"]] == [4, 5]     # 3 steps/epoch
    assert "heldout" in history[1]["step_evals"][0]["eval"]
    saved = yaml.safe_load((run / "recipe.yaml").read_text())
    assert saved["distill"]["weight"] == 16.0                      # the resolved recipe
    assert (run / "best.keras").exists() and (run / "model.keras").exists()
    assert list((run / "tensorboard").iterdir())
    import keras

    model = keras.models.load_model(run / "model.keras", compile=False)
    assert model.output_shape == (None, 32)                        # no classifier head
    assert not any("classifier" in layer.name for layer in model.layers)


def test_stop_and_resume_equals_uninterrupted(orl_setup, tmp_path):
    from distill.train.trainer import train

    full = train(recipe(orl_setup), tmp_path / "full", progress=False)
    part = train(recipe(orl_setup), tmp_path / "part", progress=False, stop_after_epochs=2)
    assert len(part.history) == 2
    resumed = train(None, tmp_path / "part", resume=True, progress=False)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    import keras

    a = keras.models.load_model(full.final_model, compile=False)
    b = keras.models.load_model(resumed.final_model, compile=False)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-5)
    assert resumed.history[-1]["loss"]["total"] == pytest.approx(full.history[-1]["loss"]["total"], rel=1e-4)
    before = (tmp_path / "part" / "model.keras").read_bytes()
    again = train(None, tmp_path / "part", resume=True, progress=False)   # complete: nothing to do
    assert len(again.history) == 3 and (tmp_path / "part" / "model.keras").read_bytes() == before


def test_three_stage_softmax_arcface_triplet(orl_setup, tmp_path):
    from distill.train.trainer import train

    stages = [
        {"epochs": 1, "lr": 0.05, "loss": {"name": "scale_softmax", "scale": 16.0}},
        {"epochs": 1, "lr": 0.05, "loss": {"name": "arcface", "scale": 16.0, "margin": 0.3}},
        {"epochs": 1, "lr": 0.01, "triplet_weight": 1.0},
    ]
    result = train(recipe(orl_setup, stages=stages, distill={"weight": 0.0},
                          train={"batch_size": 20}, data={"images_per_identity": 5}),
                   tmp_path / "run", progress=False)
    history = result.history
    assert [h["stage"] for h in history] == [0, 1, 2]
    assert [h["lr"] for h in history] == pytest.approx([0.05, 0.05, 0.01])
    assert "triplet" not in history[1]["loss"] and "triplet" in history[2]["loss"]
    assert all(np.isfinite(h["loss"]["total"]) for h in history)


def test_nan_loss_stops_naming_step_and_terms(orl_setup, tmp_path):
    from distill.train.trainer import TrainingError, train

    with pytest.raises(TrainingError, match=r"non-finite loss at epoch 1, step \d+ .*classification="):
        train(recipe(orl_setup, stages=[{"epochs": 1, "lr": 1e30}]), tmp_path / "run", progress=False)


def test_distill_without_store_refused(orl_setup, tmp_path):
    from distill.train.recipe import RecipeError
    from distill.train.trainer import train

    with pytest.raises(RecipeError, match="data.store is not set"):
        train(recipe(orl_setup, data={"store": None}), tmp_path / "run", progress=False)


def test_flip_targets_follow_the_flipped_image(orl_setup):
    from distill.data.images import read_image
    from distill.data.preprocess import normalize
    from distill.data.sources import open_source
    from distill.store import Store
    from distill.train.pipeline import TeacherTargets, training_dataset

    source = open_source(orl_setup / "train")
    store = Store(orl_setup / "store")
    targets = TeacherTargets(store, source).build()
    plain, _ = store.load_table("embedding")
    flipped_table, _ = store.load_table("embedding_flip")
    seen = {True: 0, False: 0}
    for batch in training_dataset(source, np.arange(len(source)), 10, seed=0, epoch=0,
                                  augment="flip", targets=targets):
        for i, sample_id in enumerate(batch["sample_id"].numpy()):
            was_flipped = bool(batch["flipped"][i])
            seen[was_flipped] += 1
            expected = flipped_table if was_flipped else plain
            np.testing.assert_array_equal(batch["teacher"][i].numpy(), expected[sample_id])
            original = normalize(read_image(source.describe(sample_id)))
            image = original[:, ::-1] if was_flipped else original
            np.testing.assert_allclose(batch["image"][i].numpy(), image, atol=1e-6)
    assert seen[True] > 5 and seen[False] > 5
