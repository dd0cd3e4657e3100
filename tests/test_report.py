"""`distill report` / `plot` / `run-status` on synthetic run directories (no training)."""
from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import pytest

from distill.report.plots import curve_data, plot_runs
from distill.report.runs import RunError, compare_runs, format_report, load_run, summarize_runs
from distill.train.recipe import load_recipe, save_recipe

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "recipes" / "orl" / "student_tiny.yaml"


def make_run(run_dir: Path, overrides=(), accuracies=None, epochs_done=None, losses=None,
             recipe=TINY, final_model=True) -> Path:
    """A run directory as `distill train` leaves it: recipe.yaml, history.json, state.json."""
    resolved = load_recipe(recipe, list(overrides))
    run_dir.mkdir(parents=True)
    save_recipe(resolved, run_dir / "recipe.yaml")
    accuracies = accuracies or {}
    n = max([len(v) for v in accuracies.values()] + [len(losses or [])] + [0])
    history = []
    for i in range(n):
        total = (losses or [2.0 / (i + 1)] * n)[i]
        history.append({
            "epoch": i + 1, "stage": 0, "lr": 0.1, "steps": 3, "seconds": 1.0,
            "loss": {"total": total, "classification": total * 0.75, "distill": total * 0.25 / 64},
            "eval": {name: {"accuracy": values[i], "accuracy_std": 0.01, "threshold": 1.2}
                     for name, values in accuracies.items() if i < len(values)},
        })
    (run_dir / "history.json").write_text(json.dumps(history))
    (run_dir / "checkpoint").mkdir()
    done = n if epochs_done is None else epochs_done
    (run_dir / "checkpoint" / "state.json").write_text(json.dumps({"epochs_done": done, "history": history}))
    if final_model and done >= resolved.total_epochs:
        (run_dir / "model.keras").write_bytes(b"stand-in")
    return run_dir


EPOCHS3 = ["stages.0.epochs=3"]


@pytest.fixture()
def three_runs(tmp_path):
    # Directory names deliberately say nothing (or lie): settings must come from recipe.yaml.
    a = make_run(tmp_path / "x1", EPOCHS3 + ["model.dropout=0.4", "distill.weight=64"],
                 {"lfw": [0.90, 0.95, 0.93], "agedb_30": [0.80, 0.82, 0.85]})
    b = make_run(tmp_path / "do0_dw0_sgd_WRONG", EPOCHS3 + ["optimizer.name=adamw"],
                 {"lfw": [0.91, 0.97, 0.97], "agedb_30": [0.70, 0.71, 0.72]})
    c = make_run(tmp_path / "x3", EPOCHS3 + ["distill.weight=7"],
                 {"lfw": [0.85], "agedb_30": [0.60]}, epochs_done=1)
    return [a, b, c]


def test_rows_show_differing_recipe_settings_best_accuracy_epoch_status(three_runs):
    rows = compare_runs(three_runs)
    assert list(rows[0]) == ["run", "model.dropout", "optimizer.name", "distill.weight",
                             "lfw", "lfw_epoch", "agedb_30", "agedb_30_epoch", "epochs", "status"]
    a, b, c = rows
    assert (a["model.dropout"], a["distill.weight"], a["optimizer.name"]) == ("0.4", "64", "sgd")
    assert (b["model.dropout"], b["distill.weight"], b["optimizer.name"]) == ("0", "0", "adamw")
    assert (c["model.dropout"], c["distill.weight"], c["optimizer.name"]) == ("0", "7", "sgd")
    assert (a["lfw"], a["lfw_epoch"], a["agedb_30"], a["agedb_30_epoch"]) == (0.95, 2, 0.85, 3)
    assert (b["lfw"], b["lfw_epoch"]) == (0.97, 2)        # a tie keeps the first epoch
    assert (a["epochs"], a["status"]) == ("3/3", "complete")
    assert (c["epochs"], c["status"]) == ("1/3", "incomplete")


def test_sort_by_set_descending_and_unknown_set(three_runs):
    assert [r["run"] for r in compare_runs(three_runs, sort_by="agedb_30")] == ["x1", "do0_dw0_sgd_WRONG", "x3"]
    assert [r["run"] for r in compare_runs(three_runs, sort_by="lfw")] == ["do0_dw0_sgd_WRONG", "x1", "x3"]
    with pytest.raises(RunError, match="cfp_fp.*available: lfw, agedb_30"):
        compare_runs(three_runs, sort_by="cfp_fp")


def test_store_column_names_the_teacher(tmp_path):
    store = tmp_path / "stores" / "casia_r100"
    store.mkdir(parents=True)
    (store / "manifest.json").write_text(json.dumps(
        {"teacher": {"kind": "keras", "source": "/data/runs/teacher_r100/best.keras"}}))
    a = make_run(tmp_path / "a", [f"data.store={store}", "distill.weight=64"], {"lfw": [0.9]})
    b = make_run(tmp_path / "b", ["data.store=stores/missing", "distill.weight=64"], {"lfw": [0.8]})
    rows = compare_runs([a, b])
    assert [r["data.store"] for r in rows] == ["teacher_r100/best.keras", "stores/missing"]
    assert "distill.weight" not in rows[0]                 # the same in both runs


def test_resumed_history_with_repeated_epochs_keeps_the_last(tmp_path):
    run = make_run(tmp_path / "r", EPOCHS3, {"lfw": [0.5, 0.6, 0.7]})
    history = json.loads((run / "history.json").read_text())
    redo = json.loads(json.dumps(history[1]))
    redo["eval"]["lfw"]["accuracy"] = 0.99
    (run / "history.json").write_text(json.dumps(history[:2] + [redo] + history[2:]))
    loaded = load_run(run)
    assert [r["epoch"] for r in loaded.history] == [1, 2, 3]
    assert loaded.best("lfw") == (0.99, 2)


def test_formats_markdown_csv(three_runs):
    rows = compare_runs(three_runs)
    markdown = format_report(rows, "markdown").splitlines()
    assert markdown[0].startswith("| run ") and set(markdown[1]) <= {"|", "-"}
    assert "| 0.9500 " in markdown[2] and "| -" not in markdown[2]
    parsed = list(csv.DictReader(io.StringIO(format_report(rows, "csv"))))
    assert parsed[1]["optimizer.name"] == "adamw" and float(parsed[1]["lfw"]) == 0.97
    with pytest.raises(ValueError, match="unknown report format 'html'"):
        format_report(rows, "html")


def test_report_cli(three_runs, tmp_path, cli):
    code, out, _ = cli("report", *three_runs, "--sort-by", "lfw")
    assert code == 0 and out.splitlines()[2].startswith("| do0_dw0_sgd_WRONG ")
    code, out, _ = cli("report", *three_runs, "--csv", "--out", tmp_path / "r" / "report.csv")
    assert code == 0
    assert len(list(csv.DictReader((tmp_path / "r" / "report.csv").open()))) == 3
    code, _, err = cli("report", three_runs[0], tmp_path)
    assert code == 2 and f"{tmp_path}: no recipe.yaml" in err and "Traceback" not in err
    (three_runs[0] / "history.json").write_text("[{")
    code, _, err = cli("report", three_runs[0])
    assert code == 2 and "history.json: not valid JSON" in err


def _set_history(run_dir: Path, seconds, tars) -> None:
    """Give a made run per-epoch training seconds and a TAR@1e-3 on every evaluation."""
    history = json.loads((run_dir / "history.json").read_text())
    for record, sec, tar in zip(history, seconds, tars):
        record["seconds"] = sec
        for metrics in record["eval"].values():
            metrics["tar_at_far_1e-3"] = tar
    (run_dir / "history.json").write_text(json.dumps(history))
    (run_dir / "checkpoint" / "state.json").write_text(json.dumps({"epochs_done": len(history), "history": history}))


def test_final_merges_seeds_with_numpy_mean_std_and_times(tmp_path):
    import numpy as np

    seeds = [make_run(tmp_path / f"w7_s{s}", EPOCHS3 + ["distill.weight=7", f"seed={s}"],
                      {"lfw": [0.5, 0.6, acc]}) for s, acc in zip(range(3), (0.86, 0.87, 0.84))]
    other = make_run(tmp_path / "w64", EPOCHS3 + ["distill.weight=64"], {"lfw": [0.5, 0.5, 0.51]})
    for run, secs, tar in zip(seeds + [other], ([70, 80, 90], [75, 75, 75], [60, 60, 60], [10, 20, 30]),
                              (0.2, 0.3, 0.1, 0.0)):
        _set_history(run, secs, [0.0, 0.0, tar])
    teacher = {"model": "teacher.params", "set": "lfw", "accuracy": 0.987, "accuracy_std": 0.0149,
               "tar_at_far_1e-3": 0.98}
    rows = summarize_runs(seeds + [other], [teacher])
    assert [r["run"] for r in rows] == ["teacher.params", "w7_s0 (+2)", "w64"]
    top, merged, single = rows
    finals = [0.86, 0.87, 0.84]                      # the last epoch counts, not the best
    assert merged["lfw"] == f"{np.mean(finals):.4f} ± {np.std(finals):.4f}"
    assert merged["lfw TAR@1e-3"] == f"{np.mean([0.2, 0.3, 0.1]):.4f}"
    assert (merged["seeds"], merged["distill.weight"], merged["status"]) == (3, "7", "complete")
    assert merged["train min"] == f"{np.mean([240, 225, 180]) / 60:.1f}"
    assert merged["s/epoch"] == f"{np.mean([70, 80, 90, 75, 75, 75, 60, 60, 60]):.1f}"
    assert (single["lfw"], single["s/epoch"], single["seeds"]) == ("0.5100 ± 0.0100", "20.0", 1)
    assert (top["lfw"], top["lfw TAR@1e-3"], top["s/epoch"]) == ("0.9870 ± 0.0149", "0.9800", "-")


def test_final_merges_seeds_of_an_auto_weight_recipe(tmp_path):
    """Each seed of `weight: auto` measures its own weight: still one row, the weights as a range."""
    runs = []
    for seed, weight in zip(range(3), (8.41, 8.378, 8.38)):
        run = make_run(tmp_path / f"auto_s{seed}", EPOCHS3 + ["distill.weight=auto", f"seed={seed}"],
                       {"lfw": [0.5, 0.6, 0.8 + seed / 100]})
        history = json.loads((run / "history.json").read_text())
        history[0]["auto_weights"] = {"distill": {"weight": weight, "ratio": 0.119}}
        (run / "history.json").write_text(json.dumps(history))
        runs.append(run)
    hand = make_run(tmp_path / "w7", EPOCHS3 + ["distill.weight=7"], {"lfw": [0.5, 0.6, 0.9]})
    rows = summarize_runs(runs + [hand])
    assert [(r["run"], r["distill.weight"], r["seeds"]) for r in rows] == [
        ("auto_s0 (+2)", "auto 8.38–8.41", 3), ("w7", "7", 1)]
    one = summarize_runs(runs[:1] + [hand])
    assert one[0]["distill.weight"] == "auto 8.41"


def test_final_report_cli_reads_eval_json(tmp_path, cli):
    run = make_run(tmp_path / "only", EPOCHS3, {"lfw": [0.7, 0.8, 0.9]})
    evals = tmp_path / "t.json"
    evals.write_text(json.dumps([{"model": "T", "set": "lfw", "accuracy": 0.99}]))
    code, out, _ = cli("report", run, "--final", "--evals", evals)
    lines = out.splitlines()
    assert code == 0 and "s/epoch" in lines[0] and lines[2].startswith("| T ") and lines[3].startswith("| only ")
    assert "| 0.9000 ± 0.0100 " in lines[3] and "| 1.0 " in lines[3]


def test_run_status_cli(tmp_path, cli):
    done = make_run(tmp_path / "done", [], {"lfw": [0.9]})
    part = make_run(tmp_path / "part", EPOCHS3, {"lfw": [0.9]}, epochs_done=1)
    code, out, _ = cli("run-status", done)
    assert code == 0 and out.split("\t")[0] == "complete"
    code, out, _ = cli("run-status", done, part, tmp_path / "never")
    assert code == 1
    assert [line.split("\t")[0] for line in out.splitlines()] == ["complete", "resume", "new"]
    (done / "model.keras").unlink()                       # final save missing → resume
    assert cli("run-status", done)[1].startswith("resume")


# ---------------------------------------------------------------------------- plots
STAGED = ["stages.0.epochs=2", "stages.0.lr=0.1", "stages.0.loss.name=softmax",
          "stages.1.epochs=2", "stages.1.lr=0.01", "stages.1.loss.name=arcface", "stages.1.scale=64",
          "stages.2.epochs=2", "stages.2.lr=0.001", "stages.2.triplet_weight=1", "data.images_per_identity=3"]


def test_curve_data_matches_history_with_named_stage_boundaries(tmp_path):
    a = make_run(tmp_path / "a", STAGED, {"lfw": [0.5, 0.6, 0.7, 0.8, 0.85, 0.9]},
                 losses=[6, 5, 4, 3, 2, 1])
    b = make_run(tmp_path / "b", STAGED + ["distill.weight=64"], {"lfw": [0.55, 0.65, 0.75]},
                 losses=[5, 4, 3], epochs_done=3)
    history = json.loads((a / "history.json").read_text())
    stale = dict(history[2], loss={"total": 99.0})              # epoch 3 redone after a resume
    (a / "history.json").write_text(json.dumps(history[:2] + [stale] + history[2:]))
    data = curve_data([a, b], ["lfw", "loss", "loss.distill"])
    ra, rb = data["runs"]
    kept = json.loads((b / "history.json").read_text())
    assert ra["curves"]["lfw"] == {"x": [1, 2, 3, 4, 5, 6], "y": [0.5, 0.6, 0.7, 0.8, 0.85, 0.9]}
    assert ra["curves"]["loss"]["y"] == [6, 5, 4, 3, 2, 1]
    assert rb["curves"]["loss.distill"] == {"x": [1, 2, 3],
                                            "y": [r["loss"]["distill"] for r in kept]}
    assert [s["first_epoch"] for s in ra["stages"]] == [1, 3, 5]
    labels = [s["label"] for s in ra["stages"]]
    assert labels == ["softmax, lr 0.1", "arcface s=64, lr 0.01",
                      "arcface s=64 + triplet_batch_hard×1, lr 0.001"]
    assert rb["stages"][0]["label"] == "softmax + l2×64, lr 0.1"
    assert [bd["x"] for bd in data["boundaries"]] == [0.5, 2.5, 4.5]
    assert data["boundaries"][0]["label"] == "softmax, lr 0.1 | softmax + l2×64, lr 0.1"
    with pytest.raises(RunError, match="'cfp_fp' is in no run's history; available: .*lfw"):
        curve_data([a], ["cfp_fp"])


def test_plot_writes_png_and_cli(tmp_path, cli):
    a = make_run(tmp_path / "a", STAGED, {"lfw": [0.5, 0.6, 0.7, 0.8, 0.85, 0.9]})
    out = plot_runs([a], ["lfw", "loss"], tmp_path / "plots" / "curves.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, stdout, _ = cli("plot", a, "--metrics", "lfw,loss.classification", "--out", tmp_path / "c.png")
    assert code == 0 and (tmp_path / "c.png").stat().st_size > 1000


def test_plot_without_matplotlib_says_how_to_install(tmp_path, monkeypatch):
    a = make_run(tmp_path / "a", [], {"lfw": [0.5]})
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(RunError, match=r"needs matplotlib.*distill\[plot\]"):
        plot_runs([a], ["lfw"], tmp_path / "c.png")
