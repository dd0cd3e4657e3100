"""Model files of a run (``model.keras``, ``best.keras``), written so that a kill or a full
disk never leaves a partial one in place, and a run directory's leftovers tidied up."""
from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np

from distill.train.checkpoints import CHECKPOINT_DIR, remove_unreferenced
from distill.utils import atomic_write_bytes, remove_temporaries

log = logging.getLogger(__name__)


def model_bytes(model) -> bytes:
    """The ``.keras`` archive of ``model``, built in memory."""
    from keras.src.saving import saving_lib

    buffer = io.BytesIO()
    saving_lib.save_model(model, buffer)
    return buffer.getvalue()


def load_model_bytes(data: bytes):
    from keras.src.saving import saving_lib

    return saving_lib.load_model(io.BytesIO(data), compile=False)


def save_model_file(model, path, check: bool = True) -> Path:
    """Write ``model`` to ``path`` atomically; with ``check`` the archive is first loaded back
    and compared with ``model`` (a file that does not load never replaces the old one)."""
    path = Path(path)
    data = model_bytes(model)
    if check and not _same_weights(load_model_bytes(data), model):
        raise RuntimeError(f"{path}: the saved model does not load back with the same weights")
    atomic_write_bytes(path, data)
    return path


def model_file_matches(path, model) -> bool:
    """Whether ``path`` loads as a model with exactly ``model``'s weights."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        return _same_weights(load_model_bytes(path.read_bytes()), model)
    except Exception as exc:  # any unloadable file is simply rewritten
        log.warning("%s: does not load (%s); writing it again from the last checkpoint",
                    path, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        return False


def _same_weights(loaded, model) -> bool:
    a, b = loaded.get_weights(), model.get_weights()
    return len(a) == len(b) and all(np.asarray(x).dtype == np.asarray(y).dtype and np.shape(x) == np.shape(y)
                                    and np.asarray(x).tobytes() == np.asarray(y).tobytes() for x, y in zip(a, b))


def clean_run_dir(run_dir) -> None:
    """Remove temporaries of interrupted writes and checkpoint arrays no state names."""
    run_dir = Path(run_dir)
    removed = remove_temporaries(run_dir) + remove_temporaries(run_dir / CHECKPOINT_DIR)
    removed += remove_unreferenced(run_dir)
    if removed:
        log.info("%s: removed %d leftover(s) of an interrupted run: %s", run_dir, len(removed),
                 ", ".join(p.name for p in removed))
