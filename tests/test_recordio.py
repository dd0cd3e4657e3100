"""MXNet RecordIO sets read without MXNet: a writer written here from the format spec,
real ORL images (PNG and JPEG), multi-part records, and `distill embed` on the result."""
from __future__ import annotations

import io
import struct

import numpy as np
import pytest

import distill.data.recordio  # noqa: F401  (registers the "recordio" source)
from conftest import ORL

MAGIC = 0xCED7230A


class SpecWriter:
    """RecordIO writer following the dmlc framing: magic, lrec (cflag << 29 | length),
    payload, zero padding; payloads holding the magic at a 4-byte boundary are split."""

    def __init__(self, rec_path, idx_path):
        self.rec = open(rec_path, "wb")
        self.idx = open(idx_path, "w")
        self.split_records = 0

    def write(self, key: int, payload: bytes) -> None:
        self.idx.write(f"{key}\t{self.rec.tell()}\n")
        magic = struct.pack("<I", MAGIC)
        cuts = [i for i in range(0, len(payload) - 3, 4) if payload[i:i + 4] == magic]
        pieces, start = [], 0
        for cut in cuts:
            pieces.append(payload[start:cut])
            start = cut + 4
        pieces.append(payload[start:])
        self.split_records += len(pieces) > 1
        for n, piece in enumerate(pieces):
            if len(pieces) == 1:
                cflag = 0
            else:
                cflag = 1 if n == 0 else (3 if n == len(pieces) - 1 else 2)
            self.rec.write(struct.pack("<II", MAGIC, (cflag << 29) | len(piece)))
            self.rec.write(piece + b"\0" * (-len(piece) % 4))

    def close(self):
        self.rec.close()
        self.idx.close()


def ir_payload(label, image: bytes, id_=0, id2=0) -> bytes:
    """IRHeader ``<IfQQ``; a list label is written as flag=len floats after the header."""
    if isinstance(label, (list, tuple)):
        return struct.pack("<IfQQ", len(label), 0.0, id_, id2) + struct.pack(f"<{len(label)}f", *label) + image
    return struct.pack("<IfQQ", 0, float(label), id_, id2) + image


def orl_bytes(person: int, index: int, jpeg: bool) -> bytes:
    raw = (ORL / f"s{person}" / f"{index}.png").read_bytes()
    if not jpeg:
        return raw
    from PIL import Image

    buffer = io.BytesIO()
    Image.open(io.BytesIO(raw)).convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_insightface_set(folder, people=(1, 2, 3, 4), per_person=5, header=True):
    """train.rec/.idx/property in InsightFace layout; returns the expected [(key, label, bytes)]."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = SpecWriter(folder / "train.rec", folder / "train.idx")
    expected, key = [], 1 if header else 0
    first_key = key
    num_images = len(people) * per_person
    if header:
        writer.write(0, ir_payload([num_images + 1.0, num_images + 1.0 + len(people)], b""))
    for label, person in enumerate(people):
        for index in range(1, per_person + 1):
            image = orl_bytes(person, index, jpeg=index % 2 == 0)
            if index == 1:      # flag > 0: label array (first entry is the class)
                payload = ir_payload([float(label), 7.0], image, id_=key)
            elif index == 3:    # the magic word in id and id2 → a 3-part record
                payload = ir_payload(label, image, id_=MAGIC, id2=MAGIC)
            else:
                payload = ir_payload(label, image, id_=key)
            writer.write(key, payload)
            expected.append((key, label, image))
            key += 1
    if header:  # identity records: label [first image key, end image key)
        for label in range(len(people)):
            start = first_key + label * per_person
            writer.write(key, ir_payload([float(start), float(start + per_person)], b""))
            key += 1
    writer.close()
    assert writer.split_records == len(people)
    (folder / "property").write_text(f"{len(people)},112,112")
    return expected


@pytest.fixture(scope="module")
def rec_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rec") / "faces_orl_112x112"
    return folder, write_insightface_set(folder)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_reader_reassembles_records_like_mxnet(rec_dir):
    from distill.data.recordio import RecordIOReader, unpack

    folder, expected = rec_dir
    with RecordIOReader(folder / "train.rec", folder / "train.idx") as reader:
        assert reader.keys.tolist() == list(range(0, 25))
        header, body = unpack(reader.read(0))
        assert header.flag == 2 and header.label.tolist() == [21.0, 25.0] and body == b""
        for key, label, image in expected:
            header, body = unpack(reader.read(key))
            assert body == image
            if (key - 1) % 5 == 0:     # flag > 0 → the label is the float32 array
                assert header.flag == 2 and header.label.dtype == np.float32
                assert header.label.tolist() == [label, 7.0]
            else:
                assert header.flag == 0 and header.label == label
            if (key - 1) % 5 == 2:     # the split record gets its magic words back
                assert header.id == MAGIC and header.id2 == MAGIC
        header, _ = unpack(reader.read(22))
        assert header.label.tolist() == [6.0, 11.0]


def test_source_listing_labels_and_parallel_dataset(rec_dir, cache_dir):
    from distill.data.sources import open_source

    folder, expected = rec_dir
    for path in (folder, folder / "train.rec"):
        source = open_source(path)
        assert source.kind == "recordio" and len(source) == 20
        assert source.labels.tolist() == [label for _, label, _ in expected]
        assert source.class_names == ["0", "1", "2", "3"] and source.num_classes == 4
        assert [source.read_encoded(i) for i in range(20)] == [image for _, _, image in expected]
    assert list(cache_dir.glob("recordio/*.npz"))          # labels scanned once, then cached
    assert open_source(folder).fingerprint() == source.fingerprint()
    assert next(source.listing_lines()) == "train.rec:1\t0\n"
    assert "record 3" in source.describe(2)

    order = np.random.default_rng(0).permutation(np.repeat(np.arange(20), 3))  # training-like order
    items = list(source.encoded_dataset(order, chunk=4, parallel=3).as_numpy_iterator())
    assert [int(i) for i, _ in items] == order.tolist()
    assert all(data == expected[int(i)][2] for i, data in items)


def test_plain_set_without_header_and_bad_index(tmp_path):
    from distill.data.recordio import open_recordio
    from distill.data.sources import DataError

    expected = write_insightface_set(tmp_path / "plain", people=(5, 6), per_person=3, header=False)
    source = open_recordio(tmp_path / "plain")
    assert source.keys.tolist() == [k for k, _, _ in expected] == list(range(6))
    assert source.labels.tolist() == [0, 0, 0, 1, 1, 1]

    (tmp_path / "plain" / "train.idx").write_text("0\t0\n1\t6\n")
    with pytest.raises(DataError, match=r"train\.rec: no record at offset 6"):
        open_recordio(tmp_path / "plain" / "train.rec").read_encoded(1)
    (tmp_path / "plain" / "train.idx").write_text("0\tzero\n")
    with pytest.raises(DataError, match=r"train\.idx: expected integer"):
        open_recordio(tmp_path / "plain")


def test_embed_cli_on_recordio_and_rec2folder(tmp_path, rec_dir, cli):
    import h5py
    import keras

    from distill.data.sources import open_folder

    folder, expected = rec_dir
    keras.utils.set_random_seed(0)
    inputs = keras.Input((112, 112, 3))
    x = keras.layers.AveragePooling2D(8)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(16)(keras.layers.Flatten()(x)))
    model.save(tmp_path / "teacher.keras")

    store = tmp_path / "store"
    code, out, err = cli("embed", "--teacher", tmp_path / "teacher.keras", "--data", folder,
                         "--out", store, "--shard-size", "8", "--batch-size", "6", "--no-progress")
    assert code == 0, err
    ids, labels = [], []
    for shard in sorted(store.glob("shard-*.h5")):
        with h5py.File(shard, "r") as handle:
            ids.extend(handle["sample_id"][...].tolist())
            labels.extend(handle["label"][...].tolist())
    assert ids == list(range(20)) and labels == [label for _, label, _ in expected]
    assert (store / "listing.tsv").read_text().splitlines()[4] == "train.rec:5\t0"
    assert cli("store", "verify", store)[0] == 0

    images = tmp_path / "images"
    code, out, err = cli("convert", "rec2folder", folder, images, "--no-progress")
    assert code == 0 and "20 images written" in out, err
    tree = open_folder(images)
    assert tree.labels.tolist() == [label for _, label, _ in expected]
    assert [tree.read_encoded(i) for i in range(20)] == [image for _, _, image in expected]
    assert sorted({p.rsplit(".", 1)[1] for p in tree.paths}) == ["jpg", "png"]
    (images / "2" / "12.jpg").unlink()                     # interrupted run → only that one redone
    code, out, _ = cli("convert", "rec2folder", folder, images, "--no-progress")
    assert "1 images written, 19 already present" in out


def test_train_with_distillation_from_recordio(tmp_path, rec_dir):
    """The training pipeline reads RecordIO too: images and stored embeddings joined by id."""
    import numpy as np

    from distill.data.sources import open_source
    from distill.store import Store
    from distill.store.writer import embed
    from distill.train.pipeline import TeacherTargets, training_dataset
    from distill.train.trainer import train
    from distill.models import build_embedding_model

    folder, expected = rec_dir
    teacher = build_embedding_model("mobilenet", embedding_size=16, alpha=0.25)
    teacher.save(tmp_path / "teacher.keras")
    embed(tmp_path / "teacher.keras", folder, tmp_path / "store", shard_size=8, progress=False)
    source = open_source(folder)
    targets = TeacherTargets(Store(tmp_path / "store"), source).build()
    table, _ = Store(tmp_path / "store").load_table()
    seen = []
    for batch in training_dataset(source, np.arange(len(source)), 5, 0, 0, "none", targets):
        ids = batch["sample_id"].numpy()
        seen.extend(ids.tolist())
        np.testing.assert_array_equal(batch["label"].numpy(), source.labels[ids])
        np.testing.assert_array_equal(batch["teacher"].numpy(), table[ids])
    assert sorted(seen) == list(range(len(expected)))
    recipe = {"data": {"train": str(folder), "store": str(tmp_path / "store")},
              "model": {"alpha": 0.25, "embedding_size": 16},
              "distill": {"name": "l2", "weight": 4.0}, "train": {"batch_size": 5},
              "stages": [{"epochs": 1, "lr": 0.01}]}
    result = train(recipe, tmp_path / "run", progress=False)
    assert np.isfinite(result.history[0]["loss"]["distill"])
