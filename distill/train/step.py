"""The compiled training step, on one device or replicated (tf.distribute), fp32 or mixed.

Each replica computes the objective on its part of the global batch; its loss is divided by
the number of replicas because the optimizer sums gradients across replicas. MXNet weight
decay is added to the gradient (divided the same way); under mixed precision it enters the
loss as ``wd/2·Σ mult·‖w‖²`` instead (same gradient), so that loss scaling covers it.
"""
from __future__ import annotations

from distill.registry import registrar

#: name → f(devices) → tf.distribute.Strategy (``devices``: [] = every GPU)
STRATEGIES = {}


register_strategy = registrar(STRATEGIES)


@register_strategy("none")
def _default_strategy(devices):
    import tensorflow as tf

    return tf.distribute.get_strategy()


@register_strategy("mirrored")
def _mirrored_strategy(devices):
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(list(devices) or None)


@register_strategy("auto")
def _auto_strategy(devices):
    import tensorflow as tf

    several = len(devices) > 1 or len(tf.config.list_logical_devices("GPU")) > 1
    return STRATEGIES["mirrored" if several else "none"](devices)


def make_strategy(name: str, devices=()):
    if name not in STRATEGIES:
        raise ValueError(f"train.distribute must be one of {', '.join(STRATEGIES)}, got {name!r}")
    return STRATEGIES[name](devices)


def make_train_step(strategy, model, classifier, objective, optimizer, variables, decay,
                    mixed_precision: bool = False):
    """``step(distributed batch) → {term: scalar}`` (terms averaged over replicas)."""
    import tensorflow as tf

    replicas = strategy.num_replicas_in_sync

    def replica_step(batch):
        with tf.GradientTape() as tape:
            embeddings = tf.cast(model(batch["image"], training=True), tf.float32)
            cosine = classifier(embeddings)
            terms = objective(batch["label"], cosine, embeddings,
                              teacher_embeddings=batch.get("teacher"),
                              norms=tf.norm(embeddings, axis=1))
            loss = terms["total"] / replicas
            if mixed_precision:
                loss = optimizer.scale_loss(loss + decay.penalty(variables) / replicas)
        gradients = tape.gradient(loss, variables)
        if not mixed_precision:
            gradients = decay(gradients, variables, scale=1.0 / replicas)
        optimizer.apply_gradients(zip(gradients, variables))
        return terms

    @tf.function(reduce_retracing=True)
    def step(batch):
        per_replica = strategy.run(replica_step, args=(batch,))
        return {name: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
                for name, value in per_replica.items()}

    return step
