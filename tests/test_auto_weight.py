"""``weight: auto``: the distillation weight set from the gradient balance at the start of a run."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

import tiny_backbone  # noqa: F401  (registers tiny_cnn)
from conftest import copy_people

TESTS = Path(__file__).resolve().parent


def batches(n=3, batch=8, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return [{"image": rng.normal(size=(batch, 6, 6, 3)).astype(np.float32),
             "label": np.repeat(np.arange(classes), batch // classes).astype(np.int64),
             "teacher": rng.normal(size=(batch, 5)).astype(np.float32)} for _ in range(n)]


def tiny_model(bn=True):
    import keras

    keras.utils.set_random_seed(0)
    layers = [keras.Input((6, 6, 3)), keras.layers.Flatten(), keras.layers.Dense(8)]
    layers += [keras.layers.BatchNormalization()] if bn else []
    return keras.Sequential(layers + [keras.layers.Dense(5)])


def objective_and_classifier():
    from distill.losses.objective import build_objective
    from distill.models.classifier import CosineClassifier

    objective = build_objective({"name": "arcface", "scale": 16.0, "margin": 0.3, "weight": 2.0},
                                {"name": "l2", "weight": 1.0}, center={"name": "center", "weight": 0.5},
                                num_classes=4, embedding_dim=5, teacher_dim=5)
    classifier = CosineClassifier(4, name="classifier")
    classifier.build((None, 5))
    return objective, classifier


def test_weight_is_target_over_the_independently_measured_ratio():
    """A separate tape per term on the same initial weights and batches; w_c = 2 counts."""
    import tensorflow as tf

    from distill import losses
    from distill.train.auto_weight import calibrate

    model, data = tiny_model(), batches()
    objective, classifier = objective_and_classifier()
    before = [v.numpy() for v in model.variables + objective.variables]
    found = calibrate(tf.distribute.get_strategy(), model, classifier, objective, {"distill": 0.5},
                      [{k: tf.constant(v) for k, v in b.items()} for b in data], steps=3)
    after = [v.numpy() for v in model.variables + objective.variables]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))   # BN statistics, centres put back
    arcface, l2 = losses.get("arcface", scale=16.0, margin=0.3), losses.get("l2")
    ratios = []
    for batch in data:
        embeddings = model(batch["image"], training=True)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(embeddings)
            cls = 2.0 * tf.reduce_mean(arcface(batch["label"], classifier(embeddings)))
            dis = tf.reduce_mean(l2(embeddings, batch["teacher"]))
        ratios.append(np.linalg.norm(tape.gradient(dis, embeddings)) / np.linalg.norm(tape.gradient(cls, embeddings)))
    assert found["distill"]["steps"] == 3 and found["distill"]["target"] == 0.5
    assert found["distill"]["ratio"] == pytest.approx(np.mean(ratios), rel=1e-5)
    assert found["distill"]["weight"] == pytest.approx(0.5 / np.mean(ratios), rel=1e-5)


def test_two_replicas_measure_the_global_batch():
    code = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        from test_auto_weight import batches, tiny_model, objective_and_classifier
        from distill.train.auto_weight import calibrate
        data = batches()
        out = []
        for strategy in (tf.distribute.get_strategy(), tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])):
            with strategy.scope():
                model = tiny_model(bn=False)
                objective, classifier = objective_and_classifier()
            dataset = tf.data.Dataset.from_tensor_slices({{k: np.concatenate([b[k] for b in data])
                                                          for k in data[0]}}).batch(8)
            dataset = strategy.experimental_distribute_dataset(dataset)
            out.append(calibrate(strategy, model, classifier, objective, {{"distill": 1.0}}, dataset, 3))
        assert out[1]["distill"]["steps"] == 3
        np.testing.assert_allclose(out[1]["distill"]["weight"], out[0]["distill"]["weight"], rtol=1e-5)
        print("OK", out[0]["distill"]["weight"])
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "OK" in result.stdout


@pytest.fixture(scope="module")
def orl(tmp_path_factory):
    """4 ORL people and a flip store from a tiny_cnn teacher."""
    import keras

    from distill.models import build_embedding_model
    from distill.store.writer import embed

    root = tmp_path_factory.mktemp("auto")
    copy_people(root / "train", [f"s{i}" for i in range(1, 5)])
    keras.utils.set_random_seed(1)
    build_embedding_model("tiny_cnn", embedding_size=16).save(root / "teacher.keras")
    embed(root / "teacher.keras", root / "train", root / "store", shard_size=32, flip=True, progress=False)
    return root


def recipe(root, weight="auto", **changes) -> dict:
    base = {"name": "t", "seed": 3,
            "data": {"train": str(root / "train"), "store": str(root / "store"), "augment": "flip"},
            "model": {"backbone": "tiny_cnn", "embedding_size": 16, "dropout": 0.2},
            "loss": {"name": "arcface", "scale": 16.0, "margin": 0.3},
            "distill": {"name": "l2", "weight": weight},
            "train": {"batch_size": 10, "auto_weight_steps": 3},
            "stages": [{"epochs": 1, "lr": 0.05}, {"epochs": 1, "lr": 0.01, "scale": 32.0}]}
    return {**base, **changes}


BAD = [
    ({"loss": {"name": "arcface", "weight": "auto"}}, "loss.weight: 'auto' balances a distillation term "
     "against classification; this is a classification term"),
    ({"triplet": {"name": "center", "weight": "auto"}}, "triplet.weight: 'auto' .* this is a metric term"),
    ({"distill": {"name": "l2", "weight": "auto", "auto_target": 0}}, r"distill.auto_target must be a number > 0"),
    ({"distill": {"name": "l2", "weight": 7, "auto_target": 2}}, "distill.auto_target is read only with "
     "distill.weight: auto"),
    ({"train": {"batch_size": 10, "auto_weight_steps": 0}}, r"train.auto_weight_steps must be ≥ 1, got 0"),
    ({"stages": [{"epochs": 1, "weights": {"distill": "auto"}}]}, "stages.0.weights.distill must be a number "
     "≥ 0, got 'auto'; 'auto' goes on the term itself"),
    ({"loss": {"name": "arcface", "weight": 0}}, "distill.weight: auto balances the term's gradient against "
     "classification's, but stage 0 has no classification term .*nothing to balance against"),
    ({"terms": {"rkd": {"name": "rkd_distance", "weight": "auto", "auto_target": "x"}}},
     "terms.rkd.auto_target must be a number > 0, got 'x'"),
]


@pytest.mark.parametrize("changes, message", BAD)
def test_recipe_refuses_auto_where_it_means_nothing(changes, message, tmp_path):
    from distill.train.recipe import RecipeError, load_recipe

    with pytest.raises(RecipeError, match=message):
        load_recipe(None, data=recipe(tmp_path, **changes))


def test_auto_accepted_on_distillation_terms_and_stages_compose(tmp_path):
    from distill.train.recipe import load_recipe
    from distill.train.stages import resolve_stages

    data = recipe(tmp_path, weight=7, terms={"rkd": {"name": "rkd_distance", "weight": "auto", "auto_target": 0.5}},
                  stages=[{"epochs": 1}, {"epochs": 1, "scale": 32.0}, {"epochs": 1, "weights": {"rkd": 0}},
                          {"epochs": 1, "weights": {"rkd": 3}}])
    stages = resolve_stages(load_recipe(None, ["distill.weight=auto"], data=data))
    assert [s.auto_targets() for s in stages] == [{"distill": 1.0, "rkd": 0.5}] * 2 + [{"distill": 1.0}] * 2
    assert [s.weight("rkd") for s in stages] == [1.0, 1.0, 0.0, 3.0]   # 0 stays off, a number overrides
    spec = stages[0].objective_spec()
    assert spec["distill"]["weight"] == 1.0 and spec["terms"]["rkd"] == {"name": "rkd_distance", "weight": 1.0}


def test_check_prints_what_auto_balances(orl, tmp_path, cli):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe(orl)))
    code, out, err = cli("train", "--recipe", path, "--check", "--set", "distill.auto_target=0.5")
    assert code == 0, err
    assert "stage 0: epochs 1–1, lr 0.05: 1 × classification (arcface: margin=0.3, scale=16.0) + auto × distill (l2)" in out
    assert ("distill: weight auto (balances ‖∇e distill‖ to 0.5 × ‖∇e classification‖ over the first 3 steps "
            "of stage 0)") in out


def test_auto_run_equals_its_number_is_recorded_and_resume_reuses_it(orl, tmp_path, monkeypatch, caplog):
    import keras
    import tensorflow as tf

    from distill.report.runs import compare_runs, load_run
    from distill.train import auto_weight
    from distill.train.run_dir import RunDir
    from distill.train.trainer import train

    with caplog.at_level(logging.INFO, logger="distill.train.auto_weight"):
        full = train(recipe(orl), tmp_path / "full", progress=False)
    auto = full.history[0]["auto_weights"]["distill"]
    assert set(auto) == {"weight", "ratio", "target", "steps"} and auto["steps"] == 3
    assert auto["weight"] == pytest.approx(1.0 / auto["ratio"])
    assert "auto_weights" not in full.history[1]
    assert RunDir(full.run_dir).read_history() == full.history
    assert json.loads(RunDir(full.run_dir).state.read_text())["auto_weights"] == {"distill": auto}
    assert f"distill: auto weight {auto['weight']:.4g} (per-unit gradient ratio" in caplog.text
    tags = {v.tag for f in (full.run_dir / "tensorboard").iterdir()
            for e in tf.compat.v1.train.summary_iterator(str(f)) for v in e.summary.value}
    assert {"auto_weight/distill", "auto_ratio/distill"} <= tags

    # the calibration leaves no trace: the same run with the number in the recipe
    fixed = train(recipe(orl, weight=auto["weight"]), tmp_path / "fixed", progress=False)
    final = [keras.models.load_model(r.final_model, compile=False).get_weights() for r in (full, fixed)]
    for a, b in zip(*final):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    # resume reuses the recorded weight (stage 1 inherits auto); measuring again would fail
    train(recipe(orl), tmp_path / "part", progress=False, stop_after_epochs=1)
    monkeypatch.setattr(auto_weight, "calibrate", lambda *a, **k: pytest.fail("measured again on resume"))
    resumed = train(None, tmp_path / "part", resume=True, progress=False)
    assert resumed.history[0]["auto_weights"] == full.history[0]["auto_weights"]
    assert resumed.history[1]["loss"] == pytest.approx(full.history[1]["loss"], rel=1e-5)
    for a, b in zip(final[0], keras.models.load_model(resumed.final_model, compile=False).get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    # the report shows the measured weight
    assert load_run(full.run_dir).settings["distill.weight"] == f"auto {auto['weight']:.3g}"
    rows = compare_runs([full.run_dir, fixed.run_dir])
    assert [row["distill.weight"] for row in rows] == [f"auto {auto['weight']:.3g}", f"{auto['weight']:g}"]


def test_auto_balances_against_adadistill_and_leaves_its_centres_untouched(orl, tmp_path):
    """AdaDistill scores its own teacher centres (no shared classifier): auto measures against
    it, and the run equals the same recipe with the measured number (centres put back too)."""
    import keras

    from distill.train.trainer import train

    ada = {"loss": {"name": "adadistill", "scale": 16.0, "margin": 0.3}}
    full = train(recipe(orl, **ada), tmp_path / "full", progress=False)
    auto = full.history[0]["auto_weights"]["distill"]
    assert np.isfinite(auto["weight"]) and auto["weight"] > 0 and auto["steps"] == 3
    fixed = train(recipe(orl, weight=auto["weight"], **ada), tmp_path / "fixed", progress=False)
    assert fixed.history[-1]["loss"] == pytest.approx(full.history[-1]["loss"], rel=1e-5)
    for a, b in zip(*(keras.models.load_model(r.final_model, compile=False).get_weights() for r in (full, fixed))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
