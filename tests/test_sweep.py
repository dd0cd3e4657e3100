"""Sweep scripts: their logic with a stand-in `distill train` (fast), then the tiny
profile for real on ORL people (a store embedded from a tiny saved Keras model)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import copy_people
from distill.report.plots import curve_data, plot_runs
from distill.report.runs import compare_runs

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "recipes" / "sweeps"
BASELINE = ROOT / "recipes" / "student_mobilenet_baseline.yaml"

# A stand-in for the distill executable: `train` writes a finished run directory (recipe.yaml
# resolved from --recipe/--set as the trainer does, history, state, model.keras) and logs its
# arguments; every other command is the real CLI.
FAKE = '''#!{python}
import json, os, sys
from pathlib import Path
if sys.argv[1] != "train":
    from distill.cli import main
    sys.argv[0] = "distill"
    main()
args = sys.argv[2:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
from distill.train.recipe import load_recipe, save_recipe
if "--resume" in args:
    run = Path(args[args.index("--resume") + 1])
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    total = load_recipe(run / "recipe.yaml").total_epochs
    state["epochs_done"] = total
    (run / "checkpoint" / "state.json").write_text(json.dumps(state))
    (run / "model.keras").write_text("model")
    sys.exit(0)
sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
if os.environ.get("FAKE_FAIL") in sets:
    sys.exit("error: simulated failure")
recipe = load_recipe(args[args.index("--recipe") + 1], sets)
run = Path(args[args.index("--run-dir") + 1])
run.mkdir(parents=True)
save_recipe(recipe, run / "recipe.yaml")
accuracy = 0.9 + recipe.model.dropout / 10 + recipe.distill["weight"] / 10000
history = [{{"epoch": e + 1, "stage": 0, "lr": 0.1, "loss": {{"total": 1.0}}, "steps": 1,
            "seconds": 0.1, "eval": {{"lfw": {{"accuracy": accuracy}}}}}}
           for e in range(recipe.total_epochs)]
(run / "history.json").write_text(json.dumps(history))
(run / "checkpoint").mkdir()
(run / "checkpoint" / "state.json").write_text(json.dumps({{"epochs_done": len(history)}}))
(run / "model.keras").write_text("model")
'''


def _env(**extra) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


@pytest.fixture()
def fake_distill(tmp_path):
    path = tmp_path / "bin" / "distill"
    path.parent.mkdir()
    path.write_text(FAKE.format(python=sys.executable))
    path.chmod(0o755)
    return path


def _calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_distill_grid_runs_skips_resumes_and_reports(tmp_path, fake_distill):
    out, log = tmp_path / "grid", tmp_path / "calls.log"
    env = _env(DISTILL=fake_distill, FAKE_LOG=log, FAKE_FAIL="distill.weight=128",
               TRAIN_ARGS="--no-progress")
    script = [str(SWEEPS / "distill_grid.sh"), "DATA", "STORE", str(out)]
    # one run already complete, one interrupted after its first epoch
    for name, sets in (("do0_dw7_sgd", ["model.dropout=0", "distill.weight=7"]),
                       ("do0.4_dw0_adamw", ["model.dropout=0.4", "optimizer.name=adamw"])):
        subprocess.run([str(fake_distill), "train", "--recipe", str(BASELINE), "--run-dir",
                        str(out / name), *[a for s in sets for a in ("--set", s)]],
                       check=True, env=_env(FAKE_LOG=tmp_path / "setup.log"))
    state = out / "do0.4_dw0_adamw" / "checkpoint" / "state.json"
    state.write_text(json.dumps({"epochs_done": 1}))
    (out / "do0.4_dw0_adamw" / "model.keras").unlink()

    result = subprocess.run(script, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1, result.stderr          # the weight-128 runs failed
    assert "failed runs:" in result.stderr and "do0_dw128_sgd" in result.stderr
    calls = _calls(log)
    assert ["--resume", str(out / "do0.4_dw0_adamw"), "--no-progress"] in calls
    fresh = {c[c.index("--run-dir") + 1]: c for c in calls if "--run-dir" in c}
    names = {f"do{d}_dw{w}_{o}" for d in ("0", "0.4") for w in (0, 7, 64, 128) for o in ("sgd", "adamw")}
    assert set(fresh) == {str(out / n) for n in names - {"do0_dw7_sgd", "do0.4_dw0_adamw"}}
    assert fresh[str(out / "do0.4_dw64_sgd")] == [
        "--recipe", str(BASELINE), "--set", "data.train=DATA", "--set", "data.store=STORE",
        "--set", "model.dropout=0.4", "--set", "distill.weight=64", "--set", "optimizer.name=sgd",
        "--run-dir", str(out / "do0.4_dw64_sgd"), "--no-progress"]
    table = result.stdout[result.stdout.index(f"$ distill report {out}/*"):].splitlines()[1:]
    assert len(table) == 2 + 12                             # header, rule, 16 − 4 failed
    rows = compare_runs(sorted(p for p in out.iterdir()))
    for row in rows:                                        # settings from the recipes match the names
        assert row["run"] == f"do{row['model.dropout']}_dw{row['distill.weight']}_{row['optimizer.name']}"
        assert row["status"] == "complete"

    log.unlink()
    result = subprocess.run(script, capture_output=True, text=True, env=_env(
        DISTILL=fake_distill, FAKE_LOG=log), timeout=120)
    assert result.returncode == 0, result.stderr
    assert sorted(c[-1] for c in _calls(log)) == sorted(
        str(out / f"do{d}_dw128_{o}") for d in ("0", "0.4") for o in ("sgd", "adamw"))
    assert result.stdout.count("complete, skipped") == 12


def test_teacher_grid_one_run_per_store(tmp_path, fake_distill):
    stores = []
    for name in ("casia_r34", "casia_r100"):
        store = tmp_path / "stores" / name
        store.mkdir(parents=True)
        (store / "manifest.json").write_text(json.dumps({"teacher": {"source": f"/m/{name}/best.keras"}}))
        stores.append(store)
    out, log = tmp_path / "teachers", tmp_path / "calls.log"
    result = subprocess.run([str(SWEEPS / "teacher_grid.sh"), "DATA", str(out), *map(str, stores)],
                            capture_output=True, text=True, timeout=120,
                            env=_env(DISTILL=fake_distill, FAKE_LOG=log))
    assert result.returncode == 0, result.stderr
    calls = _calls(log)
    assert [c[c.index("--run-dir") + 1] for c in calls] == [str(out / "teacher_casia_r34"),
                                                            str(out / "teacher_casia_r100")]
    assert all({"distill.weight=64", "model.dropout=0.4"} <= set(c) for c in calls)
    rows = compare_runs([out / "teacher_casia_r34", out / "teacher_casia_r100"])
    assert [r["data.store"] for r in rows] == ["casia_r34/best.keras", "casia_r100/best.keras"]
    assert "casia_r100/best.keras" in result.stdout


def test_sweep_usage_errors(tmp_path):
    result = subprocess.run([str(SWEEPS / "distill_grid.sh"), "DATA"], capture_output=True, text=True)
    assert result.returncode == 2 and "usage:" in result.stderr
    result = subprocess.run([str(SWEEPS / "distill_grid.sh"), "D", "S", str(tmp_path)],
                            capture_output=True, text=True, env=_env(PROFILE="huge"))
    assert result.returncode == 2 and "PROFILE must be full or tiny" in result.stderr


def test_tiny_profile_on_orl_then_report_and_plot(tmp_path, tiny_teacher, cli):
    """The real thing: `distill embed`, 2 × `distill train`, `distill report` (≈1 min)."""
    from distill.evals.bins import make_bin

    train = copy_people(tmp_path / "train", [f"s{i}" for i in range(1, 6)])
    heldout = make_bin(copy_people(tmp_path / "heldout_images", ["s37", "s38", "s39", "s40"]),
                       tmp_path / "heldout.bin", n_pairs=100, seed=0)
    store = tmp_path / "store"
    code, _, err = cli("embed", "--teacher", tiny_teacher, "--data", train, "--out", store,
                       "--flip", "--no-progress", "--batch-size", "50")
    assert code == 0, err
    out = tmp_path / "grid"
    exe = Path(sys.executable).parent / "distill"
    result = subprocess.run([str(SWEEPS / "distill_grid.sh"), str(train), str(store), str(out)],
                            capture_output=True, text=True, timeout=600,
                            env=_env(PROFILE="tiny", DISTILL=exe, EVAL=heldout,
                                     TRAIN_ARGS="--no-progress"))
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    printed = result.stdout[result.stdout.index("$ distill report"):]
    print(printed)
    runs = sorted(out.iterdir())
    assert [r.name for r in runs] == ["do0_dw0_sgd", "do0_dw64_sgd"]
    rows = compare_runs(runs)
    assert [r["distill.weight"] for r in rows] == ["0", "64"]
    assert all(r["status"] == "complete" and r["epochs"] == "1/1" and r["heldout_epoch"] == 1
               and 0.0 <= r["heldout"] <= 1.0 for r in rows)
    assert "optimizer.name" not in rows[0] and "data.store" not in rows[0]   # not swept here
    for row in rows:
        assert f"| {row['run']} " in printed and f"{row['heldout']:.4f}" in printed

    data = curve_data(runs, ["heldout", "loss", "loss.classification"])
    for run, curves in zip(runs, data["runs"]):
        history = json.loads((run / "history.json").read_text())
        assert curves["curves"]["heldout"]["y"] == [r["eval"]["heldout"]["accuracy"] for r in history]
        assert curves["curves"]["loss"] == {"x": [1], "y": [history[0]["loss"]["total"]]}
    assert data["boundaries"] == [{"x": 0.5, "label": "arcface s=16, lr 0.1 | arcface s=16 + l2×64, lr 0.1"}]
    if importlib.util.find_spec("matplotlib"):
        png = plot_runs(runs, ["heldout", "loss"], tmp_path / "curves.png")
        assert png.read_bytes()[:4] == b"\x89PNG"
