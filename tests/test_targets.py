"""Targets read per batch from the shards (pread, mmap) equal the in-memory table's: plain and
flipped rows, skipped samples, a conditioned store, non-contiguous (chunked, compressed) shards."""
from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

from conftest import copy_people


@pytest.fixture(scope="module")
def stores(tmp_path_factory, tiny_teacher):
    """A flip store with one unreadable (skipped) image, and a centred copy of it."""
    from distill.store.conditioning import fit_conditioning
    from distill.store.writer import embed

    root = tmp_path_factory.mktemp("targets")
    train = copy_people(root / "train", ["s1", "s2", "s3"])
    (train / "s2" / "0_bad.png").write_bytes(b"not an image")
    embed(tiny_teacher, train, root / "plain", shard_size=8, flip=True, progress=False, skip_bad=True)
    shutil.copytree(root / "plain", root / "centred")
    fit_conditioning(root / "centred", "whiten")
    return root


def _both(store_dir, source, mode, ids, flipped):
    import tensorflow as tf

    from distill.store import Store
    from distill.train.pipeline import TeacherTargets
    from distill.train.targets import open_targets

    memory = TeacherTargets(Store(store_dir), source).build()
    other = open_targets(Store(store_dir), source, mode)
    assert np.array_equal(other.present, memory.present)
    args = tf.constant(ids), tf.constant(flipped)
    return memory.gather(*args).numpy(), other.gather(*args).numpy()


@pytest.mark.parametrize("mode", ["pread", "mmap"])
@pytest.mark.parametrize("store", ["plain", "centred"])
def test_shard_targets_equal_the_in_memory_table(stores, mode, store):
    from distill.data.sources import open_source

    source = open_source(stores / "train")
    from distill.store import Store

    assert len(Store(stores / store).manifest.skipped) == 1
    rng = np.random.default_rng(0)
    _, ok = Store(stores / store).load_table()
    ids = rng.permutation(np.flatnonzero(ok))
    flipped = rng.random(len(ids)) < 0.5
    memory, read = _both(stores / store, source, mode, ids, flipped)
    assert read.dtype == np.float32 and read.shape == (len(ids), 32)
    np.testing.assert_array_equal(read, memory)
    assert not np.array_equal(memory[flipped], _both(stores / store, source, mode, ids[flipped],
                                                     np.zeros(flipped.sum(), bool))[1])


def test_non_contiguous_shards_are_read_too(stores, tmp_path):
    """A shard rewritten chunked and gzip-compressed (no byte offset to read at) is held in memory."""
    from distill.data.sources import open_source

    store_dir = tmp_path / "store"
    shutil.copytree(stores / "plain", store_dir)
    shard = store_dir / "shard-00001.h5"
    with h5py.File(shard, "r") as handle:
        data = {k: handle[k][...] for k in handle}
        attrs = dict(handle.attrs)
    with h5py.File(shard, "w") as handle:
        for key, value in data.items():
            handle.create_dataset(key, data=value, chunks=True, compression="gzip")
        handle.attrs.update(attrs)
    from distill.store.integrity import file_digest

    manifest = json.loads((store_dir / "manifest.json").read_text())   # a deliberate rewrite
    manifest["shards"][shard.name]["sha256"] = file_digest(shard)
    (store_dir / "manifest.json").write_text(json.dumps(manifest))
    source = open_source(stores / "train")
    from distill.store import Store

    _, ok = Store(store_dir).load_table()
    ids = np.flatnonzero(ok)
    flipped = np.arange(len(ids)) % 3 == 0
    memory, read = _both(store_dir, source, "pread", ids, flipped)
    np.testing.assert_array_equal(read, memory)


def test_writer_shards_are_contiguous(stores):
    """Shards from `distill embed` have a byte offset per embedding dataset (what pread reads)."""
    for shard in sorted((stores / "plain").glob("shard-*.h5")):
        with h5py.File(shard, "r") as handle:
            for name in ("embedding", "embedding_flip"):
                dataset = handle[name]
                assert dataset.chunks is None and dataset.compression is None
                assert dataset.id.get_offset() is not None


def test_training_pipeline_with_read_targets(stores):
    """The training input pipeline gives the same teacher targets with pread as with memory."""
    from distill.data.sources import open_source
    from distill.store import Store
    from distill.train.pipeline import training_dataset
    from distill.train.targets import open_targets

    source = open_source(stores / "train")
    batches = {}
    for mode in ("memory", "pread"):
        targets = open_targets(Store(stores / "centred"), source, mode)
        ids = np.flatnonzero(targets.present)
        batches[mode] = [b["teacher"].numpy() for b in training_dataset(source, ids, 6, 1, 0, "flip", targets)]
    assert len(batches["pread"]) == 5
    for a, b in zip(batches["memory"], batches["pread"]):
        np.testing.assert_array_equal(a, b)


def test_auto_mode_and_bad_modes(stores):
    from distill.data.sources import open_source
    from distill.store import Store
    from distill.train import targets as module
    from distill.train.recipe import RecipeError, recipe_from_dict

    source = open_source(stores / "train")
    store = Store(stores / "plain")
    assert module.table_bytes(store.manifest) == 31 * 32 * 2 * 2
    assert type(module.open_targets(store, source)).__name__ == "TeacherTargets"
    saved = module.AUTO_MEMORY_BYTES
    try:
        module.AUTO_MEMORY_BYTES = 100
        assert isinstance(module.open_targets(store, source), module.ShardTargets)
    finally:
        module.AUTO_MEMORY_BYTES = saved
    with pytest.raises(ValueError, match="data.targets must be one of auto, memory, pread, mmap"):
        module.open_targets(store, source, "disk")
    with pytest.raises(RecipeError, match="r.yaml: data.targets must be one of"):
        recipe_from_dict({"data": {"train": "x", "targets": "disk"}, "stages": [{"epochs": 1}]}, "r.yaml")
