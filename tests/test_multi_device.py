"""Several devices: the teacher spreads a batch over replicas (MirroredStrategy) and gives
the same embeddings as one device. Runs in a subprocess with 2 logical CPU devices."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

TESTS = Path(__file__).resolve().parent


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


def test_two_replicas_match_one_device_and_mixed_precision_trains(tmp_path, faces_small):
    """MirroredStrategy on 2 logical CPUs with synchronised BN: four steps give the single-device
    losses on the same global batches and the same weights (network: ``tiny_cnn``, see
    tests/tiny_backbone.py for why not a deep one); a whole replicated mixed-precision MobileNet
    epoch trains with finite losses."""
    code = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        import tiny_backbone
        from distill.train.pipeline import training_dataset
        from distill.train.recipe import recipe_from_dict
        from distill.train.stages import resolve_stages
        from distill.train.trainer import Trainer, train
        base = {{"data": {{"train": {str(faces_small)!r}, "augment": "none"}},
                "model": {{"backbone": "tiny_cnn", "embedding_size": 16, "dropout": 0.0}},
                "loss": {{"name": "arcface", "scale": 16.0, "margin": 0.3}},
                "train": {{"batch_size": 10}}, "stages": [{{"epochs": 1, "lr": 0.05}}]}}
        two = {{"distribute": "mirrored", "devices": ["/cpu:0", "/cpu:1"]}}
        first = {{}}
        for name, extra in {{"one": {{"distribute": "none"}}, "two": two}}.items():
            recipe = recipe_from_dict(dict(base, train=dict(base["train"], **extra)))
            trainer = Trainer(recipe, {str(tmp_path)!r} + "/step_" + name, progress=False)
            trainer._setup()
            assert trainer.strategy.num_replicas_in_sync == (2 if name == "two" else 1)
            _, _, step = trainer._build_stage(resolve_stages(recipe)[0])
            data = training_dataset(trainer.source, trainer.sample_ids, 10, 0, 0, "none")
            if name == "two":
                data = trainer.strategy.experimental_distribute_dataset(data)
            batches = iter(data)
            losses = [float(step(next(batches))["total"]) for _ in range(4)]
            first[name] = (losses, trainer.model.get_weights() + trainer.classifier.get_weights())
        print("losses", first["one"][0], first["two"][0])
        np.testing.assert_allclose(first["two"][0], first["one"][0], rtol=1e-4)
        for single, replicated in zip(first["one"][1], first["two"][1]):
            np.testing.assert_allclose(replicated, single, rtol=1e-3, atol=1e-5)
        mobilenet = dict(base, model={{"alpha": 0.25, "embedding_size": 16, "dropout": 0.0}})
        for name, extra in {{"mirrored_mixed": dict(two, mixed_precision=True)}}.items():
            result = train(dict(mobilenet, train=dict(base["train"], **extra)), {str(tmp_path)!r} + "/" + name,
                           progress=False)
            assert np.isfinite(result.history[0]["loss"]["total"]), result.history
        print("OK")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "OK" in result.stdout
