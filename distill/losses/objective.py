"""The training objective: a classification loss plus weighted distillation, triplet and
center terms. ``total = classification + Σ weight · term``, each term a batch mean."""
from __future__ import annotations

import tensorflow as tf

from distill import losses

# term → (kind, default loss name)
TERMS = {"distill": ("distillation", "l2"), "triplet": ("metric", "triplet_batch_hard"),
         "center": ("metric", "center")}


def _build(config: dict, kind: str, default_name: str | None = None):
    config = dict(config)
    name = config.pop("name", default_name)
    if name is None:
        raise ValueError(f"a {kind} loss needs a 'name'")
    loss_spec = losses.spec(name)
    if loss_spec.kind != kind:
        valid = ", ".join(n for n, s in losses.available().items() if s.kind == kind)
        raise ValueError(f"loss '{name}' is a {loss_spec.kind} loss, not {kind}; valid: {valid}")
    return losses.get(name, **config)


def _mean(values, sample_weight) -> tf.Tensor:
    values = tf.cast(values, tf.float32)
    if sample_weight is None:
        return tf.reduce_mean(values)
    weight = tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
    return tf.reduce_sum(values * weight) / tf.maximum(tf.reduce_sum(weight), 1e-12)


class Objective:
    """Callable ``(labels, cosine, embeddings, teacher_embeddings, norms, sample_weight)`` →
    ``{"total", "classification", <active terms>}`` scalar float32 tensors."""

    def __init__(self, classification, terms: dict):
        self.classification = classification
        self.terms = dict(terms)                # name → (loss, weight), weight > 0
        self.needs_norms = bool(getattr(classification, "needs_norms", False))

    @property
    def losses(self) -> list:
        return [self.classification] + [loss for loss, _ in self.terms.values()]

    @property
    def trainable_variables(self) -> list:
        """Learned loss parameters (distillation projections)."""
        return [v for loss in self.losses for v in loss.trainable_variables]

    @property
    def variables(self) -> list:
        """Every variable of the losses (projections and state), for checkpoints."""
        return [v for loss in self.losses for v in loss.variables]

    def build(self, num_classes=None, embedding_dim=None, teacher_dim=None) -> "Objective":
        """Create shape-dependent variables now (centres, projection); call this before
        collecting ``trainable_variables``/``variables`` (inside ``strategy.scope()``)."""
        for loss in self.losses:
            loss.build(num_classes=num_classes, embedding_dim=embedding_dim, teacher_dim=teacher_dim)
        return self

    def __call__(self, labels, cosine, embeddings, teacher_embeddings=None, norms=None,
                 sample_weight=None) -> dict:
        if "distill" in self.terms and teacher_embeddings is None:
            raise ValueError("the distill term needs teacher_embeddings")
        self.build(num_classes=cosine.shape[-1], embedding_dim=embeddings.shape[-1],
                   teacher_dim=None if teacher_embeddings is None else teacher_embeddings.shape[-1])
        if self.needs_norms and norms is None:
            norms = tf.norm(tf.cast(embeddings, tf.float32), axis=1)
        out = {"classification": _mean(self.classification(labels, cosine, norms), sample_weight)}
        total = out["classification"]
        for name, (loss, weight) in self.terms.items():
            if name == "distill":
                values = loss(embeddings, teacher_embeddings)
            else:
                values = loss(labels, embeddings)
            out[name] = _mean(values, sample_weight)
            total = total + weight * out[name]
        return {"total": total, **out}


def build_objective(classification: dict, distill: dict | None = None, triplet: dict | None = None,
                    center: dict | None = None, num_classes=None, embedding_dim=None,
                    teacher_dim=None) -> Objective:
    """Each term: ``{"name": ..., "weight": ..., **params}`` (default names: ``l2``,
    ``triplet_batch_hard``, ``center``); weight 0 or None leaves the term out. Dimensions, if given, build the
    shape-dependent variables at once (see :meth:`Objective.build`)."""
    main = _build(classification, "classification")
    terms = {}
    for name, config in (("distill", distill), ("triplet", triplet), ("center", center)):
        if not config:
            continue
        config = dict(config)
        weight = config.pop("weight", None)
        if not weight:
            continue
        terms[name] = (_build(config, *TERMS[name]), float(weight))
    return Objective(main, terms).build(num_classes, embedding_dim, teacher_dim)
