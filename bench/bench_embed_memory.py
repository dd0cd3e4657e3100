"""Benchmark: `distill embed` memory does not grow with the dataset.

Run: ``python bench/bench_embed_memory.py [--small 2000] [--large 20000]``. Builds one
MobileNet (alpha 0.5) teacher and two class-per-folder trees of cycled ORL faces, then
embeds each in a fresh subprocess and reads that process's peak RSS
(``resource.getrusage(...).ru_maxrss``). Prints both peaks and their difference
(goal < 100 MB).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _load import report_load  # bench/ is on sys.path when a bench runs

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def child(data: str, teacher: str, out: str, batch_size: int) -> None:
    """Embed ``data`` into ``out``; print peak RSS (MB) and the time as JSON."""
    from distill.store.writer import embed

    start = time.perf_counter()
    manifest = embed(teacher, data, out, batch_size=batch_size, progress=False)
    elapsed = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"images": manifest.num_samples, "peak_rss_mb": peak_mb, "seconds": elapsed}))


def measure(data: Path, teacher: Path, out: Path, batch_size: int) -> dict:
    command = [sys.executable, __file__, "--child", str(data), str(teacher), str(out), str(batch_size)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"child failed on {data}:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--large", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    report_load()   # load average before and after (bench/_load.py)

    from bench_embed import make_images, make_teacher

    with tempfile.TemporaryDirectory(prefix="bench_embed_memory_") as tmp:
        tmp = Path(tmp)
        teacher = make_teacher(tmp)
        runs = {n: measure(make_images(tmp / f"images{n}", n), teacher, tmp / f"store{n}", args.batch_size)
                for n in (args.small, args.large)}
    for n, run in runs.items():
        print(f"{n:>7} images: peak RSS {run['peak_rss_mb']:8.1f} MB  ({run['images'] / run['seconds']:.0f} img/s)")
    growth = runs[args.large]["peak_rss_mb"] - runs[args.small]["peak_rss_mb"]
    print(f"difference     : {growth:8.1f} MB  (goal < 100 MB)")


if __name__ == "__main__":
    main()
