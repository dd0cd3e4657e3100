"""Resolve recipe stages: each stage inherits every unset setting from the one before it
(and the first from the recipe's top-level ``loss``/``distill``/``triplet``/``center``/``terms``).

A distillation term may have ``weight: auto`` (only in its own section: a stage inherits it, a
stage's number overrides it, 0 turns it off); the trainer measures it when the first stage with
it is built (:mod:`distill.train.auto_weight`)."""
from __future__ import annotations

from dataclasses import dataclass, field

SECTIONS = ("distill", "triplet", "center")
#: the loss of a section that names none
DEFAULT_LOSSES = {"distill": "l2", "triplet": "triplet_batch_hard", "center": "center"}
#: a distillation term's weight set from the gradient balance at the start (distill.train.auto_weight)
AUTO = "auto"
#: the term key of the gradient ratio ``auto`` aims at (default 1.0)
AUTO_TARGET = "auto_target"


@dataclass(frozen=True)
class ResolvedStage:
    index: int
    first_epoch: int          # global epoch index (0-based) where the stage starts
    epochs: int
    lr: float
    loss: dict                # classification term {name, weight (default 1), **params}
    distill: dict             # {name, weight, **params}
    triplet: dict
    center: dict
    bottleneck_only: bool
    terms: dict = field(default_factory=dict)   # further terms: name → {name, weight, **params}

    @property
    def end_epoch(self) -> int:
        return self.first_epoch + self.epochs

    def term_configs(self) -> dict:
        """Every term's config by name (weights included)."""
        return {"classification": self.loss, "distill": self.distill, "triplet": self.triplet,
                "center": self.center, **self.terms}

    def weight(self, label: str) -> float:
        """The weight of term ``label`` in this stage (0 when off). The classification term
        and ``terms`` entries default to 1, the ``distill``/``triplet``/``center`` sections to 0."""
        default = 0.0 if label in SECTIONS else 1.0
        weight = self.term_configs().get(label, {}).get("weight", default)
        return 1.0 if weight == AUTO else float(weight or 0.0)   # auto: on, per unit until measured

    def auto_targets(self) -> dict:
        """``{label: target gradient ratio}`` of the terms whose weight is ``auto`` here."""
        return {label: float(config.get(AUTO_TARGET, 1.0))
                for label, config in self.term_configs().items() if config.get("weight") == AUTO}

    def specs_on(self) -> list:
        """The :class:`~distill.losses.LossSpec` of each term with a weight > 0."""
        from distill import losses

        return [losses.spec(config.get("name", DEFAULT_LOSSES.get(label)))
                for label, config in self.term_configs().items() if self.weight(label) > 0]

    def kinds_on(self) -> set:
        """Kinds of the terms with a weight > 0 (classification, metric, distillation)."""
        return {spec.kind for spec in self.specs_on()}

    def reads_on(self) -> set:
        """What the terms with a weight > 0 read besides labels (cosine, embeddings, teacher)."""
        return {read for spec in self.specs_on() for read in spec.reads}

    @property
    def uses_teacher(self) -> bool:
        return "teacher" in self.reads_on()

    @property
    def uses_classifier(self) -> bool:
        return "cosine" in self.reads_on()

    def objective_spec(self) -> dict:
        """Arguments for :func:`distill.losses.objective.build_objective`."""
        def spec(label):   # auto terms at unit weight: the trainer sets the measured weight
            config = {k: v for k, v in self.term_configs()[label].items() if k != AUTO_TARGET}
            return {**config, "weight": self.weight(label)} if "weight" in config else config

        return {
            "classification": spec("classification"),
            **{name: spec(name) if self.weight(name) else None for name in SECTIONS},
            "terms": {k: spec(k) for k in self.terms if self.weight(k)},
        }


DEFAULT_LR = 0.1


def resolve_stages(recipe) -> list[ResolvedStage]:
    resolved = []
    lr, bottleneck_only, first = DEFAULT_LR, False, 0
    current = {"classification": dict(recipe.loss), "distill": dict(recipe.distill),
               "triplet": dict(recipe.triplet), "center": dict(recipe.center),
               **{k: dict(v) for k, v in recipe.terms.items()}}
    for index, stage in enumerate(recipe.stages):
        lr = stage.lr if stage.lr is not None else lr
        loss = current["classification"]
        if stage.loss is not None:
            keep = {"weight": loss["weight"]} if "weight" in loss else {}
            loss = {**keep, **stage.loss} if "name" in stage.loss else {**loss, **stage.loss}
        if stage.scale is not None:
            loss = {**loss, "scale": stage.scale}
        current["classification"] = loss
        shortcuts = {"distill": stage.distill_weight, "triplet": stage.triplet_weight,
                     "center": stage.center_weight}
        weights = {**{k: v for k, v in shortcuts.items() if v is not None}, **(stage.weights or {})}
        for label, weight in weights.items():
            current[label] = {**current[label], "weight": weight}
        if stage.bottleneck_only is not None:
            bottleneck_only = stage.bottleneck_only
        resolved.append(ResolvedStage(
            index, first, stage.epochs, float(lr), current["classification"], current["distill"],
            current["triplet"], current["center"], bool(bottleneck_only),
            {k: current[k] for k in recipe.terms}))
        first += stage.epochs
    return resolved


def sampler_of(recipe, stage: ResolvedStage) -> str:
    """``data.sampler`` in ``stage``: ``auto`` is identity_balanced where a triplet term is on
    (batch-hard mining needs positives), shuffle elsewhere."""
    if recipe.data.sampler != "auto":
        return recipe.data.sampler
    return "identity_balanced" if stage.weight("triplet") else "shuffle"


def projection_notes(stages: list[ResolvedStage], student_dim: int, teacher_dim: int) -> list[str]:
    """One line per distillation term that trains a learned projection (dims differ, or
    ``projection: always``), for the trainer's log and ``distill train --check``."""
    from distill import losses
    from distill.losses.distillation import projection_note

    notes = {}
    for stage in stages:
        for label, config in stage.term_configs().items():
            name = config.get("name", DEFAULT_LOSSES.get(label))
            if stage.weight(label) > 0 and label not in notes and "projection" in losses.spec(name).defaults:
                notes[label] = projection_note(label, config, student_dim, teacher_dim)
    return [note for note in notes.values() if note]


def stage_of_epoch(stages: list[ResolvedStage], epoch: int) -> ResolvedStage:
    for stage in stages:
        if stage.first_epoch <= epoch < stage.end_epoch:
            return stage
    raise IndexError(f"epoch {epoch} is past the last stage")
