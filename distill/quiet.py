"""Quiet TensorFlow start-up for the command line.

TensorFlow's C++ runtime prints lines such as ``Could not find cuda drivers`` and ``failed
call to cuInit`` on every CPU machine: at import (through absl before its logging is set
up, so ``TF_CPP_MIN_LOG_LEVEL`` cannot stop them) and at the first operation. The CLI
discards them: ``TF_CPP_MIN_LOG_LEVEL`` defaults to 3, and the first ``import tensorflow``
runs with the process's stderr (file descriptor 2) sent to /dev/null. ``distill --verbose``,
or setting ``TF_CPP_MIN_LOG_LEVEL`` yourself, keeps everything.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import sys


@contextlib.contextmanager
def stderr_discarded():
    """Send file descriptor 2 to /dev/null for the block (C++ writes included)."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        with stderr_discarded():
            self.loader.exec_module(module)


class _QuietTensorFlow(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` once, with a loader that imports it quietly."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_tensorflow(verbose: bool = False) -> None:
    """Silence TensorFlow's start-up lines for this process unless ``verbose`` or the user set
    ``TF_CPP_MIN_LOG_LEVEL``; call before TensorFlow is imported."""
    import distill

    if verbose or distill.USER_SET_TF_LOG_LEVEL:
        return
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietTensorFlow) for f in sys.meta_path):
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.meta_path.insert(0, _QuietTensorFlow())
