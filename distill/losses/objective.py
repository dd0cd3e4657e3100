"""The training objective: a weighted sum of registered loss terms, each a batch mean.

``total = Σ weight · term``. A term is a loss from the registry plus a weight; its *kind*
says what it reads: ``classification`` (labels and classifier cosines), ``metric`` (labels and
embeddings) or ``distillation`` (student and stored teacher embeddings). Unlabelled samples
(label −1) count only in distillation terms; classification and metric terms average over the
labelled samples of the batch. A distillation loss with ``needs_labels`` (pair-based, e.g.
``ekd``) is called ``loss(student, teacher, labels)`` with −1 for unlabelled samples. A
classification term that reads the embeddings and the teacher instead of the shared
classifier's cosines (``adadistill``) scores its own centres (``loss.centre_cosines``) on the
same Partial FC columns. Adding a term is a registration in :mod:`distill.losses` plus a
recipe line (``terms: {rkd: {name: rkd_distance, weight: 1}}``), not a change here.
"""
from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from distill import losses
from distill.losses import NAMED_TERMS
from distill.losses.partial_fc import SAMPLE_RATE, check_sample_rate


@dataclass
class Term:
    """One weighted term of the objective."""

    label: str          # its name in logs and history: classification, distill, rkd, ...
    loss: object
    weight: float
    sample_rate: float = 1.0   # classification: Partial FC's share of classes (losses.partial_fc)
    reads: tuple = ()          # what it reads besides labels (losses.KIND_READS); () = its kind's

    def __post_init__(self):
        self.reads = tuple(self.reads) or losses.KIND_READS[self.kind]

    @property
    def kind(self) -> str:
        return self.loss.kind

    @property
    def own_centres(self) -> bool:
        """A classification term that scores its own class centres, not the classifier's."""
        return self.kind == "classification" and "cosine" not in self.reads


def build_term(label: str, config: dict, kind: str | None = None, default_name: str | None = None) -> Term:
    """A :class:`Term` from ``{"name": ..., "weight": ..., **params}``; ``kind`` (if given) is
    the kind the loss must have."""
    config = dict(config)
    weight = float(config.pop("weight", 1.0) or 0.0)
    name = config.pop("name", default_name)
    if name is None:
        raise ValueError(f"term '{label}' needs a loss 'name'")
    loss_spec = losses.spec(name)
    if kind is not None and loss_spec.kind != kind:
        valid = ", ".join(n for n, s in losses.available().items() if s.kind == kind)
        raise ValueError(f"loss '{name}' is a {loss_spec.kind} loss, not {kind}; valid: {valid}")
    rate = 1.0
    if loss_spec.kind == "classification" and SAMPLE_RATE in config:
        rate = check_sample_rate(config.pop(SAMPLE_RATE))
    return Term(label, losses.get(name, **config), weight, rate, loss_spec.reads)


def _mean(values, weight) -> tf.Tensor:
    values = tf.cast(values, tf.float32)
    return tf.reduce_sum(values * weight) / tf.maximum(tf.reduce_sum(weight), 1e-12)


class Objective:
    """Callable ``(labels, cosine, embeddings, teacher_embeddings, norms)`` →
    ``{"total", <term label>: unweighted batch mean, ...}`` scalar float32 tensors.

    ``cosine`` may be None when no classification term is active."""

    def __init__(self, terms: list[Term]):
        self.terms = [term for term in terms if term.weight > 0]
        labels = [term.label for term in self.terms]
        if len(set(labels)) != len(labels):
            raise ValueError(f"two objective terms share a name: {labels}")
        self.needs_norms = any(getattr(t.loss, "needs_norms", False) for t in self.terms)
        rates = {t.sample_rate for t in self.terms if t.kind == "classification"}
        if len(rates) > 1:
            raise ValueError("classification terms share one sampled classifier, but their "
                             f"sample_rate differs: {sorted(rates)}")
        self.sample_rate = rates.pop() if rates else 1.0
        self.num_classes = None

    def has(self, kind: str) -> bool:
        return any(term.kind == kind for term in self.terms)

    @property
    def needs_classifier(self) -> bool:
        """Whether a term reads the shared classifier's cosines."""
        return any("cosine" in term.reads for term in self.terms)

    @property
    def needs_teacher(self) -> bool:
        return any("teacher" in term.reads for term in self.terms)

    @property
    def losses(self) -> list:
        return [term.loss for term in self.terms]

    @property
    def weights(self) -> dict:
        return {term.label: term.weight for term in self.terms}

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
        self.num_classes = num_classes or self.num_classes
        for loss in self.losses:
            loss.build(num_classes=num_classes, embedding_dim=embedding_dim, teacher_dim=teacher_dim)
        return self

    def term_values(self, labels, cosine, embeddings, teacher_embeddings=None, norms=None,
                    sample_weight=None, class_labels=None, classes=None) -> dict:
        """``{label: unweighted batch mean}`` of every term (means weighted by ``sample_weight``
        if given; label-based terms only over labelled samples). ``class_labels``: the labels
        as columns of ``cosine`` when it holds sampled classes only (Partial FC), ``classes``
        those classes."""
        if self.needs_teacher and teacher_embeddings is None:
            raise ValueError("a distillation term needs teacher_embeddings")
        if self.needs_classifier and self.has("classification") and cosine is None:
            raise ValueError("a classification term needs the classifier's cosines")
        labels = tf.reshape(tf.cast(labels, tf.int64), [-1])
        everyone = (tf.ones_like(labels, tf.float32) if sample_weight is None
                    else tf.reshape(tf.cast(sample_weight, tf.float32), [-1]))
        labelled = everyone * tf.cast(labels >= 0, tf.float32)
        safe_labels = tf.maximum(labels, 0)
        columns = safe_labels if class_labels is None else tf.maximum(tf.reshape(class_labels, [-1]), 0)
        self.build(num_classes=None if cosine is None or class_labels is not None else cosine.shape[-1],
                   embedding_dim=embeddings.shape[-1],
                   teacher_dim=None if teacher_embeddings is None else teacher_embeddings.shape[-1])
        if self.needs_norms and norms is None:
            norms = tf.norm(tf.cast(embeddings, tf.float32), axis=1)
        out = {}
        for term in self.terms:
            if term.kind == "classification":
                scores = (term.loss.centre_cosines(labels, embeddings, teacher_embeddings, classes)
                          if term.own_centres else cosine)
                out[term.label] = _mean(term.loss(columns, scores, norms), labelled)
            elif term.kind == "metric":
                out[term.label] = _mean(term.loss(safe_labels, embeddings), labelled)
            else:
                extra = (labels,) if getattr(term.loss, "needs_labels", False) else ()
                out[term.label] = _mean(term.loss(embeddings, teacher_embeddings, *extra), everyone)
        return out

    def total(self, values: dict) -> tf.Tensor:
        total = tf.constant(0.0, tf.float32)
        for term in self.terms:
            total = total + term.weight * values[term.label]
        return total

    def __call__(self, labels, cosine, embeddings, teacher_embeddings=None, norms=None,
                 sample_weight=None, class_labels=None, classes=None) -> dict:
        values = self.term_values(labels, cosine, embeddings, teacher_embeddings, norms, sample_weight,
                                  class_labels, classes)
        return {"total": self.total(values), **values}


def build_objective(classification: dict | None, distill: dict | None = None, triplet: dict | None = None,
                    center: dict | None = None, terms: dict | None = None, num_classes=None,
                    embedding_dim=None, teacher_dim=None) -> Objective:
    """Terms from recipe sections: each ``{"name": ..., "weight": ..., **params}``.

    ``classification`` defaults to weight 1; ``distill``/``triplet``/``center`` (default names
    ``l2``, ``triplet_batch_hard``, ``center``) and every entry of ``terms`` (label → config,
    any kind) to weight 1 too, but a missing or zero weight leaves a term out. Dimensions,
    if given, build the shape-dependent variables at once (see :meth:`Objective.build`)."""
    built = []
    sections = {"classification": classification, "distill": distill, "triplet": triplet, "center": center}
    for label, config in sections.items():
        if not config:
            continue
        if label != "classification" and not config.get("weight"):
            continue
        built.append(build_term(label, config, *NAMED_TERMS[label]))
    for label, config in (terms or {}).items():
        if label in NAMED_TERMS:
            raise ValueError(f"terms.{label}: '{label}' is a recipe section of its own; set it there")
        built.append(build_term(label, config))
    return Objective(built).build(num_classes, embedding_dim, teacher_dim)
