"""bench/gpu_check.sh runs as shipped (tiny sizes on CPU) and prints its one table."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_tiny_on_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": "-1",
           "TF_CPP_MIN_LOG_LEVEL": "3", "DISTILL_CACHE_DIR": str(tmp_path / "cache"),
           "GPU_CHECK_TIMEOUT": "1500"}
    result = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--tiny", "--work", str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=1600)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| what")]
    assert len(rows) == 6, result.stdout
    for row in rows:
        value = float(row.split("|")[2].replace(",", ""))
        assert value > 0, row
    assert lines[0].startswith("load before: ") and lines[-1].startswith("load after: ")   # bench/_load.py
    assert "no GPU (CPU only)" in lines[1]
    assert not list(tmp_path.glob("gpu_check_*"))   # its working folder is removed
