"""The run folder's layout and the typed history schema (distill.train.run_dir)."""
from __future__ import annotations

import json

import pytest

from distill.train.run_dir import HistoryError, RunDir

RECORD = {"epoch": 1, "stage": 0, "lr": 0.1, "loss": {"total": 2.0}, "steps": 3, "seconds": 1.5,
          "params": 1000, "eval": {"lfw": {"accuracy": 0.9, "accuracy_std": 0.01, "threshold": 1.1}}}


def test_layout_names_every_file(tmp_path):
    run = RunDir(tmp_path / "r")
    assert (run.recipe, run.history, run.state, run.final_model, run.best_model) == (
        tmp_path / "r" / "recipe.yaml", tmp_path / "r" / "history.json",
        tmp_path / "r" / "checkpoint" / "state.json", tmp_path / "r" / "model.keras", tmp_path / "r" / "best.keras")
    assert not run.is_run() and run.read_history() == []


@pytest.mark.parametrize("change, message", [
    ({"epoch": None}, "epoch record lacks 'epoch'"),
    ({"steps": "3"}, "'steps' is str"),
    ({"eval": {"lfw": {"accuracy_std": 0.1}}}, "eval.lfw has no numeric accuracy"),
    ({"gradients": [1]}, "'gradients' is list"),
])
def test_history_entries_follow_the_schema(tmp_path, change, message):
    bad = {k: v for k, v in {**RECORD, **change}.items() if v is not None}
    run = RunDir(tmp_path)
    run.history.write_text(json.dumps([RECORD, bad]))
    with pytest.raises(HistoryError, match=f"history.json: entry 1: {message}"):
        run.read_history()
    run.history.write_text(json.dumps([RECORD]))
    assert run.read_history() == [RECORD]
