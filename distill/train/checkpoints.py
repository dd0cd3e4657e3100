"""Run checkpoints: every variable (model, classifier, loss state, optimizer) plus a JSON
state (epochs done, history, seed), written at the end of every epoch as one atomic unit.

The arrays go to ``checkpoint/variables-EEEEE.npz`` (E = epochs done), written atomically
before ``checkpoint/state.json``, which names that file and its SHA-256. A kill between the
two leaves the previous state pointing at the previous (still present) arrays, so a resume
never pairs a state with weights of another epoch; the arrays are checked against the hash
before use. Older arrays are deleted only after the new state is in place.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np

from distill.pause import pause_point
from distill.utils import atomic_write_bytes, atomic_write_json, first_line as _first_line

CHECKPOINT_DIR = "checkpoint"
STATE_NAME = "state.json"
LEGACY_VARIABLES = "variables.npz"   # checkpoints written before states named their arrays
_FIX = "restore the file, or start the run again in a new directory"


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted; the message names the file and the fix."""


def save_checkpoint(run_dir, groups: dict, state: dict) -> None:
    """``groups``: name → list of variables. Arrays first, then the state that names them."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    arrays = {f"{name}/{i}": np.asarray(v.numpy()) for name, variables in groups.items()
              for i, v in enumerate(variables)}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    data = buffer.getvalue()
    name = f"variables-{int(state.get('epochs_done', 0)):05d}.npz"
    atomic_write_bytes(folder / name, data)
    pause_point("checkpoint:variables-written")
    atomic_write_json(folder / STATE_NAME, {**state, "groups": {k: len(v) for k, v in groups.items()},
                                            "variables": name, "sha256": hashlib.sha256(data).hexdigest()})
    remove_unreferenced(run_dir)


def load_state(run_dir) -> dict | None:
    """The saved state (``None`` when there is no checkpoint); a damaged one is refused."""
    path = Path(run_dir) / CHECKPOINT_DIR / STATE_NAME
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: checkpoint state is unreadable ({_first_line(exc)}); {_FIX}") from None
    problem = _state_problem(state)
    if problem:
        raise CheckpointError(f"{path}: checkpoint state is damaged ({problem}); {_FIX}")
    return state


def _state_problem(state) -> str | None:
    if not isinstance(state, dict):
        return f"expected a JSON object, got {type(state).__name__}"
    done = state.get("epochs_done")
    if isinstance(done, bool) or not isinstance(done, int) or done < 0:
        return f"epochs_done must be a whole number ≥ 0, got {done!r}"[:120]
    if not isinstance(state.get("history", []), list) or len(state.get("history", [])) != done:
        return f"history must list the {done} epochs done"
    if not isinstance(state.get("best"), (dict, type(None))):
        return "best must be an object or null"
    if "variables" in state and not (isinstance(state["variables"], str) and "/" not in state["variables"]
                                     and isinstance(state.get("sha256"), str)):
        return "variables must name a file in the checkpoint folder, with its sha256"
    return None


def variables_path(run_dir) -> Path:
    """The arrays file the current state names (``variables.npz`` for older checkpoints)."""
    state = load_state(run_dir) or {}
    return Path(run_dir) / CHECKPOINT_DIR / state.get("variables", LEGACY_VARIABLES)


def _checked_bytes(run_dir) -> bytes:
    state = load_state(run_dir) or {}
    path = variables_path(run_dir)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: checkpoint arrays cannot be read ({exc.strerror}); {_FIX}") from None
    if "sha256" in state and hashlib.sha256(data).hexdigest() != state["sha256"]:
        raise CheckpointError(f"{path}: does not match the SHA-256 in {STATE_NAME} (truncated or "
                              f"damaged); {_FIX}")
    return data


def check_arrays(run_dir) -> None:
    """Refuse a checkpoint whose arrays are missing or damaged (cheap when the state has a hash)."""
    if "sha256" in (load_state(run_dir) or {}):
        _checked_bytes(run_dir)
    else:
        load_arrays(run_dir)


def load_arrays(run_dir) -> dict:
    """``{"group/i": array}`` of the current checkpoint, checked against the state's SHA-256."""
    path = variables_path(run_dir)
    data = _checked_bytes(run_dir)
    try:
        with np.load(io.BytesIO(data)) as saved:
            return {key: saved[key] for key in saved.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({_first_line(exc)}); {_FIX}") from None


def restore_variables(run_dir, groups: dict, strict=("model", "classifier")) -> None:
    """Assign saved values; groups in ``strict`` must match exactly, others when shapes agree."""
    saved = load_arrays(run_dir)
    path = variables_path(run_dir)
    for name, variables in groups.items():
        count = sum(1 for k in saved if k.startswith(f"{name}/"))
        values = [saved.get(f"{name}/{i}") for i in range(count)]
        matches = len(values) == len(variables) and all(
            a is not None and tuple(v.shape) == tuple(a.shape) for v, a in zip(variables, values))
        if not matches:
            if name in strict:
                raise CheckpointError(f"{path}: checkpoint '{name}' does not match the model "
                                      f"({len(values)} saved variables, {len(variables)} now)")
            continue
        for variable, value in zip(variables, values):
            variable.assign(value)


def remove_unreferenced(run_dir) -> list[Path]:
    """Delete arrays files the state does not name (left by a kill between the two writes)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not (folder / STATE_NAME).is_file():
        return []
    keep = variables_path(run_dir).name
    stale = [p for p in folder.glob("variables*.npz") if p.name != keep]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def copy_state(source_variables, target_variables) -> bool:
    """Copy values when the two lists have the same shapes (e.g. optimizer slots across stages)."""
    if len(source_variables) != len(target_variables) or any(
            tuple(a.shape) != tuple(b.shape) for a, b in zip(source_variables, target_variables)):
        return False
    for a, b in zip(source_variables, target_variables):
        b.assign(a)
    return True
