"""``weight: auto``: a distillation term's weight set from the gradient balance at the start.

Per unit weight, ``r = ‖∂term/∂e‖ ÷ ‖∂(w_c·classification)/∂e‖`` on the batch embeddings
``e`` (the ``grad/<term>`` statistic of :mod:`distill.train.step` divided by the term's
weight), measured at the initial weights on the first ``train.auto_weight_steps`` batches of
the stage, before any update; ``weight = target ÷ mean(r)``. Under tf.distribute each replica
returns its squared gradient norms and they are summed, so ``r`` is the global batch's. The
model's and the losses' variables (BN statistics, dropout seeds, loss state) are put back
afterwards: the run then trains exactly as one with that number written in the recipe.
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class AutoWeightError(ValueError):
    """The gradient balance cannot be measured (e.g. a zero gradient); the message says which."""


def calibrate(strategy, model, classifier, objective, targets: dict, batches, steps: int,
              seed: int = 0) -> dict:
    """``{label: {"weight", "ratio", "target", "steps"}}`` for each term of ``targets``
    (label → target ratio); ``objective`` holds them at unit weight and a classification term."""
    import numpy as np
    import tensorflow as tf

    from distill.losses.objective import Objective
    from distill.train.step import term_values

    reference = next((t for t in objective.terms if t.kind == "classification"), None)
    if reference is None:
        raise AutoWeightError(f"weight auto for {', '.join(targets)}: no classification term to "
                              "balance against")
    measured = Objective([reference, *(t for t in objective.terms if t.label in targets)])
    kept = list(model.variables) + list(objective.variables)
    saved = [v.numpy() for v in kept]

    def replica(batch):
        embeddings = tf.cast(model(batch["image"], training=True), tf.float32)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(embeddings)
            values = term_values(classifier, objective, batch, embeddings, tf.constant([seed, 0], tf.int64),
                                 terms_of=measured)
        squares = {}
        for term in measured.terms:
            gradient = tape.gradient(values[term.label], embeddings)
            squares[term.label] = (tf.constant(0.0) if gradient is None
                                   else tf.reduce_sum(tf.square(term.weight * gradient)))
        return squares

    @tf.function
    def measure(batch):
        per_replica = strategy.run(replica, args=(batch,))
        return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

    ratios = {label: [] for label in targets}
    try:
        for _, batch in zip(range(steps), batches):
            squares = {k: float(v) for k, v in measure(batch).items()}
            if not squares[reference.label] > 0:
                raise AutoWeightError("weight auto: the classification term's gradient on the embeddings "
                                      "is zero on a calibration batch; give the weight a number")
            for label in targets:
                ratios[label].append(np.sqrt(squares[label] / squares[reference.label]))
    finally:
        for variable, value in zip(kept, saved):
            variable.assign(value)
    found = {}
    for label, target in targets.items():
        ratio = float(np.mean(ratios[label])) if ratios[label] else 0.0
        if not (ratio > 0 and np.isfinite(ratio)):
            raise AutoWeightError(f"weight auto for {label}: its gradient on the embeddings is {ratio} "
                                  f"per unit weight over {len(ratios[label])} batches; give the weight a number")
        found[label] = {"weight": float(target) / ratio, "ratio": ratio, "target": float(target),
                        "steps": len(ratios[label])}
    return found


def resolve(objective, targets: dict, known: dict, measure) -> dict:
    """Give the objective's ``targets`` (label → target) their weights: those in ``known``
    (recorded, e.g. on resume) or ``measure(missing targets)``'s, which are logged, added to
    ``known`` and returned."""
    found = measure({k: t for k, t in targets.items() if k not in known}) if set(targets) - set(known) else {}
    for line in describe(found):
        log.info(line)
    known.update(found)
    apply(objective, {label: known[label] for label in targets})
    return found


def apply(objective, weights: dict) -> None:
    """Give the objective's terms their resolved weights (``{label: {"weight": ...}}``)."""
    for term in objective.terms:
        if term.label in weights:
            term.weight = float(weights[term.label]["weight"])


def describe(weights: dict) -> list[str]:
    """The log lines, e.g. ``distill: auto weight 8.47 (per-unit gradient ratio 0.118 over 20
    steps, target 1)``."""
    return [f"{label}: auto weight {w['weight']:.4g} (per-unit gradient ratio {w['ratio']:.4g} over "
            f"{w['steps']} steps, target {w['target']:g})" for label, w in weights.items()]
