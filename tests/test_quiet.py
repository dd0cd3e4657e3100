"""The CLI hides TensorFlow's C++ start-up lines unless asked (``--verbose``, or the user's
own ``TF_CPP_MIN_LOG_LEVEL``)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

SCRIPT = """
import sys
import distill
from distill.quiet import quiet_tensorflow
quiet_tensorflow(verbose={verbose})
import tensorflow as tf
print(float(tf.constant(1.0) + 1), flush=True)
"""


def run(verbose: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-c", SCRIPT.format(verbose=verbose)], capture_output=True,
                          text=True, env=env, timeout=300)


def test_tensorflow_start_up_lines_are_hidden_unless_verbose():
    loud = run(True)
    assert loud.returncode == 0 and loud.stdout.strip() == "2.0"
    if not loud.stderr.strip():
        pytest.skip("this TensorFlow build prints nothing at start-up here")
    quiet = run(False)
    assert quiet.returncode == 0 and quiet.stdout.strip() == "2.0"
    assert quiet.stderr.strip() == "", quiet.stderr
