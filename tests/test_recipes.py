"""Every recipe under recipes/ loads, resolves and builds (model, losses, optimizer), so
none can rot. ``embed_*.yaml`` files are embed configs, checked with ``load_embed_config``."""
from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from distill.train.recipe import load_recipe
from distill.train.stages import resolve_stages

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))
TRAIN_RECIPES = [p for p in RECIPES if not p.name.startswith("embed_")]
EMBED_RECIPES = [p for p in RECIPES if p.name.startswith("embed_")]
TINY = ["model.embedding_size=8"]        # everything else as the recipe says
_BUILT: dict = {}                         # model config → output shape (recipes share backbones)


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT / "recipes"))


def test_recipes_found():
    assert len(TRAIN_RECIPES) >= 8 and EMBED_RECIPES
    assert (ROOT / "recipes" / "orl" / "student_tiny.yaml") in TRAIN_RECIPES


@functools.lru_cache(maxsize=1)
def _trainer_backbones() -> frozenset:
    """Backbones registered by the imports `distill train` makes, in a fresh interpreter
    (other tests may have imported extra backbone modules into this one)."""
    code = ("import json, distill.models, distill.train.trainer; "
            "from distill.models.backbones import BACKBONES; print(json.dumps(sorted(BACKBONES)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return frozenset(json.loads(out.stdout.strip().splitlines()[-1]))


def _output_shape(cfg) -> tuple:
    """Build the embedding model as the trainer does; its output shape."""
    from distill.models import build_embedding_model

    key = json.dumps(cfg.__dict__, sort_keys=True)
    if key not in _BUILT:
        width = {} if cfg.alpha is None else {"alpha": cfg.alpha}
        model = build_embedding_model(
            cfg.backbone, embedding_size=cfg.embedding_size, output_layer=cfg.output_layer,
            dropout=cfg.dropout, bn_momentum=cfg.bn_momentum, bn_epsilon=cfg.bn_epsilon,
            activation=cfg.activation, **width)
        _BUILT[key] = tuple(model.output_shape)
    return _BUILT[key]


@pytest.mark.parametrize("path", TRAIN_RECIPES, ids=_name)
def test_training_recipe_resolves_and_builds(path):
    from distill.train.optim import OPTIMIZERS, build_optimizer
    from distill.train.pipeline import AUGMENTATIONS
    from distill.train.schedules import SCHEDULES

    recipe = load_recipe(path, TINY)
    assert path.read_text().startswith("#"), f"{_name(path)}: document the recipe at its top"
    stages = resolve_stages(recipe)
    assert [s.epochs for s in stages] == [s.epochs for s in recipe.stages]
    assert stages[-1].end_epoch == recipe.total_epochs
    assert recipe.optimizer.name in OPTIMIZERS and recipe.schedule.name in SCHEDULES
    assert recipe.data.augment in AUGMENTATIONS
    sets = [Path(p).stem for p in recipe.data.eval]
    assert recipe.train.best_by in (None, *sets), f"train.best_by {recipe.train.best_by!r} not in {sets}"
    build_optimizer(recipe.optimizer, stages[0].lr)
    _check_objectives(stages, distill_from_store=bool(recipe.data.store))
    assert recipe.model.backbone in _trainer_backbones(), f"{_name(path)}: backbone not registered"
    assert _output_shape(recipe.model) == (None, 8)


def _check_objectives(stages, distill_from_store: bool):
    """Build every stage's objective and run it once on random tensors (finite values)."""
    import tensorflow as tf

    from distill.losses.objective import build_objective

    rng = np.random.default_rng(0)
    labels = tf.constant([0, 1, 2, 3, 0, 1, 2, 3])
    embeddings = tf.constant(rng.normal(size=(8, 8)), tf.float32)
    cosine = tf.math.l2_normalize(embeddings, axis=1) @ tf.math.l2_normalize(
        tf.constant(rng.normal(size=(8, 4)), tf.float32), axis=0)
    for stage in stages:
        spec = stage.objective_spec()
        if spec["distill"] or stage.uses_teacher:
            assert distill_from_store, f"stage {stage.index} distills but data.store is not set"
        # teacher-centre terms (adadistill) need the student's dimension; others get a wider one
        own_centres = any(s.kind == "classification" and "cosine" not in s.reads for s in stage.specs_on())
        dim = 8 if own_centres else 16
        teacher = tf.math.l2_normalize(tf.constant(rng.normal(size=(8, dim)), tf.float32), axis=1)
        objective = build_objective(**spec, num_classes=4, embedding_dim=8, teacher_dim=dim)
        terms = objective(labels, cosine, embeddings, teacher_embeddings=teacher)
        assert all(np.isfinite(float(v)) for v in terms.values()), (stage.index, terms)


@pytest.mark.parametrize("path", EMBED_RECIPES, ids=_name)
def test_embed_recipe_loads(path):
    from distill.store.config import load_embed_config

    config = load_embed_config(path)
    assert {"teacher", "data", "out"} <= set(config)
    assert path.read_text().startswith("#"), f"{_name(path)}: document the recipe at its top"


REFERENCE_ROWS = {  # recipe → (dropout, distill weight) of the reference experiments
    "student_mobilenet_baseline.yaml": (0.0, 0.0),
    "student_mobilenet_distill_r34.yaml": (0.4, 64.0),
    "student_mobilenet_distill_r100.yaml": (0.4, 64.0),
    "student_mobilenet_distill_r100_w7.yaml": (0.4, 7.0),
    "student_mobilenet_distill_r100_w128.yaml": (0.4, 128.0),
}


@pytest.mark.parametrize("name", list(REFERENCE_ROWS))
def test_casia_student_recipes_reproduce_the_reference_setting(name):
    """512-d, output layer E, batch 400, ArcFace m 0.5 with scale 16 → 32 → 64 over 5 + 5 + 10
    epochs at lr 0.1, then 10 at 0.01 and 40 at 0.001; wd 5e-4 at lr 0.1 (SGDW, scaled with
    lr) = 5e-3 in the MXNet convention; the header names the published row."""
    recipe = load_recipe(ROOT / "recipes" / name)
    stages = resolve_stages(recipe)
    assert (recipe.model.backbone, recipe.model.alpha, recipe.model.embedding_size,
            recipe.model.output_layer, recipe.train.batch_size) == ("mobilenet", 1.0, 512, "E", 400)
    assert [(s.epochs, s.lr, s.loss["scale"], s.loss["margin"]) for s in stages] == [
        (5, 0.1, 16.0, 0.5), (5, 0.1, 32.0, 0.5), (10, 0.1, 64.0, 0.5), (10, 0.01, 64.0, 0.5),
        (40, 0.001, 64.0, 0.5)]
    assert recipe.optimizer.weight_decay == pytest.approx(5e-3) and recipe.optimizer.momentum == 0.9
    assert (recipe.model.dropout, stages[0].weight("distill")) == REFERENCE_ROWS[name]
    header = (ROOT / "recipes" / name).read_text().split("\n\n")[0]
    assert "0.9938" in header or "0.9838" in header
