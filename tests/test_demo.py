"""`distill demo --quick` end to end on the bundled faces (the full demo is the README's)."""
from __future__ import annotations

import json

from conftest import run_console


def test_demo_quick_prints_table(tmp_path):
    result = run_console("demo", "--quick", "--workdir", tmp_path / "demo", "--no-progress",
                         timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for name in ("teacher", "student", "student+distill", "accuracy", "params"):
        assert name in out
    rows = json.loads((tmp_path / "demo" / "results.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["teacher", "student", "student+distill"]
    assert all(0.0 <= r["_accuracy"] <= 1.0 for r in rows)
    assert rows[1]["params"] == rows[2]["params"]            # identical students
    assert ("distillation helped" in out) or ("did NOT beat" in out)
    store = tmp_path / "demo" / "store"
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["num_samples"] == 300 and manifest["flip"] is True and manifest["complete"]


def test_train_cli_bad_recipe_key_one_line(tmp_path, cli):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {train: x}\nmodel: {dropuot: 0.4}\nstages: [{epochs: 1}]\n")
    code, out, err = cli("train", "--recipe", recipe)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1
    assert str(recipe) in lines[0] and "did you mean 'model.dropout'" in lines[0]
