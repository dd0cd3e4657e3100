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
