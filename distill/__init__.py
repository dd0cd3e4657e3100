"""distill: knowledge distillation for face-recognition embeddings.

Stages (data flows one way)::

    images ─► data ─► teachers ─► store ─► train ◄─ losses, models
                                             │
                                             ▼
                                 evals ─► report (tables, plots)

The public API is imported lazily so that ``import distill`` does not load TensorFlow.
"""
from __future__ import annotations

import os

#: whether the user chose TensorFlow's C++ log level (then the CLI leaves its output alone)
USER_SET_TF_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL" in os.environ
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

_API = {
    "embed": ("distill.store.writer", "embed"),
    "train": ("distill.train.trainer", "train"),
    "evaluate": ("distill.evals.verification", "evaluate_models"),
    "demo": ("distill.demo", "run_demo"),
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name):
    if name in _API:
        import importlib

        module_name, attr = _API[name]
        return getattr(importlib.import_module(module_name), attr)
    raise AttributeError(f"module 'distill' has no attribute {name!r}")
