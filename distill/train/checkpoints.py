"""Run checkpoints: every variable (model, classifier, loss state, optimizer) plus a JSON
state (epochs done, history, seed), written atomically at the end of every epoch."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from distill.utils import atomic_write_bytes, atomic_write_json

CHECKPOINT_DIR = "checkpoint"


def save_checkpoint(run_dir, groups: dict, state: dict) -> None:
    """``groups``: name → list of variables. Arrays first, then the state that points to them."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    arrays = {f"{name}/{i}": np.asarray(v.numpy()) for name, variables in groups.items()
              for i, v in enumerate(variables)}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(folder / "variables.npz", buffer.getvalue())
    atomic_write_json(folder / "state.json", {**state, "groups": {k: len(v) for k, v in groups.items()}})


def load_state(run_dir) -> dict | None:
    path = Path(run_dir) / CHECKPOINT_DIR / "state.json"
    return json.loads(path.read_text()) if path.is_file() else None


def restore_variables(run_dir, groups: dict, strict=("model", "classifier")) -> None:
    """Assign saved values; groups in ``strict`` must match exactly, others when shapes agree."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    with np.load(folder / "variables.npz") as saved:
        for name, variables in groups.items():
            keys = [k for k in saved.files if k.startswith(f"{name}/")]
            values = [saved[f"{name}/{i}"] for i in range(len(keys))]
            matches = len(values) == len(variables) and all(
                tuple(v.shape) == tuple(a.shape) for v, a in zip(variables, values))
            if not matches:
                if name in strict:
                    raise ValueError(f"{folder}: checkpoint '{name}' does not match the model "
                                     f"({len(values)} saved variables, {len(variables)} now)")
                continue
            for variable, value in zip(variables, values):
                variable.assign(value)


def copy_state(source_variables, target_variables) -> bool:
    """Copy values when the two lists have the same shapes (e.g. optimizer slots across stages)."""
    if len(source_variables) != len(target_variables) or any(
            tuple(a.shape) != tuple(b.shape) for a, b in zip(source_variables, target_variables)):
        return False
    for a, b in zip(source_variables, target_variables):
        b.assign(a)
    return True
