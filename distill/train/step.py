"""The compiled training step, on one device or replicated (tf.distribute), fp32 or mixed.

Each replica computes the objective on its part of the global batch; its loss is divided by
the number of replicas because the optimizer sums gradients across replicas. MXNet weight
decay is added to the gradient (divided the same way); under mixed precision it enters the
loss as ``wd/2·Σ mult·‖w‖²`` instead (same gradient), so that loss scaling covers it.
"""
from __future__ import annotations

from distill.registry import Registry

#: name → f(devices) → tf.distribute.Strategy (``devices``: [] = every GPU)
STRATEGIES = Registry("distribution strategy", skip=("devices",))
register_strategy = STRATEGIES.register


@register_strategy("none")
def _default_strategy(devices):
    import tensorflow as tf

    return tf.distribute.get_strategy()


_MIRRORED: dict = {}


@register_strategy("mirrored")
def _mirrored_strategy(devices):
    """One MirroredStrategy per device list and process: a second one restarts TF's collective
    instance keys, and a second training in the same process then fails ("Shape mismatch in
    the collective instance") because the runtime still holds the first one's shapes."""
    import tensorflow as tf

    key = tuple(devices)
    if key not in _MIRRORED:
        _MIRRORED[key] = tf.distribute.MirroredStrategy(list(devices) or None)
    return _MIRRORED[key]


@register_strategy("auto")
def _auto_strategy(devices):
    import tensorflow as tf

    several = len(devices) > 1 or len(tf.config.list_logical_devices("GPU")) > 1
    return STRATEGIES.builder("mirrored" if several else "none")(devices)


register_strategy("multi_worker", "distill.train.distributed:multi_worker_strategy")


def make_strategy(name: str, devices=()):
    return STRATEGIES.builder(name, "train.distribute")(devices)


def reproducible_graphs() -> None:
    """Turn off Grappler's arithmetic optimizer for this process. With the gradient
    statistics in the step it regrouped the step's sums differently from run to run (two
    identical runs, or a run and its resume, ended with weights apart by up to 50 %
    relative); without it the same recipe and seed give bit-identical weights."""
    import tensorflow as tf

    tf.config.optimizer.set_experimental_options({"arithmetic_optimization": False})


def make_train_step(strategy, model, classifier, objective, optimizer, variables, decay,
                    mixed_precision: bool = False, gradient_stats: bool = True, seed: int = 0):
    """``step(distributed batch) → {term: scalar}`` (terms averaged over replicas).

    With ``gradient_stats``, each term's gradient with respect to the batch embeddings (cheap:
    it runs back through the loss only, not the network) is compared with the classification
    term's: ``grad/<term>`` = ‖∂(w·term)/∂e‖ ÷ ‖∂classification/∂e‖ and ``gradcos/<term>`` =
    their cosine, so a term that drowns or fights classification shows in the logs. Without a
    classification term the ratios are taken against the first term. With
    ``objective.sample_rate`` < 1 the classifier scores a Partial FC sample of the classes,
    drawn from ``(seed, optimizer.iterations)`` (:mod:`distill.losses.partial_fc`).
    """
    import tensorflow as tf

    replicas = strategy.num_replicas_in_sync
    labels_of_terms = [term.label for term in objective.terms]
    reference = labels_of_terms[0] if labels_of_terms else None

    def replica_step(batch):
        with tf.GradientTape() as tape:
            embeddings = tf.cast(model(batch["image"], training=True), tf.float32)
            # a second tape over the loss side only, for the per-term gradient statistics
            with tf.GradientTape(persistent=True) as loss_tape:
                loss_tape.watch(embeddings)
                sample_seed = tf.stack([tf.constant(seed, tf.int64), tf.cast(optimizer.iterations, tf.int64)])
                values = term_values(classifier, objective, batch, embeddings, sample_seed)
            total = objective.total(values)
            loss = total / replicas
            if mixed_precision:
                loss = optimizer.scale_loss(loss + decay.penalty(variables) / replicas)
        gradients = tape.gradient(loss, variables)
        gradients = [tf.zeros_like(v) if g is None else g for g, v in zip(gradients, variables)]
        if not mixed_precision:
            gradients = decay(gradients, variables, scale=1.0 / replicas)
        out = {"total": total, **values}
        if gradient_stats and len(labels_of_terms) > 1:
            # measured before the update, and the update ordered after them
            out.update(_gradient_stats(loss_tape, objective, values, embeddings, reference))
        del loss_tape
        with tf.control_dependencies(list(out.values())):
            optimizer.apply_gradients(zip(gradients, variables))
        return out

    @tf.function(reduce_retracing=True)
    def step(batch):
        per_replica = strategy.run(replica_step, args=(batch,))
        return {name: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
                for name, value in per_replica.items()}

    return step


def term_values(classifier, objective, batch, embeddings, sample_seed, terms_of=None) -> dict:
    """``{label: unweighted batch mean}`` of the terms of ``terms_of`` (default: ``objective``)
    on ``embeddings``: the Partial FC class sample drawn from ``sample_seed`` when a term
    classifies, the shared classifier's cosines only when a term reads them (``adadistill``
    scores its own centres). The training step and ``weight: auto`` both call this."""
    import tensorflow as tf

    from distill.losses.partial_fc import class_sample

    measured = terms_of or objective
    num_classes = classifier.num_classes if classifier is not None else objective.num_classes
    classes, class_labels = (class_sample(batch["label"], num_classes, measured.sample_rate, sample_seed)
                             if measured.has("classification") else (None, None))
    cosine = (classifier(embeddings, classes=classes)
              if classifier is not None and measured.needs_classifier else None)
    return measured.term_values(batch["label"], cosine, embeddings, teacher_embeddings=batch.get("teacher"),
                                norms=tf.norm(embeddings, axis=1), class_labels=class_labels, classes=classes)


def _gradient_stats(tape, objective, values, embeddings, reference) -> dict:
    """``grad/<term>`` and ``gradcos/<term>`` of each weighted term against ``reference``."""
    import tensorflow as tf

    def flat_gradient(term):
        gradient = tape.gradient(values[term.label], embeddings)
        return tf.zeros([tf.size(embeddings)]) if gradient is None else term.weight * tf.reshape(gradient, [-1])

    first = next(term for term in objective.terms if term.label == reference)
    base = flat_gradient(first)
    base_norm = tf.norm(base)
    out = {}
    for term in objective.terms:
        if term.label == reference:
            continue
        gradient = flat_gradient(term)
        norm = tf.norm(gradient)
        out[f"grad/{term.label}"] = norm / tf.maximum(base_norm, 1e-12)
        out[f"gradcos/{term.label}"] = tf.reduce_sum(gradient * base) / tf.maximum(norm * base_norm, 1e-12)
    return out
