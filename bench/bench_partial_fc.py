"""Partial FC on CPU: memory and step time of the classification step at sample rate 1 vs 0.1.

Each rate runs in a fresh process: a ``CosineClassifier`` of ``--classes`` × ``--dim``, SGD with
momentum 0.9 and MXNet weight decay 5e-4, ArcFace, and the project's own compiled train step
(:func:`distill.train.step.make_train_step`) on a one-layer stand-in for the backbone (random
``dim``-wide features → Dense), so the step holds exactly the classifier's work. Prints per
rate: resident memory once the weights and optimizer state exist, peak RSS over the steps,
and the median step time (the first, traced, step excluded), with the formulas of README
"Scaling out" for comparison.

    python bench/bench_partial_fc.py [--classes 1000000] [--dim 512] [--batch 128] [--steps 5]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

from _load import report_load  # bench/ is on sys.path when a bench runs

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def rss_mb() -> float:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS")) / 1024


def measure(classes: int, dim: int, batch: int, steps: int, rate: float) -> dict:
    import keras
    import tensorflow as tf

    from distill.losses.objective import build_objective
    from distill.models.classifier import CosineClassifier
    from distill.train.optim import GradientWeightDecay
    from distill.train.step import make_train_step

    keras.utils.set_random_seed(0)
    strategy = tf.distribute.get_strategy()
    model = keras.Sequential([keras.Input((dim,)), keras.layers.Dense(dim)])
    classifier = CosineClassifier(classes)
    classifier.build((None, dim))
    objective = build_objective({"name": "arcface", "scale": 64.0, "margin": 0.5, "sample_rate": rate})
    variables = list(model.trainable_variables) + list(classifier.trainable_variables)
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    optimizer.build(variables)
    decay = GradientWeightDecay(5e-4, variables, classifier.trainable_variables)
    step = make_train_step(strategy, model, classifier, objective, optimizer, variables, decay,
                           gradient_stats=False)
    state = rss_mb()
    rng = np.random.default_rng(0)
    batches = [{"image": tf.constant(rng.normal(size=(batch, dim)).astype(np.float32)),
                "label": tf.constant(rng.integers(0, classes, batch))} for _ in range(steps + 1)]
    times = []
    for item in batches:
        started = time.perf_counter()
        step(item)["total"].numpy()
        times.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rate": rate, "state_mb": round(state), "peak_mb": round(peak),
            "step_ms": round(1000 * float(np.median(times[1:])), 1), "first_step_s": round(times[0], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rates", default="0.1,1")
    parser.add_argument("--measure", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.classes, args.dim, args.batch, args.steps, args.measure)))
        return
    report_load()   # load average before and after (bench/_load.py)
    weights_mb = 4 * args.classes * args.dim / 2**20
    print(f"{args.classes:,} classes × {args.dim}, batch {args.batch}, {args.steps} timed steps, "
          f"{os.cpu_count()} CPU cores; float32 weights W = 4·C·D = {weights_mb:,.0f} MB")
    print(f"{'rate':>5}{'sampled':>10}{'state MB':>10}{'peak MB':>9}{'peak−state MB':>15}{'formula':>9}"
          f"{'step ms':>9}{'first step s':>14}")
    for rate in [float(r) for r in args.rates.split(",")]:
        cmd = [sys.executable, __file__, "--measure", str(rate), "--classes", str(args.classes),
               "--dim", str(args.dim), "--batch", str(args.batch), "--steps", str(args.steps)]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        if result.returncode or not lines:
            print(f"{rate:>5}  failed (exit {result.returncode}): {result.stderr.strip()[-300:]}")
            continue
        run = json.loads(lines[-1])
        sampled = max(1, int(np.ceil(rate * args.classes)))
        # a step's working memory: the dense gradient and the decayed gradient (2·W), the
        # sampled centres normalised (4·S·D) and ~6 logits-sized float32 [B, S] tensors
        formula = 2 * weights_mb + (4 * sampled * args.dim + 6 * 4 * args.batch * sampled) / 2**20
        print(f"{rate:>5}{sampled:>10,}{run['state_mb']:>10,}{run['peak_mb']:>9,}"
              f"{run['peak_mb'] - run['state_mb']:>15,}{formula:>9,.0f}{run['step_ms']:>9}"
              f"{run['first_step_s']:>14}")
    print(f"state = the process with weights and momentum (2·W = {2 * weights_mb:,.0f} MB) built")


if __name__ == "__main__":
    main()
