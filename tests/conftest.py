"""Shared fixtures: real ORL faces, a tiny saved Keras teacher, CLI runners."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

import numpy as np
import pytest

ORL = Path(__file__).resolve().parents[1] / "distill" / "demo_data" / "orl_faces"


@pytest.fixture(scope="session")
def orl_root() -> Path:
    return ORL


def copy_people(target: Path, people) -> Path:
    for person in people:
        shutil.copytree(ORL / person, target / person)
    return target


@pytest.fixture(scope="session")
def faces_small(tmp_path_factory) -> Path:
    """A class-per-folder tree of 5 real ORL people (50 images)."""
    return copy_people(tmp_path_factory.mktemp("faces") / "train", [f"s{i}" for i in range(1, 6)])


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    """A small random-init MobileNet embedding model saved as .keras (a stand-in teacher)."""
    import keras

    from distill.models import build_embedding_model

    keras.utils.set_random_seed(1)
    model = build_embedding_model("mobilenet", embedding_size=32, alpha=0.25)
    path = tmp_path_factory.mktemp("teacher") / "teacher.keras"
    model.save(path)
    return path


@pytest.fixture()
def cli():
    """Run the real ``distill`` app in-process; returns (exit code, stdout, stderr)."""
    from typer.testing import CliRunner

    from distill.cli import app

    def run(*args):
        result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    return run


def run_console(*args, cwd=None, timeout=600):
    """Run the installed ``distill`` console script in a subprocess."""
    exe = Path(sys.executable).parent / "distill"
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


def independent_embeddings(model_path: Path, image_paths) -> np.ndarray:
    """Teacher output computed without the project's pipeline: PIL decode/resize + NumPy."""
    import keras
    from PIL import Image

    model = keras.models.load_model(model_path, compile=False)
    images = np.stack([np.asarray(Image.open(p).convert("RGB").resize((112, 112), Image.BILINEAR),
                                  dtype=np.float32) for p in image_paths])
    out = model.predict((images - 127.5) / 128.0, verbose=0)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def start_paused(args, point: str, marker: Path, cwd=None):
    """Start ``distill ARGS`` in a subprocess that pauses at the named point
    (:mod:`distill.pause`); returns the Popen. See :func:`kill_when_paused`."""
    env = dict(os.environ, DISTILL_PAUSE_AT=point, DISTILL_PAUSE_FILE=str(marker))
    exe = Path(sys.executable).parent / "distill"
    with open(marker.with_suffix(".log"), "w") as log:   # a file, so a full pipe never blocks it
        return subprocess.Popen([str(exe), *map(str, args)], env=env, cwd=cwd, stdout=log,
                                stderr=subprocess.STDOUT)


def kill_when_paused(process, marker: Path, timeout: float = 600) -> None:
    """Wait until ``process`` reached its pause point, then ``kill -9`` it."""
    import signal
    import time

    deadline = time.time() + timeout
    while not marker.exists():
        if process.poll() is not None:
            raise AssertionError(f"exited ({process.returncode}) without reaching the pause point:\n"
                                 + marker.with_suffix(".log").read_text()[-3000:])
        if time.time() > deadline:
            process.kill()
            raise AssertionError("did not reach the pause point in time")
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL


def error_lines(stderr: str) -> list[str]:
    """The ``error:`` lines of a CLI's stderr (a one-line error has exactly one, and no traceback)."""
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def script_report(script: str, timeout: float = 300):
    """Run a Python ``script`` on CPU in a fresh interpreter (e.g. with logical devices); the
    JSON after its last ``REPORT `` line."""
    import json

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=timeout)
    lines = [line for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    assert result.returncode == 0 and lines, result.stderr[-3000:]
    return json.loads(lines[-1][len("REPORT "):])
