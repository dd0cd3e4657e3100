"""`train.distribute: multi_worker`: two worker processes on localhost (TF_CONFIG, CPU) give the
same losses at every step and the same weights after six steps (one stop and resume between)
as one process with the same global batch; each worker reads only its share of every global
batch; the chief alone writes and evaluates, and both workers resume from its checkpoint.

The network is ``tiny_cnn`` (tests/tiny_backbone.py): on a deep BN network at initialisation
float32 rounding alone (reordering one batch's rows on one device) moves the first update by
several per cent, which would hide a real replication error behind noise."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from conftest import copy_people

TESTS = Path(__file__).resolve().parent

WORKER = textwrap.dedent('''
    import json, sys
    import numpy as np
    sys.path.insert(0, sys.argv.pop())      # tests/, for the tiny_cnn backbone
    import tiny_backbone
    import distill.train.step as step_module

    losses, original = [], step_module.make_train_step

    def recording(*args, **kwargs):
        step = original(*args, **kwargs)

        def run(batch):
            out = step(batch)
            losses.append(float(out["total"]))
            return out
        return run

    step_module.make_train_step = recording
    from distill.train.recipe import recipe_from_dict
    from distill.train.trainer import Trainer

    recipe, run_dir, resume, stop, weights = json.loads(sys.argv[1]), *sys.argv[2:]
    trainer = Trainer(recipe_from_dict(recipe), run_dir, progress=False)
    result = trainer.run(resume == "resume", int(stop) or None)
    np.savez(weights, *trainer.model.get_weights(), *trainer.classifier.get_weights())
    print("REPORT " + json.dumps({"losses": losses, "chief": trainer.chief,
                                  "evals": [bool(h["eval"]) for h in result.history]}))
''')


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def launch(script, recipe, run_dir, resume, stop, weights, tf_config=None):
    """A worker process; its output goes to files (a full pipe would stall the collectives)."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    log = open(f"{weights}.log", "w+")
    arguments = [json.dumps(recipe), str(run_dir), resume, str(stop), str(weights), str(TESTS)]
    process = subprocess.Popen([sys.executable, str(script), *arguments], env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    process.log = log
    return process


def finish(processes, timeout: float = float(os.environ.get("DISTILL_WORKER_TIMEOUT", 300))) -> list[dict]:
    """Reports of every process; when one fails the others (waiting on it) are stopped."""
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
            if any(p.poll() not in (None, 0) for p in processes):
                break
            time.sleep(0.2)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    reports = []
    for process in processes:
        process.log.seek(0)
        out = process.log.read()
        process.log.close()
        lines = [line for line in out.splitlines() if line.startswith("REPORT ")]
        assert process.returncode == 0 and lines, f"exit {process.returncode}: {out[-3000:]}"
        reports.append(json.loads(lines[-1][len("REPORT "):]))
    return reports


def workers(script, recipe, run_dir, resume, stop, tmp_path, tag):
    ports = free_ports(2)
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    return [launch(script, recipe, run_dir, resume, stop, tmp_path / f"{tag}{i}.npz",
                   {"cluster": cluster, "task": {"type": "worker", "index": i}}) for i in range(2)]


def test_two_workers_match_one_process_and_resume_from_the_chief(tmp_path):
    from distill.evals.bins import make_bin

    faces = copy_people(tmp_path / "faces", ["s1", "s2", "s3"])
    make_bin(copy_people(tmp_path / "heldout", ["s4", "s5"]), tmp_path / "heldout.bin", n_pairs=20)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    recipe = {"seed": 1, "data": {"train": str(faces), "augment": "flip", "eval": [str(tmp_path / "heldout.bin")]},
              "model": {"backbone": "tiny_cnn", "embedding_size": 16},
              "loss": {"name": "arcface", "scale": 16.0, "margin": 0.3},
              "train": {"batch_size": 10, "eval_batch_size": 20},
              "stages": [{"epochs": 2, "lr": 0.05}]}
    one = launch(script, {**recipe, "train": {**recipe["train"], "distribute": "none"}},
                 tmp_path / "one", "fresh", 0, tmp_path / "one.npz")
    multi = {**recipe, "train": {**recipe["train"], "distribute": "multi_worker"}}
    first = workers(script, multi, tmp_path / "multi", "fresh", 1, tmp_path, "first")
    single, chief, other = finish([one, *first])
    second = finish(workers(script, multi, tmp_path / "multi", "resume", 0, tmp_path, "second"))

    assert (chief["chief"], other["chief"]) == (True, False)
    assert len(single["losses"]) == 6 and chief["losses"] == other["losses"]
    assert second[0]["losses"] == second[1]["losses"]
    distributed = chief["losses"] + second[0]["losses"]
    assert len(distributed) == 6
    # every step (same initial weights, same global batch) matches one process
    np.testing.assert_allclose(distributed, single["losses"], rtol=1e-4)
    assert chief["evals"] == [True] and other["evals"] == [False]          # evaluated once
    assert (tmp_path / "multi" / "model.keras").exists()
    state = json.loads((tmp_path / "multi" / "checkpoint" / "state.json").read_text())
    assert state["epochs_done"] == 2
    chief_weights, other_weights = np.load(tmp_path / "second0.npz"), np.load(tmp_path / "second1.npz")
    one_weights = np.load(tmp_path / "one.npz")
    assert chief_weights.files == one_weights.files
    for key in chief_weights.files:                     # the workers stay in sync
        np.testing.assert_allclose(other_weights[key], chief_weights[key], atol=1e-6, err_msg=key)
    after_first_epoch, moved = np.load(tmp_path / "first0.npz"), 0
    for key in chief_weights.files:                     # and end where one process ends
        np.testing.assert_allclose(chief_weights[key], one_weights[key], rtol=1e-3, atol=1e-5, err_msg=key)
        moved += not np.allclose(chief_weights[key], after_first_epoch[key], atol=1e-5)
    assert moved > len(chief_weights.files) // 2        # the resumed epoch trained


def test_replica_share_splits_every_global_batch():
    from distill.train.distributed import ReplicaShare

    order = np.arange(25)
    parts = [ReplicaShare(first, 2, 4)(order, 8) for first in (0, 2)]
    assert [b for _, b in parts] == [2, 2]
    assert parts[0][0].tolist() == [0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19]
    assert parts[1][0].tolist() == [4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23]
