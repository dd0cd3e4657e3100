#!/usr/bin/env bash
# The GPU check: one table (teacher embed, student train, input pipeline img/s per core) in
# under 8 minutes on one GPU. Run from a fresh clone after the README's install command:
#     python3 -m venv .venv && .venv/bin/pip install -q -e ".[dev]" && bash bench/gpu_check.sh
# If an NVIDIA GPU is present but TensorFlow sees none (pip's `tensorflow` without CUDA
# libraries), the matching `tensorflow[and-cuda]` is installed into the same environment first.
# `--tiny` runs CPU-test sizes (tests/test_gpu_check.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
sees_gpu() { "$PY" -c 'import sys, tensorflow as tf; sys.exit(0 if tf.config.list_physical_devices("GPU") else 1)' 2>/dev/null; }
if [ "${1:-}" != "--tiny" ] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && ! sees_gpu; then
    version="$("$PY" -c 'import tensorflow as tf; print(tf.__version__)' 2>/dev/null)"
    echo "gpu_check: TensorFlow $version sees no GPU; installing tensorflow[and-cuda]==$version" >&2
    "$PY" -m pip install -q "tensorflow[and-cuda]==$version"
    sees_gpu || echo "gpu_check: TensorFlow still sees no GPU; the table below is CPU-only" >&2
fi
exec timeout "${GPU_CHECK_TIMEOUT:-480}" "$PY" bench/gpu_check.py "$@"
