"""Recipe loading: extends, --set overrides, and refusal of bad keys/types before any work."""
from __future__ import annotations

import pytest

from distill.train.recipe import RecipeError, load_recipe
from distill.train.stages import resolve_stages

BASE = """
name: base
data: {train: faces}
loss: {name: arcface, scale: 64, margin: 0.5}
distill: {name: l2, weight: 64}
optimizer: {weight_decay: 5e-4}
stages:
  - {epochs: 5, lr: 0.1, scale: 16}
  - {epochs: 5, lr: 0.01, scale: 32}
  - {epochs: 40, lr: 0.001, scale: 64}
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_extends_and_set_overrides(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "child.yaml", "extends: base.yaml\nname: child\nmodel: {dropout: 0.4}\n")
    recipe = load_recipe(child, ["stages.0.epochs=3", "model.alpha=0.5", "distill.weight=7"])
    assert recipe.name == "child" and recipe.model.dropout == 0.4 and recipe.model.alpha == 0.5
    assert recipe.optimizer.weight_decay == pytest.approx(5e-4)
    assert [s.epochs for s in recipe.stages] == [3, 5, 40]
    stages = resolve_stages(recipe)
    assert [s.loss["scale"] for s in stages] == [16, 32, 64]
    assert [s.lr for s in stages] == [0.1, 0.01, 0.001]
    assert all(s.distill["weight"] == 7 for s in stages)
    assert stages[2].first_epoch == 8


@pytest.mark.parametrize("override, message", [
    ("model.dropuot=0.4", "unknown key 'model.dropuot'; did you mean 'model.dropout'"),
    ("stages.1.lrr=0.1", "unknown key 'stages.1.lrr'; did you mean 'stages.1.lr'"),
    ("model.embedding_size=big", "model.embedding_size must be an integer"),
    ("stages.1.epochs=0", "stages.1.epochs is required"),
    ("train.batch_size=1.5", "train.batch_size must be an integer"),
])
def test_bad_recipes_refused_naming_key(tmp_path, override, message):
    path = write(tmp_path, "r.yaml", BASE)
    with pytest.raises(RecipeError) as info:
        load_recipe(path, [override])
    assert message in str(info.value) and str(path) in str(info.value)


def test_stage_without_epochs_refused(tmp_path):
    path = write(tmp_path, "r.yaml", "data: {train: x}\nstages:\n  - {lr: 0.1}\n")
    with pytest.raises(RecipeError, match="stages.0.epochs is required"):
        load_recipe(path)


def test_missing_file_and_extends_loop(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "none.yaml")
    write(tmp_path, "a.yaml", "extends: b.yaml\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\n")
    with pytest.raises(RecipeError, match="loops"):
        load_recipe(tmp_path / "a.yaml")
