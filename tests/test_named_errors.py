"""Issue 20, errors that name their file or key: a .bin too small for its folds, a YAML key
given twice, a teacher that returns NaN or zero, and the learned projection announced."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import error_lines

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = """
import numpy as np

def embed(batch):
    out = np.ones((len(batch), 8), np.float32)
    out[:, 0] = np.arange(len(batch))
    if len(batch) > 2:          # not the 2-image probe made when the teacher is loaded
        out[{row}] = {value}
    return out
"""


def plugin(folder: Path, name: str, row: int = 0, value: str = "out[0]") -> str:
    """A plugin teacher ``name:embed`` (8-d) that gives ``value`` to row ``row`` of each batch."""
    (folder / f"{name}.py").write_text(textwrap.dedent(PLUGIN.format(row=row, value=value)))
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return f"{name}:embed"


@pytest.fixture(scope="module")
def store8(tmp_path_factory, faces_small):
    """A store of 8-d embeddings of 50 faces, made by a sound plugin teacher."""
    from distill.store.writer import embed

    folder = tmp_path_factory.mktemp("store8")
    embed(plugin(folder, "sound_plugin"), faces_small, folder / "store", batch_size=16, progress=False)
    return folder / "store"


def test_bin_with_fewer_pairs_than_folds_names_the_bin(tmp_path, cli, faces_small, tiny_teacher):
    """Of several --bin, the one with 3 pairs (10 folds) is named in the one-line error."""
    from distill.evals import bins as B

    good = B.make_bin(faces_small, tmp_path / "good.bin", n_pairs=20)
    face = (faces_small / "s1" / "1.png").read_bytes()
    small = B.save_bin([face] * 6, [True, False, True], tmp_path / "small.bin")
    code, out, err = cli("eval", "-m", tiny_teacher, "-b", good, "-b", small, "--no-flip")
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"error: {small}: 3 pairs") and "10 folds" in lines[0], lines[0]


@pytest.mark.parametrize("text, key, lines", [
    ("data: {train: a}\nseed: 1\ndata: {train: b}\nstages: [{epochs: 1}]\n", "data", (1, 3)),
    ("data: {train: a}\nstages:\n  - epochs: 1\n    lr: 0.1\n    lr: 0.2\n", "stages.0.lr", (4, 5)),
    ("data:\n  train: a\n  store: s\n  train: b\nstages: [{epochs: 1}]\n", "data.train", (2, 4)),
])
def test_duplicate_recipe_key_is_refused_naming_file_key_and_lines(tmp_path, cli, text, key, lines):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    code, out, err = cli("train", "--recipe", path, "--check")
    found = error_lines(err)
    assert code == 2 and len(found) == 1, err
    assert found[0].startswith(f"error: {path}: key '{key}' is given twice (lines {lines[0]} and {lines[1]})"), found


def test_invalid_yaml_says_what_and_where_in_one_line(tmp_path, cli):
    path = tmp_path / "r.yaml"
    path.write_text("data: {train: a}\nmodel: [\n")
    code, out, err = cli("train", "--recipe", path, "--check")
    found = error_lines(err)
    assert code == 2 and len(found) == 1, err
    assert found[0] == (f"error: {path}: not valid YAML (expected the node content, but found '<stream end>' "
                        "at line 3, column 1)"), found


def test_duplicate_key_in_an_extends_base_or_embed_recipe_names_that_file(tmp_path):
    from distill.store.config import load_embed_config
    from distill.store.manifest import StoreError
    from distill.train.recipe import RecipeError, load_recipe

    base = tmp_path / "base.yaml"
    base.write_text("model: {embedding_size: 64}\nmodel: {embedding_size: 32}\n")
    top = tmp_path / "top.yaml"
    top.write_text("extends: base.yaml\ndata: {train: a}\nstages: [{epochs: 1}]\n")
    with pytest.raises(RecipeError, match=rf"^{base.resolve()}: key 'model' is given twice \(lines 1 and 2\)"):
        load_recipe(top)
    with pytest.raises(RecipeError, match=r"^--set data=.*: key 'data.train' is given twice \(lines 1 and 1\)"):
        load_recipe(None, ["data={train: a, train: b}", "stages=[{epochs: 1}]"])
    with pytest.raises(RecipeError, match=r"^--set model=\[: not valid YAML \("):
        load_recipe(None, ["model=[", "stages=[{epochs: 1}]"])
    embed_recipe = tmp_path / "embed.yaml"
    embed_recipe.write_text("batch_size: 64\nflip: true\nbatch_size: 32\n")
    with pytest.raises(StoreError, match=rf"^{embed_recipe}: key 'batch_size' is given twice \(lines 1 and 3\)"):
        load_embed_config(embed_recipe)


def test_recipe_loading_still_imports_no_tensorflow(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("data: {train: a}\nstages: [{epochs: 1}]\n")
    code = ("import sys; from distill.train.recipe import load_recipe; "
            f"load_recipe({str(path)!r}); assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name, value, what", [("nan_plugin", "np.nan", "NaN or inf"),
                                               ("zero_plugin", "0.0", "all-zero")])
def test_bad_teacher_output_names_the_teacher_and_the_first_bad_sample(tmp_path, cli, faces_small,
                                                                       name, value, what):
    """Row 3 of every batch is bad: the error names the teacher and sample_id 3 with its path."""
    from distill.data.sources import open_source

    spec = plugin(tmp_path, name, row=3, value=value)
    code, out, err = cli("embed", "--teacher", spec, "--data", faces_small, "--out", tmp_path / "s",
                         "--batch-size", 8, "--no-progress")
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1, err
    path = open_source(faces_small).describe(3)
    assert lines[0].startswith(f"error: teacher {spec}: {what} embedding for {path} (sample_id 3"), lines[0]


def test_check_announces_the_learned_projection(tmp_path, cli, store8, faces_small):
    recipe = {"data": {"train": str(faces_small), "store": str(store8)},
              "model": {"backbone": "mobilenet", "alpha": 0.25, "embedding_size": 16},
              "distill": {"name": "l2", "weight": 1.0, "bias": True}, "stages": [{"epochs": 1}]}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    code, out, err = cli("train", "--recipe", path, "--check")
    assert code == 0, err
    assert ("distill: teacher 8-d ≠ student 16-d: a learned linear projection 16→8 is trained with the "
            "student (projection: auto, bias on)") in out, out


def test_trainer_logs_the_learned_projection_at_start(tmp_path, caplog, store8, faces_small):
    from distill.data.sources import open_source
    from distill.train.recipe import recipe_from_dict
    from distill.train.trainer import Trainer

    recipe = recipe_from_dict({"data": {"train": str(faces_small), "store": str(store8)},
                               "model": {"embedding_size": 8},
                               "distill": {"name": "cosine", "weight": 1.0, "projection": "always"},
                               "stages": [{"epochs": 1}]})
    trainer = Trainer(recipe, tmp_path / "run", progress=False)
    trainer.source = open_source(faces_small)
    with caplog.at_level("INFO"):
        trainer._load_targets()
    assert ("distill: teacher 8-d = student 8-d: a learned linear projection 8→8 is trained with the "
            "student (projection: always, bias off)") in caplog.messages, caplog.messages
