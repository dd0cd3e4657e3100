"""Benchmark: vectorised 10-fold accuracy vs a plain loop over folds × thresholds (6,000 pairs).

Run: ``python bench/bench_metrics.py [--pairs 6000] [--repeat 5]``. Prints both timings,
the ratio, and checks that both give the same numbers.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from distill.evals.metrics import kfold_accuracy, pair_distances, verification_metrics

from _load import report_load  # bench/ is on sys.path when a bench runs


def loop_kfold_accuracy(dist, issame, n_folds=10, thresholds=np.arange(0, 4, 0.01)):
    """The straightforward InsightFace-style implementation: Python loops over folds and thresholds."""
    n = dist.size
    sizes = [n // n_folds + (1 if f < n % n_folds else 0) for f in range(n_folds)]
    bounds = np.cumsum([0] + sizes)
    accs, best_ts = [], []
    for f in range(n_folds):
        test = np.arange(bounds[f], bounds[f + 1])
        train = np.setdiff1d(np.arange(n), test)
        train_acc = np.zeros(len(thresholds))
        for i, t in enumerate(thresholds):
            pred = dist[train] < t
            train_acc[i] = np.mean(pred == issame[train])
        best = thresholds[int(np.argmax(train_acc))]
        accs.append(np.mean((dist[test] < best) == issame[test]))
        best_ts.append(best)
    return {"accuracy": float(np.mean(accs)), "std": float(np.std(accs)), "threshold": float(np.mean(best_ts))}


def best_time(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=6000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    report_load(threads=1)   # load average before and after (bench/_load.py)
    rng = np.random.default_rng(0)
    issame = rng.random(args.pairs) < 0.5
    e1 = rng.normal(size=(args.pairs, 512))
    e2 = np.where(issame[:, None], e1 + rng.normal(size=e1.shape), rng.normal(size=e1.shape))
    dist = pair_distances(e1, e2)

    t_vec, fast = best_time(lambda: kfold_accuracy(dist, issame), args.repeat)
    t_loop, slow = best_time(lambda: loop_kfold_accuracy(dist, issame), max(1, args.repeat // 2))
    t_all, _ = best_time(lambda: verification_metrics(e1, e2, issame), args.repeat)
    same = all(abs(fast[k] - slow[k]) < 1e-12 for k in fast)
    print(f"pairs: {args.pairs}")
    print(f"kfold_accuracy vectorised: {1000 * t_vec:8.2f} ms")
    print(f"kfold_accuracy plain loop: {1000 * t_loop:8.2f} ms")
    print(f"speed-up:                  {t_loop / t_vec:8.1f}x  (identical results: {same})")
    print(f"verification_metrics (accuracy, VAL, TAR@FAR, AUC, EER): {1000 * t_all:.2f} ms")
    if not same:
        raise SystemExit(f"results differ: vectorised {fast} vs loop {slow}")


if __name__ == "__main__":
    main()
