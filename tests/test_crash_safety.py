"""Issue 14, training: a run killed (real ``kill -9``) at chosen moments, or left with damaged
files, resumes to the uninterrupted result or stops with one line; bad images are named."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml

from conftest import error_lines, kill_when_paused, start_paused

EPOCHS = 2


def recipe(train_dir, **data) -> dict:
    return {
        "name": "crash", "seed": 5,
        "data": {"train": str(train_dir), "augment": "flip", **data},
        "model": {"backbone": "mobilenet", "alpha": 0.25, "embedding_size": 32, "dropout": 0.2},
        "loss": {"name": "arcface", "scale": 16.0, "margin": 0.3},
        "train": {"batch_size": 10, "gradient_stats": False},
        "stages": [{"epochs": EPOCHS, "lr": 0.05}],
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory, faces_small):
    """The uninterrupted run (alone where a test needs no killed run, e.g. under pytest-xdist)."""
    from distill.train.trainer import train

    return train(recipe(faces_small), tmp_path_factory.mktemp("reference") / "run", progress=False)


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory, faces_small):
    """Two runs killed with SIGKILL (between the checkpoint's arrays and its state in the last
    epoch; while model.keras is written), started first so that they overlap the reference."""
    root = tmp_path_factory.mktemp("crash")
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe(faces_small)))
    points = {"checkpoint": f"checkpoint:variables-written#{EPOCHS}", "model": "write:model.keras"}
    started = {name: start_paused(["train", "--recipe", path, "--run-dir", root / name, "--no-progress"],
                                  point, root / f"{name}.paused") for name, point in points.items()}
    reference = request.getfixturevalue("reference")   # trains while the killed runs start
    for name, process in started.items():
        kill_when_paused(process, root / f"{name}.paused")
    return {"reference": reference, **{name: root / name for name in points}}


def final_weights(run_dir):
    import keras

    return keras.models.load_model(run_dir / "model.keras", compile=False).get_weights()


def assert_same_model(run_dir, reference):
    for a, b in zip(final_weights(run_dir), final_weights(reference.run_dir)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_kill_between_arrays_and_state_resumes_to_the_uninterrupted_run(runs):
    """Fault 1: the state still names epoch 1's arrays; the resume redoes epoch 2 from them."""
    from distill.train.trainer import train

    run = runs["checkpoint"]
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["epochs_done"] == EPOCHS - 1 and (run / "checkpoint" / state["variables"]).is_file()
    assert (run / "checkpoint" / f"variables-{EPOCHS:05d}.npz").is_file()   # written, never named
    resumed = train(None, run, resume=True, progress=False)
    assert resumed.history[-1]["loss"] == pytest.approx(runs["reference"].history[-1]["loss"], rel=1e-4)
    assert_same_model(run, runs["reference"])
    assert sorted(p.name for p in (run / "checkpoint").iterdir()) == ["state.json", f"variables-{EPOCHS:05d}.npz"]


def test_kill_while_writing_the_model_leaves_no_partial_file_nor_temporaries(runs):
    """Faults 2 and 7: no model.keras in place after the kill; the resume writes the checkpoint's
    model (not "all epochs done") and removes the interrupted write's temporary file."""
    from distill.train.trainer import train

    run = runs["model"]
    assert not (run / "model.keras").exists() and list(run.glob(".model.keras.*.tmp"))
    train(None, run, resume=True, progress=False)
    assert_same_model(run, runs["reference"])
    assert not list(run.rglob("*.tmp"))


@pytest.mark.parametrize("damage", ["empty", "removed"])
def test_resume_after_all_epochs_restores_the_checkpoint(reference, tmp_path, damage):
    """Faults 2 and 3: a 0-byte model.keras is not "done", and a missing one is rebuilt from the
    last checkpoint, not from freshly initialised weights."""
    from distill.train.trainer import train

    run = tmp_path / "run"
    shutil.copytree(reference.run_dir, run)
    if damage == "empty":
        (run / "model.keras").write_bytes(b"")
    else:
        (run / "model.keras").unlink()
    train(None, run, resume=True, progress=False)
    assert_same_model(run, reference)


@pytest.mark.parametrize("damage, needle", [
    ("truncated arrays", "does not match the SHA-256"),
    ("empty state", "checkpoint state is unreadable"),
    ("state not an object", "expected a JSON object"),
    ("bad epochs_done", "epochs_done must be a whole number"),
    ("missing arrays", "checkpoint arrays cannot be read"),
])
def test_damaged_checkpoint_is_one_line(reference, tmp_path, cli, damage, needle):
    """Fault 6: a truncated variables file or a broken state.json is refused in one line."""
    run = tmp_path / "run"
    shutil.copytree(reference.run_dir, run)
    folder = run / "checkpoint"
    arrays = next(folder.glob("variables-*.npz"))
    if damage == "truncated arrays":
        arrays.write_bytes(arrays.read_bytes()[:1000])
    elif damage == "missing arrays":
        arrays.unlink()
    else:
        text = {"empty state": "", "state not an object": "[1, 2]",
                "bad epochs_done": json.dumps({"epochs_done": "two", "history": []})}[damage]
        (folder / "state.json").write_text(text)
    code, out, err = cli("train", "--resume", run, "--no-progress")
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and needle in lines[0], err
    assert "checkpoint" in lines[0]


def test_bad_image_is_named_then_skipped_and_recorded(tmp_path, faces_small, cli):
    """Fault 5: a garbage image (folder) stops the run naming the file; a CSV row whose file is
    missing is skipped with data.skip_bad and recorded in skipped.json."""
    data = tmp_path / "data"
    shutil.copytree(faces_small, data)
    (data / "s2" / "3.png").write_bytes(b"this is not an image")
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe(data)))
    code, out, err = cli("train", "--recipe", path, "--run-dir", tmp_path / "a", "--no-progress")
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and f"{data / 's2' / '3.png'}: cannot decode image" in lines[0], err
    assert "data.skip_bad" in lines[0]

    rows = [f"{p.relative_to(faces_small)},{p.parent.name}" for p in sorted(faces_small.rglob("*.png"))]
    listing = tmp_path / "list" / "train.csv"
    listing.parent.mkdir()
    listing.write_text("\n".join(["nowhere/missing.png,s1"] + [f"{faces_small}/{r}" for r in rows]) + "\n")
    path.write_text(yaml.safe_dump({**recipe(listing, skip_bad=True), "stages": [{"epochs": 1, "lr": 0.05}]}))
    code, out, err = cli("train", "--recipe", path, "--run-dir", tmp_path / "b", "--no-progress")
    assert code == 0, err
    skipped = json.loads((tmp_path / "b" / "skipped.json").read_text())["skipped"]
    assert [(s["sample_id"], s["path"]) for s in skipped] == [(0, str(listing.parent / "nowhere/missing.png"))]
    assert "cannot read image" in skipped[0]["reason"]
