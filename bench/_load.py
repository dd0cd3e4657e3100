"""How busy the machine was while a bench ran; every bench calls :func:`report_load` once.

It prints, when called and again as the bench's last line::

    load before: 0.12 0.30 0.41 (1/5/15-min load average), 16 CPUs
    load after: 15.80 6.10 2.60 (1/5/15-min load average), 16 CPUs: quiet (1-min load 0.12 before < 0.5, 15.80 after < 16.5)

The rule: **quiet** when the 1-minute load average was below 0.5 before the bench (nothing else
was running) and below ``threads + 0.5`` after it (no more than the bench's own busy threads;
``threads`` defaults to every CPU, benches that keep one core busy say 1); otherwise
**loaded**: other work shared the machine, and the timings should be rerun on an idle one.
"""
from __future__ import annotations

import atexit
import os

QUIET_BEFORE = 0.5   # 1-min load average below which the machine counts as idle


def _cpus() -> str:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{os.cpu_count()} CPUs" + (f" ({usable} usable by this process)" if usable != os.cpu_count() else "")


def _line(when: str, load) -> str:
    return f"load {when}: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15-min load average), {_cpus()}"


def verdict(before: float, after: float, threads: int) -> str:
    """``quiet`` or ``loaded`` by the module's rule, with the numbers it compared."""
    limit = threads + QUIET_BEFORE
    quiet = before < QUIET_BEFORE and after < limit
    return (f"{'quiet' if quiet else 'loaded'} (1-min load {before:.2f} before "
            f"{'<' if before < QUIET_BEFORE else '≥'} {QUIET_BEFORE}, {after:.2f} after "
            f"{'<' if after < limit else '≥'} {limit:g})")


def report_load(threads: int | None = None) -> None:
    """Print the load line now and, when the process exits, the after line with the verdict."""
    threads = threads or os.cpu_count() or 1
    before = os.getloadavg()
    print(_line("before", before), flush=True)

    def after() -> None:
        now = os.getloadavg()
        print(f"{_line('after', now)}: {verdict(before[0], now[0], threads)}", flush=True)

    atexit.register(after)
