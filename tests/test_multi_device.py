"""Several devices: the teacher spreads a batch over replicas (MirroredStrategy) and gives
the same embeddings as one device. Runs in a subprocess with 2 logical CPU devices."""
from __future__ import annotations

import subprocess
import sys
import textwrap


def test_keras_teacher_on_two_replicas_matches_one(tiny_teacher, faces_small):
    code = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from distill.data.images import read_image
        from pathlib import Path
        from teachers.keras_teacher import KerasTeacher
        images = np.stack([read_image(p) for p in sorted(Path({str(faces_small)!r}).glob("s1/*.png"))][:7])
        one = KerasTeacher({str(tiny_teacher)!r}).embed(images).numpy()
        two = KerasTeacher({str(tiny_teacher)!r}, devices=["/cpu:0", "/cpu:1"])
        assert two.strategy.num_replicas_in_sync == 2
        out = two.embed(images).numpy()
        np.testing.assert_allclose(out, one, rtol=1e-4, atol=1e-5)
        print("OK", out.shape)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "OK (7, 32)" in result.stdout


def test_training_on_two_replicas_and_mixed_precision(tmp_path, faces_small):
    """A recipe trains under MirroredStrategy (2 logical CPUs) and under mixed precision."""
    code = textwrap.dedent(f"""
        import json, numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from distill.train.trainer import train
        base = {{"data": {{"train": {str(faces_small)!r}}},
                "model": {{"alpha": 0.25, "embedding_size": 16}},
                "loss": {{"name": "arcface", "scale": 16.0, "margin": 0.3}},
                "train": {{"batch_size": 10}}, "stages": [{{"epochs": 2, "lr": 0.05}}]}}
        mirrored = {{"distribute": "mirrored", "devices": ["/cpu:0", "/cpu:1"]}}
        for name, extra in (("mirrored", mirrored),
                            ("mixed", {{"distribute": "none", "mixed_precision": True}})):
            recipe = dict(base, train=dict(base["train"], **extra))
            result = train(recipe, {str(tmp_path)!r} + "/" + name, progress=False)
            losses = [h["loss"]["total"] for h in result.history]
            assert losses[-1] < losses[0], losses
            assert all(np.isfinite(losses)), losses
            print(name, losses)
        print("OK")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK" in result.stdout
