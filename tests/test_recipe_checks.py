"""Every misconfiguration is refused before any work, in one line naming the key path, by
``distill train --check`` and ``distill train`` alike; and one registry type serves every
pluggable part."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ORL

BASE = {
    "name": "c", "data": {"train": str(ORL), "eval": []},
    "model": {"backbone": "mobilenet", "alpha": 0.25, "embedding_size": 8},
    "loss": {"name": "arcface", "scale": 16.0, "margin": 0.3},
    "train": {"batch_size": 8},
    "stages": [{"epochs": 1, "lr": 0.1}],
}

CASES = [  # (key path = value, the message's start after "error: RECIPE: ")
    ("data.trian=x", "unknown key 'data.trian'; did you mean 'data.train'?"),
    ("model.dropuot=0.1", "unknown key 'model.dropuot'; did you mean 'model.dropout'?"),
    ("optimizer.momentun=0.9", "unknown key 'optimizer.momentun'; did you mean 'optimizer.momentum'?"),
    ("schedule.warmup=3", "unknown key 'schedule.warmup'; did you mean 'schedule.warmup_steps'?"),
    ("train.batchsize=8", "unknown key 'train.batchsize'; did you mean 'train.batch_size'?"),
    ("stages.0.lrr=0.1", "unknown key 'stages.0.lrr'; did you mean 'stages.0.lr'?"),
    ("loss.scal=32", "loss: loss 'arcface' has no parameter 'scal' (did you mean scale?)"),
    ("distill.wieght=64", "distill: loss 'l2' has no parameter 'wieght' (did you mean weight?)"),
    ("triplet.margn=0.2", "triplet: loss 'triplet_batch_hard' has no parameter 'margn' (did you mean margin?)"),
    ("terms.x.name=rkd_distanse", "terms.x.name: unknown loss 'rkd_distanse' (did you mean rkd_distance"),
    ("loss.name=arcfase", "loss.name: unknown classification loss 'arcfase' (did you mean arcface"),
    ("optimizer.name=sgdd", "optimizer.name: unknown optimizer 'sgdd' (did you mean sgd"),
    ("schedule.name=cosine", "schedule.name: unknown lr schedule 'cosine' (did you mean cosine_restarts"),
    ("model.backbone=mobilnet", "model.backbone: unknown backbone 'mobilnet' (did you mean mobilenet"),
    ("model.output_layer=GDCC", "model.output_layer: unknown output layer 'GDCC' (did you mean GDC"),
    ("data.augment=flipp", "data.augment: unknown augmentation 'flipp' (did you mean flip"),
    ("train.distribute=mirored", "train.distribute: unknown distribution strategy 'mirored' (did you mean mirrored"),
    ("stages.0.lr=0", "stages.0.lr must be > 0, got 0"),
    ("model.dropout=1", "model.dropout must be in [0, 1), got 1"),
    ("distill.weight=-2", "distill.weight must be a number ≥ 0, got -2"),
    ("loss.margin=-0.1", "loss.margin = -0.1 in stage 0 is out of range (must be ≥ 0)"),
    ("loss.scale=0", "loss.scale = 0 in stage 0 is out of range (must be > 0)"),
    ("stages.0.epochs=0", "stages.0.epochs is required and must be ≥ 1"),
    ("train.batch_size=0", "train.batch_size must be ≥ 1, got 0"),
    ("triplet.weight=1", "train.batch_size 8 must be a multiple of data.images_per_identity 3"),
    ("data.sampler=balanced", "data.sampler: unknown sampler 'balanced'"),
    ("train.images_per_identity=4", "train.images_per_identity is now data.images_per_identity"),
    ("train.best_by=lfw", "train.best_by 'lfw' is not an evaluation set; data.eval gives: (none)"),
    ("data.train=/no/such/folder", "data.train: /no/such/folder does not exist"),
    ("data.eval=[/no/lfw.bin]", "data.eval.0: /no/lfw.bin does not exist"),
    ("distill.weight=4", "a stage has a distillation term but data.store is not set"),
    ("model.alpha=0.5", None),   # valid: the control case
]


def recipe_file(tmp_path, override):
    base = yaml.safe_load(yaml.safe_dump(BASE))
    if override.startswith("triplet"):
        base.setdefault("data", {})["images_per_identity"] = 3
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


@pytest.mark.parametrize("override, message", CASES, ids=[c[0] for c in CASES])
def test_misconfiguration_is_refused_before_any_work(override, message, tmp_path, cli):
    path = recipe_file(tmp_path, override)
    for extra in (["--check"], []):
        if message is None and not extra:
            continue        # the valid control recipe is only checked, not trained
        code, out, err = cli("train", "--recipe", path, "--set", override, "--run-dir", tmp_path / "run", *extra)
        if message is None:
            assert code == 0 and "OK" in out and "parameters" in out, err
            continue
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, err
        assert lines[0].startswith(f"error: {path}: {message}"), lines[0]
        assert not (tmp_path / "run").exists()


def test_refused_in_a_fresh_process_in_under_5_s_without_tensorflow(tmp_path):
    path = recipe_file(tmp_path, "")
    code = ("import sys, time; t = time.time(); from distill.cli import main; "
            f"sys.argv = ['distill', 'train', '--recipe', {str(path)!r}, '--set', 'distill.wieght=64']; "
            "exec('try:\\n main()\\nexcept SystemExit as e:\\n print(e.code, round(time.time() - t, 2), "
            "\"tensorflow\" in sys.modules)')")
    started = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    code_, seconds, tf_loaded = out.stdout.split()
    assert code_ == "2" and tf_loaded == "False" and "wieght" in out.stderr
    assert float(seconds) < 5 and time.time() - started < 15


def test_one_registry_type_serves_every_pluggable_part():
    from distill.align_faces import DETECTORS
    from distill.data.sources import SOURCES
    from distill.export import EXPORTERS
    from distill.losses import LOSSES
    from distill.models.backbones import BACKBONES
    from distill.models.heads import OUTPUT_LAYERS
    from distill.registry import Registry
    from distill.train.optim import OPTIMIZERS
    from distill.train.pipeline import AUGMENTATIONS
    from distill.train.schedules import SCHEDULES
    from distill.train.step import STRATEGIES
    from teachers import TEACHER_LOADERS

    registries = {"losses": LOSSES, "optimizers": OPTIMIZERS, "schedules": SCHEDULES, "backbones": BACKBONES,
                  "output layers": OUTPUT_LAYERS, "augmentations": AUGMENTATIONS, "strategies": STRATEGIES,
                  "sources": SOURCES, "teachers": TEACHER_LOADERS, "exporters": EXPORTERS, "detectors": DETECTORS}
    for what, registry in registries.items():
        assert isinstance(registry, Registry) and len(registry) >= 2, what
        name = registry.names()[0]
        assert callable(registry.builder(name)) and isinstance(registry.parameters(name), dict), what
        with pytest.raises(ValueError, match=f"unknown {registry.what} 'zzz'; available: "):
            registry.builder("zzz")
    assert BACKBONES.parameters("mobilenet") == {"alpha": 1.0}
    assert LOSSES.parameters("cm1")["m3"] == 0.2 and LOSSES.parameters("combined_margin")["m2"] == 0.3
    with pytest.raises(ValueError, match=r"loss 'ekd' has no parameter 'temp' \(did you mean temperature\?\)"):
        LOSSES.check("ekd", {"temp": 1})


def test_signatures_are_read_without_importing_the_module():
    code = ("import sys; from distill.losses import LOSSES; "
            "print(LOSSES.parameters('magface')['u_a'], 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["110.0", "False"], out.stderr
