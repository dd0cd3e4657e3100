"""The teacher stage end to end on real ORL faces: `distill embed` → HDF5 store → verify."""
from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

from conftest import independent_embeddings, run_console


def read_store(store):
    rows = {"sample_id": [], "label": [], "embedding": []}
    for shard in sorted(store.glob("shard-*.h5")):
        with h5py.File(shard, "r") as handle:
            for key in rows:
                rows[key].append(handle[key][...])
    return {k: np.concatenate(v) for k, v in rows.items()}


def test_embed_cli_writes_complete_store(tmp_path, faces_small, tiny_teacher, cli):
    store = tmp_path / "store"
    code, out, err = cli("embed", "--teacher", tiny_teacher, "--data", faces_small, "--out", store,
                         "--shard-size", "16", "--batch-size", "8", "--no-progress")
    assert code == 0, err
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["num_samples"] == 50 and manifest["complete"] is True
    assert manifest["num_shards"] == 4 and manifest["embedding_dim"] == 32
    assert manifest["teacher"]["sha256"] and manifest["source"]["fingerprint"]
    assert manifest["input_normalization"]["mean"] == 127.5
    assert [s["count"] for s in manifest["shards"].values()] == [16, 16, 16, 2]

    data = read_store(store)
    assert data["embedding"].dtype == np.float16
    assert sorted(data["sample_id"].tolist()) == list(range(50))      # complete and unique
    listing = [line.split("\t") for line in (store / "listing.tsv").read_text().splitlines()]
    folders = [path.split("/")[0] for path, _ in listing]
    expected_labels = [int(name[1:]) - 1 for name in folders]           # s1 → 0 ... s5 → 4
    assert data["label"].tolist() == expected_labels
    assert np.allclose(np.linalg.norm(data["embedding"].astype(np.float32), axis=1), 1.0, atol=2e-3)

    reference = independent_embeddings(tiny_teacher, [faces_small / p for p, _ in listing])
    cosine = np.sum(reference * data["embedding"].astype(np.float32), axis=1)
    assert cosine.min() > 0.999, cosine.min()

    code, out, err = cli("store", "verify", store)
    assert code == 0 and "OK" in out


def test_resume_redoes_only_missing_shards_and_matches(tmp_path, faces_small, tiny_teacher):
    from distill.store.writer import embed

    full, partial = tmp_path / "full", tmp_path / "partial"
    embed(tiny_teacher, faces_small, full, shard_size=16, batch_size=8, progress=False, dtype="float32")
    embed(tiny_teacher, faces_small, partial, shard_size=16, batch_size=8, progress=False, dtype="float32")
    # Simulate a crash: one shard lost before its rename, another left as a temporary file.
    (partial / "shard-00002.h5").unlink()
    shutil.copy(partial / "shard-00001.h5", partial / "shard-00001.h5.tmp-999")
    (partial / "shard-00001.h5").unlink()
    before = (partial / "shard-00000.h5").stat().st_mtime_ns
    embed(tiny_teacher, faces_small, partial, shard_size=16, batch_size=8, progress=False, dtype="float32")
    assert (partial / "shard-00000.h5").stat().st_mtime_ns == before   # complete shard untouched
    assert not list(partial.glob("*.tmp-*"))
    a, b = read_store(full), read_store(partial)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_two_workers_equal_one(tmp_path, faces_small, tiny_teacher):
    from distill.store.verify import verify_store
    from distill.store.writer import embed

    one, two = tmp_path / "one", tmp_path / "two"
    embed(tiny_teacher, faces_small, one, shard_size=10, progress=False, dtype="float32")
    embed(tiny_teacher, faces_small, two, shard_size=10, progress=False, dtype="float32",
          num_workers=2, worker_index=1)
    assert not json.loads((two / "manifest.json").read_text())["complete"]
    embed(tiny_teacher, faces_small, two, shard_size=10, progress=False, dtype="float32",
          num_workers=2, worker_index=0)
    assert verify_store(two) == []
    a, b = read_store(one), read_store(two)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-6)


def test_changed_settings_refused_then_overwrite(tmp_path, faces_small, tiny_teacher):
    from distill.store.manifest import StoreError
    from distill.store.writer import embed

    store = tmp_path / "store"
    embed(tiny_teacher, faces_small, store, shard_size=16, progress=False)
    with pytest.raises(StoreError, match="dtype"):
        embed(tiny_teacher, faces_small, store, shard_size=16, progress=False, dtype="float32")
    embed(tiny_teacher, faces_small, store, shard_size=16, progress=False, dtype="float32", overwrite=True)
    assert json.loads((store / "manifest.json").read_text())["dtype"] == "float32"


def test_verify_catches_corruption(tmp_path, faces_small, tiny_teacher, cli):
    from distill.store.writer import embed

    store = tmp_path / "store"
    embed(tiny_teacher, faces_small, store, shard_size=16, progress=False, dtype="float32")
    with h5py.File(store / "shard-00001.h5", "r+") as handle:
        handle["embedding"][3] = np.nan
        handle["label"][0] = 99
    code, out, err = cli("store", "verify", store)
    assert code == 1
    assert "NaN" in err and "label differs" in err


def test_unreadable_image_stops_naming_file_or_is_skipped(tmp_path, faces_small, tiny_teacher, cli):
    data = tmp_path / "data"
    shutil.copytree(faces_small, data)
    (data / "s2" / "3.png").write_bytes(b"this is not an image")
    code, out, err = cli("embed", "--teacher", tiny_teacher, "--data", data, "--out", tmp_path / "a",
                         "--no-progress", "--shard-size", "16")
    assert code == 2
    assert "s2/3.png" in err and "error:" in err
    code, out, err = cli("embed", "--teacher", tiny_teacher, "--data", data, "--out", tmp_path / "b",
                         "--no-progress", "--shard-size", "16", "--skip-bad")
    assert code == 0, err
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert [s["sample_id"] for s in manifest["skipped"]] == [12]
    code, out, err = cli("store", "verify", tmp_path / "b")
    assert code == 0, err


@pytest.mark.parametrize("case", ["missing", "empty_class", "not_a_model"])
def test_bad_input_one_clear_line(tmp_path, faces_small, tiny_teacher, case):
    data, teacher = faces_small, tiny_teacher
    if case == "missing":
        data, needle = tmp_path / "nowhere", "does not exist"
    elif case == "empty_class":
        data = tmp_path / "data"
        shutil.copytree(faces_small, data)
        (data / "s9").mkdir()
        needle = "s9: class folder holds no images"
    else:
        teacher = tmp_path / "teacher.keras"
        teacher.write_text("not a model")
        needle = "not a loadable Keras model"
    result = run_console("embed", "--teacher", teacher, "--data", data, "--out", tmp_path / "out",
                         "--no-progress")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert str(data if case != "not_a_model" else teacher) in lines[0]
