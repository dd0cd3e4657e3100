"""Under MirroredStrategy (2 logical CPUs, in a subprocess): stateful losses give the same
per-sample losses and state as one device on the whole batch; the objective (with a
projection) and the classifier run in replica context. Tolerance 1e-4."""
from __future__ import annotations

import textwrap

from conftest import script_report

SCRIPT = textwrap.dedent('''
    import json, os
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from distill import losses
    from distill.losses.objective import build_objective
    from distill.models.classifier import CosineClassifier

    rng = np.random.default_rng(0)
    B, C, D, T = 8, 5, 6, 4
    labels = rng.integers(0, C, B).astype(np.int32)
    emb = (rng.normal(size=(B, D)) * 3).astype(np.float32)
    teacher = rng.normal(size=(B, T)).astype(np.float32)
    weights = rng.normal(size=(D, C))
    cosine = ((emb / np.linalg.norm(emb, axis=1, keepdims=True))
              @ (weights / np.linalg.norm(weights, axis=0))).astype(np.float32)
    norms = np.linalg.norm(emb, axis=1).astype(np.float32)

    def make():
        out = {n: losses.get(n) for n in ("adacos", "curricularface", "adaface")}
        out["center"] = losses.get("center", num_classes=C, embedding_dim=D, alpha=0.3)
        return out

    def run_all(ls, lab, cs, e, n):
        return {k: (l(lab, cs, n) if k != "center" else l(lab, e)) for k, l in ls.items()}

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        dist = make()
        objective = build_objective({"name": "arcface"}, {"name": "l2", "weight": 7.0},
                                    {"name": "triplet_batch_hard", "weight": 1.0})  # lazy projection
        classifier = CosineClassifier(C)
        classifier.build((None, D))
    single = make()

    def split(x):
        half = B // 2
        return strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(x[ctx.replica_id_in_sync_group * half:(ctx.replica_id_in_sync_group + 1) * half]))

    @tf.function
    def step(lab, cs, e, n, t):
        def replica(lab, cs, e, n, t):
            out = run_all(dist, lab, cs, e, n)
            out.update(objective(lab, classifier(e), e, teacher_embeddings=t, norms=n))
            return out
        return strategy.run(replica, args=(lab, cs, e, n, t))

    report = {"diff": {}}
    for s in range(2):
        out = step(split(labels), split(cosine), split(emb), split(norms), split(teacher))
        ref = run_all(single, labels, cosine, emb, norms)
        for k in ref:
            got = np.concatenate([t.numpy() for t in strategy.experimental_local_results(out[k])])
            report["diff"][f"{k}_loss_{s}"] = float(np.abs(got - ref[k].numpy()).max())
        report["total_finite"] = all(np.isfinite(t.numpy()) for t in strategy.experimental_local_results(out["total"]))
    for k in dist:
        for a, b in zip(dist[k].state, single[k].state):
            values = [v.numpy() for v in strategy.experimental_local_results(a)]
            report["diff"][f"{k}_state"] = float(max(np.abs(v - b.numpy()).max() for v in values))
    report["objective_variables"] = [list(v.shape) for v in objective.trainable_variables]
    print("REPORT " + json.dumps(report))
''')


def test_stateful_losses_under_mirrored_strategy():
    report = script_report(SCRIPT)
    assert len(report["diff"]) == 4 * 2 + 4
    assert all(v < 1e-4 for v in report["diff"].values()), report["diff"]
    assert report["total_finite"]
    assert report["objective_variables"] == [[6, 4]]
