"""Teacher targets through the input pipeline: read per batch from the shards vs the in-memory table.

Writes synthetic stores directly as HDF5 shards + manifest (no images, no teacher: random
unit rows, float16, with ``embedding_flip``), then, each in a fresh process, runs the training
pipeline's targets path alone: the epoch order, a per-sample flip decision, batches, and
``targets.gather`` (``data.targets`` = ``pread``, ``mmap`` or ``memory``). Prints per run the
time to the first batch (from opening the store), peak RSS and targets/s (``pipeline``: with
the per-sample map that decides the flip, as training has; ``alone``: ids already batched, so
only the targets path is timed), then the goals:
peak RSS of the big store minus the small one's (< 300 MB), time to first batch (< 30 s) and
targets/s read ÷ in-memory (≥ 0.9; the in-memory table is measured at ``--memory-rows``, as a
whole 2M-row table with flip needs ~6 GB while it is built).

    python bench/bench_targets.py [--rows 2000000] [--small 20000] [--memory-rows 1000000]
                                  [--work /tmp] [--batches 2000] [--keep]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _load import report_load  # bench/ is on sys.path when a bench runs

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
FINGERPRINT = "synthetic"


def make_store(folder: Path, rows: int, dim: int = 512, shard_size: int = 10000, reuse: Path | None = None):
    """A complete synthetic store of ``rows`` (float16, flip); shards of ``reuse`` (a bigger
    synthetic store with the same shard size) are linked instead of written."""
    import h5py

    from distill.store.manifest import Manifest, shard_name

    folder.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(num_samples=rows, num_classes=1, class_names=["synthetic"],
                        source={"kind": "synthetic", "root": str(folder), "fingerprint": FINGERPRINT},
                        teacher={"kind": "synthetic"}, embedding_dim=dim, dtype="float16", flip=True,
                        shard_size=shard_size, input_normalization={})
    block = np.random.default_rng(0).standard_normal((shard_size, dim), dtype=np.float32)
    block = (block / np.linalg.norm(block, axis=1, keepdims=True)).astype(np.float16)
    for k in range(manifest.num_shards):
        first, end = manifest.shard_range(k)
        name = shard_name(k)
        if reuse is not None and (reuse / name).is_file() and end - first == shard_size:
            os.link(reuse / name, folder / name)
        else:   # one random block, its rows rolled per shard (cheap: the store is written quickly)
            rows = np.roll(block, k, axis=0)[:end - first]
            with h5py.File(folder / name, "w") as handle:
                handle.create_dataset("embedding", data=rows)
                handle.create_dataset("embedding_flip", data=rows[:, ::-1])
                handle.create_dataset("label", data=np.zeros(end - first, np.int64))
                handle.create_dataset("sample_id", data=np.arange(first, end, dtype=np.int64))
        manifest.shards[name] = {"first_id": first, "count": end - first, "expected": end - first}
    manifest.save(folder)
    return folder


class _Listing:
    """Stands for the dataset listing the synthetic store was 'embedded' from."""

    def fingerprint(self) -> str:
        return FINGERPRINT


def measure(store: Path, mode: str, batch: int, batches: int, seed: int = 0) -> dict:
    """One run in this process: time to the first batch and targets/s through the pipeline's
    structure (a per-sample map deciding the flip, as augmentation does, then batches), then
    targets/s of the targets path alone (ids and flips already batched); peak RSS."""
    import tensorflow as tf

    from distill.store import Store
    from distill.train.pipeline import epoch_order
    from distill.train.targets import open_targets

    started = time.perf_counter()
    targets = open_targets(Store(store), _Listing(), mode)
    order = epoch_order(np.flatnonzero(targets.present), seed, 0)

    def flip(sample_id):
        rng_seed = tf.stack([tf.constant(seed * 100003, tf.int64), sample_id])
        return sample_id, tf.random.stateless_uniform([], seed=rng_seed) < 0.5

    steps = len(order) // batch
    flipped = np.random.default_rng(seed).random(steps * batch) < 0.5
    pipelines = {
        "pipeline": tf.data.Dataset.from_tensor_slices(order).map(flip).batch(batch, drop_remainder=True),
        "alone": tf.data.Dataset.from_tensor_slices((order[:steps * batch].reshape(steps, batch),
                                                     flipped.reshape(steps, batch))),
    }
    out = {"mode": mode, "rows": len(targets.present)}
    for name, dataset in pipelines.items():
        dataset = dataset.map(lambda ids, flips: targets.gather(ids, flips),
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        options = tf.data.Options()
        options.threading.max_intra_op_parallelism = 1
        iterator = iter(dataset.with_options(options).prefetch(tf.data.AUTOTUNE).repeat())
        next(iterator).numpy()
        out.setdefault("first_batch_s", round(time.perf_counter() - started, 2))
        begin, count = time.perf_counter(), 0
        for _, item in zip(range(batches), iterator):
            count += int(item.shape[0])
        out[name] = round(count / (time.perf_counter() - begin))
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def run_child(store: Path, mode: str, args) -> dict:
    cmd = [sys.executable, __file__, "--measure", str(store), "--mode", mode,
           "--batch", str(args.batch), "--batches", str(args.batches)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode or not lines:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stderr[-2000:]}")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--small", type=int, default=20_000)
    parser.add_argument("--memory-rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2, help="alternating read/memory runs")
    parser.add_argument("--work", type=Path, default=None, help="folder for the stores (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the stores")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="pread", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.mode, args.batch, args.batches)))
        return
    report_load()   # load average before and after (bench/_load.py)

    work = Path(tempfile.mkdtemp(prefix="bench_targets_", dir=args.work))
    try:
        started = time.perf_counter()
        big = make_store(work / f"rows{args.rows}", args.rows, args.dim)
        stores = {n: make_store(work / f"rows{n}", n, args.dim, reuse=big)
                  for n in sorted({args.small, args.memory_rows} - {args.rows})}
        stores[args.rows] = big
        written = sum(f.stat().st_size for f in big.glob("shard-*.h5")) / 1e9
        print(f"stores written in {time.perf_counter() - started:.0f} s ({written:.2f} GB for "
              f"{args.rows:,} rows × {args.dim} float16 with flip); batch {args.batch}, "
              f"{args.batches} batches per run, {os.cpu_count()} CPU cores")
        runs = [run_child(stores[args.small], "pread", args), run_child(big, "pread", args),
                run_child(big, "mmap", args)]
        pairs = []
        for _ in range(args.repeats):   # alternate, so both see the same (shared) machine
            pairs.append((run_child(stores[args.memory_rows], "pread", args),
                          run_child(stores[args.memory_rows], "memory", args)))
        runs += [run for pair in pairs for run in pair]
        print(f"{'mode':<8}{'rows':>11}{'first batch s':>15}{'peak RSS MB':>13}"
              f"{'targets/s pipeline':>20}{'targets/s alone':>17}")
        for run in runs:
            print(f"{run['mode']:<8}{run['rows']:>11,}{run['first_batch_s']:>15}{run['peak_rss_mb']:>13}"
                  f"{run['pipeline']:>20,}{run['alone']:>17,}")
        print(f"peak RSS, {args.rows:,} rows minus {args.small:,} (pread): "
              f"{runs[1]['peak_rss_mb'] - runs[0]['peak_rss_mb']:.1f} MB (goal < 300)")
        print(f"time to first batch, {args.rows:,} rows (pread): {runs[1]['first_batch_s']} s (goal < 30)")
        for name in ("pipeline", "alone"):
            ratio = np.median([read[name] / memory[name] for read, memory in pairs])
            print(f"targets/s pread ÷ memory at {args.memory_rows:,} rows ({name}), median of "
                  f"{args.repeats}: {ratio:.2f} (goal ≥ 0.9)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
