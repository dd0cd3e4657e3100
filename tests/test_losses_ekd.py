"""EKD (Huang et al. CVPR 2022) against a NumPy reference written from the official code
(Tencent/TFace recognition/tasks/ekd/distillation/ekd.py): loops over the pairs i < j, the
thresholds as ``sorted_neg[len // anchor]`` with anchors 10 … 10⁶, EMA over several steps."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from distill import losses

ANCHORS = [10, 100, 1000, 10000, 100000, 1000000]


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def reference_step(s, t, labels, state, temperature=0.01, momentum=0.01, top_k=2000,
                   w_pos=0.02, w_neg=0.01, anchors=ANCHORS):
    """One training step of EKD: (loss, new (student, teacher) thresholds)."""
    s, t = unit(s), unit(t)
    pos, neg = [], []
    for i in range(len(s)):
        for j in range(i + 1, len(s)):
            if labels[i] >= 0 and labels[j] >= 0:
                (pos if labels[i] == labels[j] else neg).append((i, j))
    sim_s = {p: float(s[p[0]] @ s[p[1]]) for p in pos + neg}
    sim_t = {p: float(t[p[0]] @ t[p[1]]) for p in pos + neg}
    a_s, a_t = np.array(state[0], float), np.array(state[1], float)
    if neg:
        sorted_s = sorted((sim_s[p] for p in neg), reverse=True)
        sorted_t = sorted((sim_t[p] for p in neg), reverse=True)
        a_s = momentum * np.array([sorted_s[len(neg) // a] for a in anchors]) + (1 - momentum) * a_s
        a_t = momentum * np.array([sorted_t[len(neg) // a] for a in anchors]) + (1 - momentum) * a_t

    def count(x, a):
        return sum(1.0 / (1.0 + np.exp(np.clip(-(x - ak) / temperature, -50, 50))) for ak in a)

    def mse(pairs):
        return np.mean([(count(sim_s[p], a_s) - count(sim_t[p], a_t)) ** 2 for p in pairs]) if pairs else 0.0

    hardest = sorted(neg, key=lambda p: -sim_s[p])[:top_k]
    return w_pos * mse(pos) + w_neg * mse(hardest), (a_s, a_t)


def batch(seed, b=12, ds=6, dt=9, classes=4, unlabelled=2):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, b)
    labels[rng.permutation(b)[:unlabelled]] = -1
    return rng.normal(size=(b, ds)), rng.normal(size=(b, dt)), labels


@pytest.mark.parametrize("params", [{}, {"temperature": 0.3, "momentum": 0.5, "top_k": 7,
                                         "fprs": [0.5, 0.2, 0.05]}])
def test_ekd_matches_the_reference_over_several_steps(params):
    """Per step the batch mean is the loss; the EMA thresholds carry over (5 steps)."""
    loss = losses.get("ekd", **params)
    ref = {k: v for k, v in params.items() if k != "fprs"}
    if "fprs" in params:
        ref["anchors"] = [round(1 / f) for f in params["fprs"]]
    state = (np.zeros(len(params.get("fprs", ANCHORS))),) * 2
    for step in range(5):
        s, t, labels = batch(step)
        got = loss(tf.constant(s), tf.constant(t), tf.constant(labels))
        expected, state = reference_step(s, t, labels, state, **ref)
        assert got.shape == (len(s),)
        assert float(tf.reduce_mean(got)) == pytest.approx(expected, rel=1e-5, abs=1e-9)
        np.testing.assert_allclose(loss.student_thresholds.numpy(), state[0], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(loss.teacher_thresholds.numpy(), state[1], rtol=1e-6, atol=1e-7)
    assert np.abs(state[0]).max() > 0 and float(tf.reduce_mean(got)) > 0


def test_ekd_without_pairs_is_zero_and_keeps_its_thresholds():
    loss = losses.get("ekd")
    s, t, _ = batch(0, b=4)
    value = loss(tf.constant(s), tf.constant(t), tf.constant([-1, -1, -1, 2]))
    assert float(tf.reduce_sum(tf.abs(value))) == 0.0 and np.all(loss.student_thresholds.numpy() == 0)


def test_ekd_gradient_matches_finite_differences():
    """Smooth settings (T = 0.5) in float64. The thresholds carry no gradient (as in the
    official code), so they are held: set, with a momentum too small to move them."""
    s, t, labels = batch(7, b=8, ds=4, dt=5, unlabelled=1)
    loss = losses.get("ekd", temperature=0.5, momentum=1e-12, top_k=5, fprs=[0.5, 0.2, 0.05])
    loss.build()
    saved = [np.array([-0.2, 0.1, 0.4], np.float32), np.array([-0.1, 0.2, 0.3], np.float32)]

    def value(x):
        for variable, kept in zip(loss.state, saved):
            variable.assign(kept)
        return float(tf.reduce_mean(loss(tf.constant(x), tf.constant(t), tf.constant(labels))))

    student = tf.Variable(s)
    for variable, kept in zip(loss.state, saved):
        variable.assign(kept)
    with tf.GradientTape() as tape:
        total = tf.reduce_mean(loss(student, tf.constant(t), tf.constant(labels)))
    gradient = tape.gradient(total, student).numpy()
    eps, numeric = 1e-6, np.zeros_like(s)
    for index in np.ndindex(s.shape):
        up, down = s.copy(), s.copy()
        up[index] += eps
        down[index] -= eps
        numeric[index] = (value(up) - value(down)) / (2 * eps)
    assert np.abs(gradient).max() > 1e-6
    np.testing.assert_allclose(gradient, numeric, rtol=1e-4, atol=1e-8)


def test_objective_passes_labels_to_terms_that_need_them():
    from distill.losses.objective import build_objective

    s, t, labels = batch(3)
    objective = build_objective({"name": "arcface", "weight": 0}, terms={"ekd": {"name": "ekd", "weight": 2.0}})
    out = objective(labels, None, s.astype(np.float32), teacher_embeddings=t.astype(np.float32))
    expected, _ = reference_step(s, t, labels, (np.zeros(6), np.zeros(6)))
    assert float(out["ekd"]) == pytest.approx(expected, rel=1e-4)
    assert float(out["total"]) == pytest.approx(2 * expected, rel=1e-4)
    assert [v.name.split(":")[0] for v in objective.variables] == ["ekd_student_thresholds",
                                                                    "ekd_teacher_thresholds"]


@pytest.mark.parametrize("bad, message", [({"fprs": [0.1, 1.5]}, "fprs"), ({"top_k": 0}, "top_k"),
                                          ({"momentum": 0}, "momentum"), ({"temperature": 0}, "temperature")])
def test_ekd_refuses_bad_parameters(bad, message):
    with pytest.raises(ValueError, match=f"ekd {message}"):
        losses.get("ekd", **bad)


def test_recipe_refuses_a_bad_ekd_setting_before_any_work():
    from distill.train.recipe import RecipeError, load_recipe

    data = {"data": {"train": "x"}, "terms": {"ekd": {"name": "ekd", "top_k": 0}}, "stages": [{"epochs": 1}]}
    with pytest.raises(RecipeError, match=r"^recipe: terms.ekd.top_k = 0 in stage 0 is out of range \(must be > 0\)$"):
        load_recipe(data=data)
    assert losses.spec("ekd").defaults["fprs"] == (0.1, 0.01, 0.001, 0.0001, 1e-05, 1e-06)


MIRRORED = textwrap.dedent('''
    import json
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from distill import losses

    rng = np.random.default_rng(0)
    B = 12
    labels = np.repeat(np.arange(4), 3); labels[5] = -1
    s = rng.normal(size=(B, 6)).astype(np.float32); t = rng.normal(size=(B, 8)).astype(np.float32)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        dist = losses.get("ekd", temperature=0.2, momentum=0.5, top_k=9)
        dist.build()
    single = losses.get("ekd", temperature=0.2, momentum=0.5, top_k=9)

    def split(x):
        return strategy.experimental_distribute_values_from_function(
            lambda c: tf.constant(x[c.replica_id_in_sync_group * 6:(c.replica_id_in_sync_group + 1) * 6]))

    @tf.function
    def step(x, y, lab):
        def replica(x, y, lab):
            with tf.GradientTape() as tape:
                tape.watch(x)
                values = dist(x, y, lab)
                mean = tf.reduce_mean(values) / 2.0
            return values, tape.gradient(mean, x)
        return strategy.run(replica, args=(x, y, lab))

    diff = {}
    for k in range(3):
        values, grads = step(split(s + k), split(t), split(labels))
        x = tf.constant(s + k)
        with tf.GradientTape() as tape:
            tape.watch(x)
            ref = single(x, tf.constant(t), tf.constant(labels))
            mean = tf.reduce_mean(ref)
        ref_grad = tape.gradient(mean, x).numpy()
        cat = lambda v: np.concatenate([a.numpy() for a in strategy.experimental_local_results(v)])
        diff[f"values_{k}"] = float(np.abs(cat(values) - ref.numpy()).max())
        diff[f"grad_{k}"] = float(np.abs(cat(grads) - ref_grad).max())
    for a, b in zip(dist.state, single.state):
        diff[a.name] = float(max(np.abs(v.numpy() - b.numpy()).max() for v in strategy.experimental_local_results(a)))
    print("REPORT " + json.dumps({"diff": diff, "loss": float(np.mean(ref.numpy()))}))
''')


def test_ekd_under_mirrored_strategy_equals_one_device():
    """Thresholds, top-k and normalisation over the global batch: the replicas' rows, their
    gradients and the EMA state equal one device's on the whole batch (3 steps)."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", MIRRORED], capture_output=True, text=True, env=env, timeout=300)
    lines = [line for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    assert lines, result.stderr[-3000:]
    report = json.loads(lines[-1][7:])
    assert report["loss"] > 0
    assert max(report["diff"].values()) < 1e-5, report
