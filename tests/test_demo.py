"""`distill demo --quick` end to end on the bundled faces (the full demo is the README's)."""
from __future__ import annotations

import json

import pytest

from conftest import run_console


def test_demo_quick_prints_table(tmp_path):
    result = run_console("demo", "--quick", "--teacher", "trained", "--workdir", tmp_path / "demo",
                         "--no-progress", timeout=900)
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
    assert "teacher: MobileNet trained by the demo" in out
    history = json.loads((tmp_path / "demo" / "runs" / "student_distill" / "history.json").read_text())
    auto = history[0]["auto_weights"]["distill"]
    assert auto["weight"] > 0 and rows[2]["distill weight"] == f"auto {auto['weight']:.3g}"


def test_demo_quick_with_the_real_dlib_teacher(tmp_path):
    """The default when the [dlib] extra is installed (it is part of [dev]): no teacher training,
    dlib's embeddings stored centred, the teacher row is dlib's own accuracy."""
    result = run_console("demo", "--quick", "--workdir", tmp_path / "demo", "--no-progress", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((tmp_path / "demo" / "results.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["teacher (dlib)", "student", "student+distill"]
    assert rows[0]["_accuracy"] > 0.9                     # dlib on held-out ORL people (0.98 at 600 pairs)
    assert "teacher: dlib's ResNet face model" in result.stdout
    assert not (tmp_path / "demo" / "runs" / "teacher").exists()
    manifest = json.loads((tmp_path / "demo" / "store" / "manifest.json").read_text())
    assert manifest["teacher"]["source"] == "teachers.dlib_resnet:embed"
    assert manifest["conditioning"]["mode"] == "center"


def test_demo_teacher_choice(monkeypatch):
    from distill import demo
    from teachers import dlib_resnet

    assert demo.resolve_teacher("trained") == "trained"
    with pytest.raises(ValueError, match="--teacher must be auto, dlib or trained"):
        demo.resolve_teacher("dlbi")

    def missing():
        raise dlib_resnet.DlibUnavailable("the dlib teacher needs the [dlib] extra: pip install 'distill[dlib]'")

    monkeypatch.setattr(dlib_resnet, "models", missing)
    assert demo.resolve_teacher("auto") == "trained"
    with pytest.raises(ValueError, match=r"pip install 'distill\[dlib\]'"):
        demo.resolve_teacher("dlib")


def test_train_cli_bad_recipe_key_one_line(tmp_path, cli):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {train: x}\nmodel: {dropuot: 0.4}\nstages: [{epochs: 1}]\n")
    code, out, err = cli("train", "--recipe", recipe)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1
    assert str(recipe) in lines[0] and "did you mean 'model.dropout'" in lines[0]
