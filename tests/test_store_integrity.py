"""Issue 14, stores: shard checksums (verify, training, embed reruns), row checks at training,
content fingerprints of the images, damaged manifests and listings, leftover temporaries."""
from __future__ import annotations

import json
import os
import re
import shutil

import h5py
import numpy as np
import pytest
import yaml

from conftest import error_lines


@pytest.fixture(scope="module")
def made(tmp_path_factory, faces_small, tiny_teacher):
    """A copy of 5 ORL people and a float16 store of it (4 shards of 16)."""
    from distill.store.writer import embed

    root = tmp_path_factory.mktemp("integrity")
    shutil.copytree(faces_small, root / "data")
    embed(tiny_teacher, root / "data", root / "store", shard_size=16, progress=False)
    return root


@pytest.fixture()
def store(made, tmp_path):
    return shutil.copytree(made / "store", tmp_path / "store")


def reseal(store, name):
    """Record the shard's current SHA-256, as if it had been written that way."""
    from distill.store.integrity import digest

    manifest = json.loads((store / "manifest.json").read_text())
    manifest["shards"][name]["sha256"] = digest((store / name).read_bytes())
    (store / "manifest.json").write_text(json.dumps(manifest))


def train_recipe(tmp_path, data, store) -> str:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"train": str(data), "store": str(store)},
        "model": {"backbone": "mobilenet", "alpha": 0.25, "embedding_size": 32},
        "distill": {"name": "l2", "weight": 1.0}, "train": {"batch_size": 10},
        "stages": [{"epochs": 1, "lr": 0.01}]}))
    return path


def test_flipped_bit_is_caught_and_a_rerun_of_embed_redoes_the_shard(made, store, tiny_teacher, cli):
    """Fault 4 (checksums) and 7: a one-bit change that keeps the row's norm is caught by verify
    and at training; the same `embed` command redoes that shard only and removes leftovers."""
    from distill.store import Store, StoreError

    with h5py.File(store / "shard-00001.h5", "r") as handle:
        original = handle["embedding"][...]
        offset, row_bytes = handle["embedding"].id.get_offset(), original[0].nbytes
    data = bytearray((store / "shard-00001.h5").read_bytes())
    data[offset + 3 * row_bytes] ^= 0x01                    # lowest mantissa bit of one value
    (store / "shard-00001.h5").write_bytes(bytes(data))
    code, out, err = cli("store", "verify", store)
    assert code == 1 and "shard-00001.h5: does not match the SHA-256 in the manifest" in err, err
    with pytest.raises(StoreError, match=r"shard-00001.h5: does not match the SHA-256"):
        Store(store).load_table()

    (store / ".manifest.json.x1.tmp").write_text("{")         # an interrupted manifest write
    (store / ".shard-00002.h5.x2.tmp").write_bytes(b"HDF")   # an interrupted shard write
    untouched = (store / "shard-00000.h5").stat().st_mtime_ns
    code, out, err = cli("embed", "--teacher", tiny_teacher, "--data", made / "data", "--out", store,
                         "--shard-size", 16, "--no-progress")
    assert code == 0 and "nothing to do" not in out + err, err
    assert cli("store", "verify", store)[0] == 0
    assert (store / "shard-00000.h5").stat().st_mtime_ns == untouched
    with h5py.File(store / "shard-00001.h5", "r") as handle:
        np.testing.assert_array_equal(handle["embedding"][...], original)
    assert not list(store.glob("*.tmp"))


@pytest.mark.parametrize("damage, mode", [("nan", "memory"), ("norm", "pread"), ("nan", "mmap")])
def test_bad_rows_refused_at_training_naming_shard_and_sample(made, store, tmp_path, cli, damage, mode):
    """Fault 4 (rows): rows that were wrong when written (checksum intact) stop training in one
    line naming the shard and the sample, in every ``data.targets`` mode (whole table, or rows
    read per batch), not as a NaN loss later."""
    name, row, sample = ("shard-00001.h5", 3, 19) if damage == "nan" else ("shard-00002.h5", 2, 34)
    with h5py.File(store / name, "r+") as handle:
        values = handle["embedding"][row]
        handle["embedding"][row] = np.nan if damage == "nan" else values * 1.5
    reseal(store, name)
    code, out, err = cli("train", "--recipe", train_recipe(tmp_path, made / "data", store),
                         "--run-dir", tmp_path / "run", "--no-progress", "--set", f"data.targets={mode}")
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1, err
    what = "NaN/inf" if damage == "nan" else "not unit-norm"
    assert re.search(rf"{name}: .*{what}.*sample_id \[?{sample}\b", lines[0]), lines[0]


@pytest.mark.parametrize("mode", ["memory", "pread"])
@pytest.mark.parametrize("sealed", [True, False])
def test_unreadable_shard_at_training_names_it(made, store, sealed, mode):
    """Fault 6: a truncated shard is refused naming the shard (with or without a checksum),
    whether training loads the whole table or reads rows per batch."""
    from distill.data.sources import open_source
    from distill.store import Store, StoreError
    from distill.train.targets import open_targets

    (store / "shard-00002.h5").write_bytes((store / "shard-00002.h5").read_bytes()[:3000])
    if not sealed:   # a store written before checksums
        manifest = json.loads((store / "manifest.json").read_text())
        del manifest["shards"]["shard-00002.h5"]["sha256"]
        (store / "manifest.json").write_text(json.dumps(manifest))
    needle = "does not match the SHA-256" if sealed else "not a readable shard"
    with pytest.raises(StoreError, match=rf"shard-00002.h5: {needle}.*distill embed") as info:
        open_targets(Store(store), open_source(made / "data"), mode)
    assert "\n" not in str(info.value)


def test_changed_pixels_are_refused(made, store, tmp_path, tiny_teacher, cli):
    """Fault 4 (content): other pixels under the same names are refused by training and by an
    embed rerun; with --strict even a change that keeps size and modification time."""
    from distill.data.sources import open_source
    from distill.store import Store, StoreError
    from distill.train.pipeline import TeacherTargets

    data = shutil.copytree(made / "data", tmp_path / "data")   # copies keep size and mtime
    TeacherTargets(Store(store), open_source(data))             # the same images: accepted
    shutil.copyfile(data / "s3" / "1.png", data / "s2" / "1.png")
    code, out, err = cli("train", "--recipe", train_recipe(tmp_path, data, store), "--run-dir",
                         tmp_path / "run", "--no-progress")
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and f"the images of {data} changed" in lines[0], err
    assert "stat fingerprint differs: sizes or modification times" in lines[0] and "--strict" in lines[0]
    code, out, err = cli("embed", "--teacher", tiny_teacher, "--data", data, "--out", store,
                         "--shard-size", 16, "--no-progress")
    assert code == 2 and "changed" in err and "--overwrite" in err, err

    strict = tmp_path / "strict"
    assert cli("embed", "--teacher", tiny_teacher, "--data", data, "--out", strict, "--shard-size", 16,
               "--no-progress", "--strict")[0] == 0
    image = data / "s4" / "5.png"
    stat, raw = image.stat(), bytearray(image.read_bytes())
    raw[-20] ^= 0xFF
    image.write_bytes(bytes(raw))
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(StoreError, match="sha256 fingerprint differs"):
        TeacherTargets(Store(strict), open_source(data))


@pytest.mark.parametrize("damage, needle", [
    ({"shard_size": 0}, "field 'shard_size' must be a whole number ≥ 1"),
    ({"shards": ["shard-00000.h5"]}, "field 'shards' must be an object"),
    ({"num_samples": "50"}, "field 'num_samples' must be a whole number"),
    ({"source": {"listing": 7}}, "field 'source' must be an object"),
    ("not json", "manifest is not valid JSON"),
    ("no tab", "listing.tsv:2: expected 'path<TAB>label'"),
    ("bad label", "listing.tsv:1: expected 'path<TAB>label'"),
])
def test_damaged_manifest_or_listing_is_reported_by_verify(store, cli, damage, needle):
    """Fault 6: store verify reports damaged files (no ZeroDivisionError/TypeError/IndexError)."""
    if damage in ("no tab", "bad label"):
        lines = (store / "listing.tsv").read_text().splitlines()
        lines[0 if damage == "bad label" else 1] = "s1/1.png\tone" if damage == "bad label" else "s1/2.png"
        (store / "listing.tsv").write_text("\n".join(lines) + "\n")
    elif damage == "not json":
        (store / "manifest.json").write_bytes(b"\xff{")
    else:
        manifest = json.loads((store / "manifest.json").read_text())
        (store / "manifest.json").write_text(json.dumps({**manifest, **damage}))
    code, out, err = cli("store", "verify", store)
    assert code == 1 and needle in err, err
