"""Resolve recipe stages: each stage inherits every unset setting from the one before it
(and the first from the recipe's top-level ``loss``/``distill``/``triplet``/``center``)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResolvedStage:
    index: int
    first_epoch: int          # global epoch index (0-based) where the stage starts
    epochs: int
    lr: float
    loss: dict                # {name, **params}
    distill: dict             # {name, weight, **params}
    triplet: dict
    center: dict
    bottleneck_only: bool

    @property
    def end_epoch(self) -> int:
        return self.first_epoch + self.epochs

    def objective_spec(self) -> dict:
        """Arguments for :func:`distill.losses.objective.build_objective`."""
        return {
            "classification": dict(self.loss),
            "distill": dict(self.distill) if self.distill.get("weight") else None,
            "triplet": dict(self.triplet) if self.triplet.get("weight") else None,
            "center": dict(self.center) if self.center.get("weight") else None,
        }


DEFAULT_LR = 0.1


def resolve_stages(recipe) -> list[ResolvedStage]:
    resolved = []
    lr, loss = DEFAULT_LR, dict(recipe.loss)
    distill, triplet, center = dict(recipe.distill), dict(recipe.triplet), dict(recipe.center)
    bottleneck_only, first = False, 0
    for index, stage in enumerate(recipe.stages):
        lr = stage.lr if stage.lr is not None else lr
        if stage.loss is not None:
            loss = dict(stage.loss) if "name" in stage.loss else {**loss, **stage.loss}
        if stage.scale is not None:
            loss = {**loss, "scale": stage.scale}
        if stage.distill_weight is not None:
            distill = {**distill, "weight": stage.distill_weight}
        if stage.triplet_weight is not None:
            triplet = {**triplet, "weight": stage.triplet_weight}
        if stage.center_weight is not None:
            center = {**center, "weight": stage.center_weight}
        if stage.bottleneck_only is not None:
            bottleneck_only = stage.bottleneck_only
        resolved.append(ResolvedStage(index, first, stage.epochs, float(lr), loss, distill,
                                      triplet, center, bool(bottleneck_only)))
        first += stage.epochs
    return resolved


def stage_of_epoch(stages: list[ResolvedStage], epoch: int) -> ResolvedStage:
    for stage in stages:
        if stage.first_epoch <= epoch < stage.end_epoch:
            return stage
    raise IndexError(f"epoch {epoch} is past the last stage")
