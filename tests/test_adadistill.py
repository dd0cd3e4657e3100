"""AdaDistill (issue 19): EMA teacher centres with the adaptive momentum and the margin head on
them, against a NumPy reference written from the paper and fdbtrs/AdaDistill over several
steps; Partial FC on/off; a tiny stopped-and-resumed `distill train`; recipe errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
import yaml

from conftest import copy_people, error_lines, script_report
from distill.losses.objective import build_objective
from distill.losses.partial_fc import sample_classes

C, D, SCALE, MARGIN = 6, 8, 16.0, 0.3
LABELS = [np.array([0, 2, 2, -1, 5, 1]), np.array([3, 3, 3, 0, -1, 4]),
          np.array([2, 5, 1, 0, 4, 3]), np.array([-1, 1, 1, 2, 2, 0])]


def batches(seed=0):
    """(labels, student, teacher) per step; the student near its teacher, so α is not floored."""
    rng = np.random.default_rng(seed)
    out = []
    for labels in LABELS:
        teacher = rng.normal(size=(len(labels), D))
        student = teacher + 0.7 * rng.normal(size=teacher.shape)
        out.append((labels, student.astype(np.float32), teacher.astype(np.float32)))
    return out


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def reference_update(centres, labels, student, teacher):
    """Official AdaptiveAArcFace: λ = clamp(cos(c_y, t), 1e-6, 1), α = clamp(cos(s, t)·λ, 1e-6, 1),
    c_y ← α c_y + (1 − α) t from the pre-step centre; a class seen twice takes the mean."""
    s, t, new = unit(student.astype(np.float64)), unit(teacher.astype(np.float64)), centres.copy()
    updates: dict = {}
    for i, y in enumerate(labels):
        if y < 0:
            continue
        c = centres[y]
        lam = np.clip(c @ t[i] / max(np.linalg.norm(c), 1e-8), 1e-6, 1)
        alpha = np.clip(np.clip(s[i] @ t[i], -1, 1) * lam, 1e-6, 1)
        updates.setdefault(y, []).append(alpha * c + (1 - alpha) * t[i])
    for y, rows in updates.items():
        new[y] = np.mean(rows, axis=0)
    return new


def reference_loss(centres, labels, student, columns=None):
    """ArcFace CE on cos(ŝ, ĉ) (InsightFace fallback past θ + m = π), mean over labelled."""
    columns = np.arange(len(centres)) if columns is None else columns
    cos = np.clip(unit(student.astype(np.float64)) @ unit(centres[columns]).T, -1, 1)
    losses = []
    for i, y in enumerate(labels):
        if y < 0:
            continue
        j = int(np.searchsorted(columns, y))
        logits = cos[i].copy()
        theta = math.acos(np.clip(cos[i, j], -1 + 1e-7, 1 - 1e-7))
        th = math.cos(math.pi - MARGIN)
        logits[j] = math.cos(theta + MARGIN) if cos[i, j] > th else cos[i, j] - math.sin(math.pi - MARGIN) * MARGIN
        logits = SCALE * logits
        losses.append(np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[j])
    return float(np.mean(losses))


def make_objective(**params):
    spec = {"name": "adadistill", "scale": SCALE, "margin": MARGIN, **params}
    return build_objective(spec, num_classes=C, embedding_dim=D, teacher_dim=D)


def test_loss_and_centres_follow_the_reference_over_four_steps():
    objective = make_objective()
    centres = objective.variables[0].numpy().astype(np.float64)
    assert objective.variables[0].trainable is False and not objective.trainable_variables
    assert centres.std() == pytest.approx(0.01, rel=0.4)                      # official N(0, 0.01²)
    for step, (labels, student, teacher) in enumerate(batches()):
        centres = reference_update(centres, labels, student, teacher)
        values = objective(labels, None, student, teacher)
        np.testing.assert_allclose(objective.variables[0].numpy(), centres, rtol=1e-5, atol=1e-6,
                                   err_msg=f"step {step}")
        assert float(values["classification"]) == pytest.approx(reference_loss(centres, labels, student),
                                                                rel=1e-5), step
    untouched = make_objective()      # same seed: same start; unlabelled rows never move a centre
    np.testing.assert_array_equal(untouched.variables[0].numpy(), make_objective().variables[0].numpy())
    untouched(np.full(6, -1), None, *batches()[0][1:])
    np.testing.assert_array_equal(untouched.variables[0].numpy(), make_objective().variables[0].numpy())


def test_gradients_reach_the_student_not_the_centres():
    objective = make_objective()
    labels, student, teacher = batches()[0]
    student, teacher = tf.Variable(student), tf.Variable(teacher)
    with tf.GradientTape() as tape:
        total = objective(labels, None, student, teacher)["total"]
    g_student, g_centres, g_teacher = tape.gradient(total, [student, objective.variables[0], teacher])
    assert g_centres is None and g_teacher is None
    assert np.abs(g_student.numpy()[labels >= 0]).sum() > 0
    np.testing.assert_array_equal(g_student.numpy()[labels < 0], 0)


def test_partial_fc_reads_the_sampled_columns_and_updates_the_same_centres():
    full, sampled = make_objective(), make_objective(sample_rate=0.5)
    assert sampled.sample_rate == 0.5
    for step, (labels, student, teacher) in enumerate(batches(1)):
        classes, local = sample_classes(labels, C, 3, tf.constant([7, step], tf.int64))
        classes_np = classes.numpy()
        assert set(labels[labels >= 0]) <= set(classes_np)
        a = full(labels, None, student, teacher)["classification"]
        b = sampled(labels, None, student, teacher, class_labels=local, classes=classes)["classification"]
        np.testing.assert_array_equal(full.variables[0].numpy(), sampled.variables[0].numpy())
        centres = full.variables[0].numpy().astype(np.float64)
        assert float(a) == pytest.approx(reference_loss(centres, labels, student), rel=1e-5)
        assert float(b) == pytest.approx(reference_loss(centres, labels, student, classes_np), rel=1e-5)
        if len(classes_np) < C:
            assert float(b) < float(a)        # fewer negatives
    every = tf.range(C)
    labels, student, teacher = batches(2)[0]
    a = make_objective()(labels, None, student, teacher)["classification"]
    b = make_objective()(labels, None, student, teacher, class_labels=labels, classes=every)["classification"]
    assert float(a) == pytest.approx(float(b), rel=1e-6)


def test_dimension_and_parameters_refused_in_one_line():
    with pytest.raises(ValueError, match="model.embedding_size 8 differs from the teacher's dimension 16"):
        build_objective({"name": "adadistill"}, num_classes=C, embedding_dim=8, teacher_dim=16)
    with pytest.raises(ValueError, match="head must be one of arcface, cosface"):
        build_objective({"name": "adadistill", "head": "sphereface"})


# ------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_teacher):
    """4 ORL people, a flip store from the tiny 32-d teacher."""
    from distill.store.writer import embed

    root = tmp_path_factory.mktemp("ada")
    train_dir = copy_people(root / "train", [f"s{i}" for i in range(1, 5)])
    embed(tiny_teacher, train_dir, root / "store", shard_size=32, flip=True, progress=False)
    return root


def recipe(root, **loss) -> dict:
    return {
        "name": "ada", "seed": 2,
        "data": {"train": str(root / "train"), "store": str(root / "store"), "augment": "flip"},
        "model": {"backbone": "mobilenet", "alpha": 0.25, "embedding_size": 32, "dropout": 0.0},
        "loss": {"name": "adadistill", "scale": 16.0, "margin": 0.3, **loss},
        "train": {"batch_size": 10, "gradient_stats": False},
        "stages": [{"epochs": 1, "lr": 0.05}, {"epochs": 1, "lr": 0.01, "scale": 32.0}],
    }


def test_train_stop_and_resume_equals_uninterrupted(setup, tmp_path):
    """Stopped at the stage boundary (scale 16 → 32: a new objective): the centres go on into
    the second stage in both runs, and the resumed run ends where the uninterrupted one does."""
    import keras

    from distill.train.checkpoints import load_arrays
    from distill.train.trainer import train

    spec = recipe(setup, sample_rate=0.5)
    full = train(spec, tmp_path / "full", progress=False)
    train(spec, tmp_path / "part", progress=False, stop_after_epochs=1)
    first = load_arrays(tmp_path / "part")
    resumed = train(None, tmp_path / "part", resume=True, progress=False)
    end_full, end_part = load_arrays(tmp_path / "full"), load_arrays(tmp_path / "part")
    assert not any(k.startswith("classifier/") for k in end_full)        # no trained classifier
    centres = end_full["objective/0"]
    assert centres.shape == (4, 32)
    assert not np.allclose(first["objective/0"], centres)                 # the second epoch moved them
    np.testing.assert_allclose(end_part["objective/0"], centres, rtol=1e-4, atol=1e-5)
    a = keras.models.load_model(full.final_model, compile=False).get_weights()
    b = keras.models.load_model(resumed.final_model, compile=False).get_weights()
    for wa, wb in zip(a, b):
        np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-5)
    assert resumed.history[-1]["loss"]["total"] == pytest.approx(full.history[-1]["loss"]["total"], rel=1e-4)


@pytest.mark.parametrize("change,message", [
    ({"data": {"store": None}}, "data.store is not set"),
    ({"model": {"embedding_size": 16}}, "adadistill: model.embedding_size 16 differs from the teacher's dimension 32"),
])
def test_recipe_errors_in_one_line(setup, tmp_path, change, message):
    from conftest import run_console

    spec = recipe(setup)
    for section, values in change.items():
        spec[section].update(values)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = run_console("train", "--recipe", path, "--run-dir", tmp_path / "run", "--no-progress")
    assert result.returncode != 0
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and message in lines[0] and "adadistill" in lines[0], result.stderr


MIRRORED = '''
import json
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from distill.losses.objective import build_objective

spec = {"name": "adadistill", "scale": 16.0, "margin": 0.3}
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    dist = build_objective(spec, num_classes=6, embedding_dim=8, teacher_dim=8)
single = build_objective(spec, num_classes=6, embedding_dim=8, teacher_dim=8)
rng = np.random.default_rng(3)

def split(x):
    return strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(x[ctx.replica_id_in_sync_group * 4:(ctx.replica_id_in_sync_group + 1) * 4]))

@tf.function
def step(labels, student, teacher):
    return strategy.run(lambda l, s, t: dist(l, None, s, t)["total"], args=(labels, student, teacher))

diff = []
for labels in ([0, 2, 2, 5, 2, 1, 0, 3], [4, 4, 1, 0, 4, 3, 3, 1], [5, 0, 2, 2, 1, 5, 0, 3]):
    labels = np.array(labels, np.int64)
    teacher = rng.normal(size=(8, 8)).astype(np.float32)
    student = (teacher + 0.7 * rng.normal(size=(8, 8))).astype(np.float32)
    got = step(split(labels), split(student), split(teacher))
    want = float(single(labels, None, student, teacher)["total"])
    diff.append(float(abs(np.mean([v.numpy() for v in strategy.experimental_local_results(got)]) - want)))
    for local in strategy.experimental_local_results(dist.variables[0]):
        diff.append(float(np.abs(local.numpy() - single.variables[0].numpy()).max()))
print("REPORT " + json.dumps(diff))
'''


def test_mirrored_replicas_update_centres_like_one_device():
    """2 logical CPUs, a class in both halves of the batch: the gathered update equals the
    single-device one on every replica, and so does the loss."""
    diff = script_report(MIRRORED)
    assert len(diff) == 9 and max(diff) < 1e-5, diff
