"""Whole-recipe checks, run before any work: registered names, numeric ranges, files.

:func:`check_recipe` runs when a recipe is loaded (nothing heavy is imported: registries
read builder signatures from source). :func:`check_files` runs when training is about to
start (``distill train`` and ``distill train --check``), not when a saved recipe is read
back for a report. Every error is one line naming the key path. :class:`RecipeError` lives
here, below :mod:`distill.train.recipe` (which raises it too and re-exports it), so the two
modules depend one way: recipe → checks. ``recipe`` arguments are
:class:`distill.train.recipe.Recipe` objects.
"""
from __future__ import annotations

from pathlib import Path

from distill.train.stages import AUTO, AUTO_TARGET, SECTIONS


class RecipeError(ValueError):
    """An invalid recipe; the message names the file, the key and what is wrong."""


#: (key path, test, what it must be) for numbers outside the term sections
RANGES = [
    ("model.embedding_size", lambda v: v >= 1, "≥ 1"),
    ("model.dropout", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("model.bn_momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("model.bn_epsilon", lambda v: v > 0, "> 0"),
    ("model.sub_centers", lambda v: v >= 1, "≥ 1"),
    ("optimizer.momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("optimizer.weight_decay", lambda v: v >= 0, "≥ 0"),
    ("optimizer.classifier_wd_mult", lambda v: v >= 0, "≥ 0"),
    ("data.min_class_images", lambda v: v >= 1, "≥ 1"),
    ("train.batch_size", lambda v: v >= 1, "≥ 1"),
    ("train.eval_batch_size", lambda v: v >= 1, "≥ 1"),
    ("train.eval_every_epochs", lambda v: v >= 1, "≥ 1"),
    ("train.eval_every_steps", lambda v: v >= 0, "≥ 0"),
    ("data.images_per_identity", lambda v: v >= 2, "≥ 2"),
    ("train.auto_weight_steps", lambda v: v >= 1, "≥ 1"),
    ("schedule.warmup_steps", lambda v: v >= 0, "≥ 0"),
    ("schedule.factor", lambda v: v > 0, "> 0"),
]
#: loss parameters that must be positive / non-negative wherever a term sets them
POSITIVE_PARAMS = ("scale", "temperature", "m1", "top_k")
NON_NEGATIVE_PARAMS = ("margin", "m2", "m3", "label_smoothing", "alpha", "positive_weight", "negative_weight")


def _value(recipe, path: str):
    node = recipe
    for part in path.split("."):
        node = getattr(node, part)
    return node


def _names(recipe, where: str) -> None:
    from distill.models.backbones import BACKBONES
    from distill.models.heads import OUTPUT_LAYERS
    from distill.train.optim import OPTIMIZERS
    from distill.train.pipeline import AUGMENTATIONS, SAMPLERS
    from distill.train.schedules import SCHEDULES
    from distill.train.step import STRATEGIES

    named = [(OPTIMIZERS, "optimizer.name"), (SCHEDULES, "schedule.name"), (BACKBONES, "model.backbone"),
             (OUTPUT_LAYERS, "model.output_layer"), (AUGMENTATIONS, "data.augment"),
             (STRATEGIES, "train.distribute")]
    for registry, path in named:
        name = _value(recipe, path)
        if name not in registry:
            raise RecipeError(f"{where}: {registry.unknown(name, path)}")
    if recipe.data.sampler != "auto" and recipe.data.sampler not in SAMPLERS:
        raise RecipeError(f"{where}: {SAMPLERS.unknown(recipe.data.sampler, 'data.sampler')} (or auto)")
    if recipe.model.alpha is not None and "alpha" not in BACKBONES.parameters(recipe.model.backbone):
        raise RecipeError(f"{where}: model.alpha: backbone '{recipe.model.backbone}' has no width "
                          "multiplier; remove model.alpha")
    if recipe.model.activation not in ("relu", "prelu"):
        raise RecipeError(f"{where}: model.activation must be relu or prelu, got {recipe.model.activation!r}")


def _ranges(recipe, where: str) -> None:
    for path, test, must in RANGES:
        value = _value(recipe, path)
        if not test(value):
            raise RecipeError(f"{where}: {path} must be {must}, got {value!r}")
    from distill.train.stages import resolve_stages, sampler_of

    for stage in resolve_stages(recipe):
        if not stage.lr > 0:
            raise RecipeError(f"{where}: stages.{stage.index}.lr must be > 0, got {stage.lr}")
        for label, config in stage.term_configs().items():
            for key, value in config.items():
                bad = ((key in POSITIVE_PARAMS and isinstance(value, (int, float)) and value <= 0)
                       or (key in NON_NEGATIVE_PARAMS and isinstance(value, (int, float)) and value < 0))
                if bad:
                    raise RecipeError(f"{where}: {section_of(label)}.{key} = {value} in stage {stage.index} is out "
                                      f"of range (must be {'> 0' if key in POSITIVE_PARAMS else '≥ 0'})")
        k = recipe.data.images_per_identity
        if sampler_of(recipe, stage) == "identity_balanced" and recipe.train.batch_size % k:
            raise RecipeError(f"{where}: train.batch_size {recipe.train.batch_size} must be a multiple of "
                              f"data.images_per_identity {k} (identity_balanced batches, stage {stage.index})")


def section_of(label: str) -> str:
    """The recipe key of a term: ``loss``, ``distill``/``triplet``/``center`` or ``terms.<label>``."""
    return "loss" if label == "classification" else label if label in SECTIONS else f"terms.{label}"


def _auto_weights(recipe, where: str) -> None:
    """``weight: auto`` needs a classification term to balance against where it is measured
    (the first stage with an auto term)."""
    from distill.train.stages import resolve_stages

    stage = next((s for s in resolve_stages(recipe) if s.auto_targets()), None)
    if stage is not None and not stage.weight("classification") > 0:
        label = next(iter(stage.auto_targets()))
        raise RecipeError(f"{where}: {section_of(label)}.weight: auto balances the term's gradient "
                          f"against classification's, but stage {stage.index} has no classification "
                          "term (loss.weight 0): nothing to balance against; give the weight a number")


def auto_lines(recipe) -> list[str]:
    """One line per ``weight: auto`` term, for ``distill train --check``."""
    from distill.train.stages import resolve_stages

    stage = next((s for s in resolve_stages(recipe) if s.auto_targets()), None)
    return [f"{label}: weight auto (balances ‖∇e {label}‖ to {target:g} × ‖∇e classification‖ over "
            f"the first {recipe.train.auto_weight_steps} steps of stage {stage.index})"
            for label, target in (stage.auto_targets() if stage else {}).items()]


def _best_by(recipe, where: str) -> None:
    sets = [Path(p).stem for p in recipe.data.eval]
    if recipe.train.best_by is not None and recipe.train.best_by not in sets:
        from distill.registry import did_you_mean

        raise RecipeError(f"{where}: train.best_by '{recipe.train.best_by}' is not an evaluation set"
                          f"{did_you_mean(recipe.train.best_by, sets)}; data.eval gives: "
                          f"{', '.join(sets) or '(none)'}")


def check_recipe(recipe, where: str = "recipe"):
    """Names, ranges and ``best_by``; see the module docstring."""
    _names(recipe, where)
    _ranges(recipe, where)
    _best_by(recipe, where)
    _auto_weights(recipe, where)
    return recipe


def check_files(recipe, where: str = "recipe") -> None:
    """The files a run will read exist: training data, the store (when a stage distils),
    the evaluation sets."""
    from distill.train.stages import resolve_stages

    train = Path(recipe.data.train)
    if not train.exists():
        raise RecipeError(f"{where}: data.train: {train} does not exist")
    if any(stage.uses_teacher for stage in resolve_stages(recipe)):
        if not recipe.data.store:
            raise RecipeError(f"{where}: a stage has a distillation term but data.store is not set "
                              "(distillation terms and adadistill read the teacher's embeddings from a "
                              "store made by `distill embed`)")
        if not (Path(recipe.data.store) / "manifest.json").is_file():
            raise RecipeError(f"{where}: data.store: {recipe.data.store} is not an embedding store "
                              "(no manifest.json; make it with `distill embed`)")
    for index, path in enumerate(recipe.data.eval):
        if not Path(path).is_file():
            raise RecipeError(f"{where}: data.eval.{index}: {path} does not exist")


def preflight(recipe, where: str = "recipe") -> list[str]:
    """What ``distill train --check`` prints: the checks passed, the model's parameter count and
    each stage's objective (terms and weights), without reading data or teacher tables."""
    import yaml

    from distill.models import build_embedding_model
    from distill.train.stages import resolve_stages

    check_recipe(recipe, where)
    check_files(recipe, where)
    cfg = recipe.model
    width = {} if cfg.alpha is None else {"alpha": cfg.alpha}
    model = build_embedding_model(cfg.backbone, embedding_size=cfg.embedding_size,
                                  output_layer=cfg.output_layer, dropout=cfg.dropout,
                                  bn_momentum=cfg.bn_momentum, bn_epsilon=cfg.bn_epsilon,
                                  activation=cfg.activation, **width)
    lines = [yaml.safe_dump(recipe.to_dict(), sort_keys=False).rstrip(), "",
             f"model: {cfg.backbone} → {cfg.output_layer} {cfg.embedding_size}-d, "
             f"{model.count_params():,} parameters"]
    stages = resolve_stages(recipe)
    if any(stage.uses_teacher for stage in stages):
        from distill.store.manifest import Manifest
        from distill.train.stages import projection_notes

        lines += projection_notes(stages, cfg.embedding_size, Manifest.load(recipe.data.store).embedding_dim)
    for stage in stages:
        terms = []
        for label, config in stage.term_configs().items():
            weight = stage.weight(label)
            if weight > 0:
                params = ", ".join(f"{k}={v}" for k, v in config.items()
                                   if k not in ("weight", "name", AUTO_TARGET))
                shown = AUTO if label in stage.auto_targets() else f"{weight:g}"
                terms.append(f"{shown} × {label} ({config.get('name', 'l2' if label == 'distill' else label)}"
                             f"{': ' + params if params else ''})")
        lines.append(f"stage {stage.index}: epochs {stage.first_epoch + 1}–{stage.end_epoch}, lr {stage.lr:g}: "
                     + " + ".join(terms))
    lines.extend(auto_lines(recipe))
    lines.append(f"{where}: OK")
    return lines
