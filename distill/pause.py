"""Named points where a kill test can stop the process (a real ``kill -9``, no mocks).

With ``DISTILL_PAUSE_AT=name`` (or ``name#n``: the n-th time it is reached) the process,
on reaching :func:`pause_point` ``(name)``, creates the file ``DISTILL_PAUSE_FILE`` (if set)
and sleeps until it is killed. Without the variable a pause point costs one lookup.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

ENV_POINT = "DISTILL_PAUSE_AT"
ENV_FILE = "DISTILL_PAUSE_FILE"
_reached: dict[str, int] = {}


def pause_point(name: str) -> None:
    spec = os.environ.get(ENV_POINT)
    if not spec:
        return
    target, _, nth = spec.partition("#")
    if name != target:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] != int(nth or 1):
        return
    if os.environ.get(ENV_FILE):
        Path(os.environ[ENV_FILE]).write_text(str(os.getpid()))
    while True:
        time.sleep(60)
