"""Every bench says how busy the machine was: load average and CPUs before and after, and a
``quiet``/``loaded`` verdict by the rule of bench/_load.py."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHES = sorted(ROOT.glob("bench/bench_*.py")) + [ROOT / "bench" / "gpu_check.py"]
LINE = r"load {}: \d+\.\d\d \d+\.\d\d \d+\.\d\d \(1/5/15-min load average\), \d+ CPUs( \(\d+ usable by this process\))?"


def load_module():
    spec = importlib.util.spec_from_file_location("bench_load", ROOT / "bench" / "_load.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_bench_reports_the_load():
    missing = [p.name for p in BENCHES if "report_load(" not in p.read_text()]
    assert not missing, missing


def test_the_rule():
    verdict = load_module().verdict
    assert verdict(0.1, 1.2, threads=1).startswith("quiet")     # idle before, only its own thread after
    assert verdict(0.7, 1.2, threads=1).startswith("loaded")    # busy before it started
    assert verdict(0.1, 1.6, threads=1).startswith("loaded")    # more than its own thread after
    assert verdict(0.1, 15.9, threads=16).startswith("quiet")


def test_a_bench_prints_the_load_before_and_after(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "-1"}
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_metrics.py"), "--pairs", "200",
                             "--repeat", "1"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert re.fullmatch(LINE.format("before"), lines[0]), lines[0]
    assert re.fullmatch(LINE.format("after") + r": (quiet|loaded) \(1-min load .* before .* after .*\)", lines[-1]), lines[-1]
    assert any(line.startswith("kfold_accuracy vectorised") for line in lines[1:-1])
