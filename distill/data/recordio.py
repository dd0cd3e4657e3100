"""MXNet RecordIO datasets (InsightFace ``train.rec`` + ``train.idx``), read without MXNet.

Framing (dmlc-core): every part is ``uint32 magic 0xced7230a``, ``uint32 lrec`` (lower 29
bits = length, upper 3 bits = cflag), the payload, zero padding to 4 bytes. A payload that
contains the magic word at a 4-byte boundary is split there: cflag 1 starts, 2 continues,
3 ends a record, and the reader puts the magic word back between parts. ``.idx`` lines are
``key<TAB>offset``.

A record payload starts with ``IRHeader`` (``<IfQQ``: flag, label, id, id2). When
``flag > 0``, ``flag`` float32 labels follow and become the label array (as in
``mxnet.recordio.unpack``); the encoded image comes next. InsightFace sets start with a
header record 0 whose label ``[a, b]`` says images are keys ``1 .. a-1`` and identity
records are keys ``a .. b-1`` (record 0 is taken as that header when it holds a label array
and no image, as InsightFace writes it); otherwise every key is an image. An image's class is its
label (the first entry of a label array), exactly as InsightFace's reader takes it.
"""
from __future__ import annotations

import hashlib
import logging
import os
import struct
import zipfile
from collections import namedtuple
from pathlib import Path

import numpy as np

from distill.data.sources import DataError, ListedSource, find_rec

log = logging.getLogger(__name__)

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LENGTH_MASK = (1 << 29) - 1
IR_FORMAT = "<IfQQ"
IR_SIZE = struct.calcsize(IR_FORMAT)

IRHeader = namedtuple("IRHeader", ["flag", "label", "id", "id2"])


class RecordIOReader:
    """Random access to the records of a ``.rec`` file through its ``.idx`` (thread-safe).

    ``keys`` are in ``.idx`` order (as MXNet's ``MXIndexedRecordIO.keys``); ``sorted_keys``
    sorted. Reads use ``os.pread`` on one descriptor, so threads can share a reader.
    """

    def __init__(self, rec_path, idx_path=None):
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path else self.rec_path.with_suffix(".idx")
        for path in (self.rec_path, self.idx_path):
            if not path.is_file():
                raise DataError(f"{path}: RecordIO file does not exist")
        self.keys, self._offsets = _read_index(self.idx_path)
        if np.all(np.diff(self.keys) > 0):  # the usual case: no sorted copies
            self.sorted_keys, self._sorted_offsets = self.keys, self._offsets
        else:
            order = np.argsort(self.keys, kind="stable")
            self.sorted_keys, self._sorted_offsets = self.keys[order], self._offsets[order]
        if len(self.keys) and np.any(np.diff(self.sorted_keys) == 0):
            raise DataError(f"{self.idx_path}: duplicate keys in the index")
        self.size = self.rec_path.stat().st_size
        if len(self.keys) and self._offsets.max() >= self.size:
            raise DataError(f"{self.idx_path}: offsets point past the end of {self.rec_path} "
                            f"({self.size} bytes); is it the index of this file?")
        self._fd = os.open(self.rec_path, os.O_RDONLY)

    def __contains__(self, key) -> bool:
        return bool(self.has_keys([key])[0])

    def has_keys(self, keys) -> np.ndarray:
        """Boolean mask: which of ``keys`` the index holds."""
        keys = np.asarray(keys, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.sorted_keys, keys), len(self.sorted_keys) - 1)
        return self.sorted_keys[pos] == keys

    def offset(self, key) -> int:
        i = int(np.searchsorted(self.sorted_keys, key))
        if i >= len(self.sorted_keys) or self.sorted_keys[i] != key:
            raise DataError(f"{self.idx_path}: no record with key {key}")
        return int(self._sorted_offsets[i])

    def read(self, key) -> bytes:
        """The whole record ``key`` (multi-part records reassembled)."""
        return self.read_at(self.offset(key))

    def read_at(self, offset: int) -> bytes:
        parts, first = [], True
        while True:
            cflag, length = self._part_header(offset)
            if (cflag in (0, 1)) != first:
                raise DataError(f"{self.rec_path}: record part at offset {offset} has continuation "
                                f"flag {cflag} out of sequence (corrupt file or wrong .idx)")
            data = os.pread(self._fd, length, offset + 8)
            if len(data) != length:
                raise DataError(f"{self.rec_path}: record at offset {offset} is truncated")
            parts.append(data)
            if cflag in (0, 3):
                return _MAGIC_BYTES.join(parts)
            offset += 8 + ((length + 3) & ~3)
            first = False

    def _part_header(self, offset: int) -> tuple[int, int]:
        head = os.pread(self._fd, 8, offset)
        if len(head) != 8:
            raise DataError(f"{self.rec_path}: record at offset {offset} is truncated")
        magic, lrec = struct.unpack("<II", head)
        if magic != MAGIC:
            raise DataError(f"{self.rec_path}: no record at offset {offset} (magic 0x{magic:08x}, "
                            f"expected 0x{MAGIC:08x}); is {self.idx_path.name} the index of this file?")
        cflag = lrec >> 29
        if cflag > 3:
            raise DataError(f"{self.rec_path}: invalid continuation flag {cflag} at offset {offset}")
        return cflag, lrec & _LENGTH_MASK

    def peek_label(self, key) -> float:
        """The label (first entry of a label array) of record ``key``, reading only its header."""
        offset = self.offset(key)
        cflag, length = self._part_header(offset)
        head = os.pread(self._fd, min(length, IR_SIZE + 4), offset + 8)
        if cflag != 0 and len(head) < IR_SIZE + 4:  # the magic word inside the header: rare
            return _first_label(unpack(self.read_at(offset), self._where(key))[0].label)
        if len(head) < IR_SIZE:
            raise DataError(f"{self._where(key)}: record shorter than its {IR_SIZE}-byte header")
        flag, label, _, _ = struct.unpack_from(IR_FORMAT, head)
        if flag == 0:
            return label
        if len(head) < IR_SIZE + 4:
            raise DataError(f"{self._where(key)}: header announces {flag} labels, record is too short")
        return struct.unpack_from("<f", head, IR_SIZE)[0]

    def _where(self, key) -> str:
        return f"{self.rec_path} (record {key})"

    def close(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()


def unpack(record: bytes, where: str = "record") -> tuple[IRHeader, bytes]:
    """``(IRHeader, image bytes)``; with ``flag > 0`` the label is a float32 array of ``flag``."""
    if len(record) < IR_SIZE:
        raise DataError(f"{where}: record shorter than its {IR_SIZE}-byte header")
    header = IRHeader(*struct.unpack_from(IR_FORMAT, record))
    body = record[IR_SIZE:]
    if header.flag > 0:
        if len(body) < 4 * header.flag:
            raise DataError(f"{where}: header announces {header.flag} labels, record is too short")
        header = header._replace(label=np.frombuffer(body, np.float32, header.flag).copy())
        body = body[4 * header.flag:]
    return header, body


def _first_label(label) -> float:
    return float(label) if np.ndim(label) == 0 else float(np.asarray(label).reshape(-1)[0])


def _read_index(idx_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``.idx`` → (keys, offsets) in file order."""
    import warnings

    try:
        with warnings.catch_warnings():  # an empty file warns; reported below
            warnings.simplefilter("ignore")
            pairs = np.loadtxt(idx_path, dtype=np.int64, ndmin=2)
    except ValueError as exc:
        raise DataError(f"{idx_path}: expected integer 'key<TAB>offset' lines ({exc})") from None
    if not len(pairs):
        raise DataError(f"{idx_path}: index is empty")
    if pairs.shape[1] != 2:
        raise DataError(f"{idx_path}: expected 'key<TAB>offset' lines, found {pairs.shape[1]} fields")
    if pairs[:, 1].min() < 0:
        raise DataError(f"{idx_path}: negative offset")
    return np.ascontiguousarray(pairs[:, 0]), np.ascontiguousarray(pairs[:, 1])


def _cache_file(reader: RecordIOReader) -> Path:
    """Where the scanned (keys, labels) of this exact .rec/.idx pair are cached."""
    base = Path(os.environ.get("DISTILL_CACHE_DIR") or Path.home() / ".cache" / "distill")
    stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns)
             for p in (reader.rec_path, reader.idx_path)]
    return base / "recordio" / f"{hashlib.sha256(repr(stats).encode()).hexdigest()[:32]}.npz"


class RecordIOSource(ListedSource):
    """An InsightFace RecordIO set as a dataset source (see :mod:`distill.data.sources`)."""

    kind = "recordio"

    def __init__(self, rec_path, idx_path=None, progress: bool = True):
        self.reader = RecordIOReader(rec_path, idx_path)
        self.rec_path = self.reader.rec_path
        self.root = self.rec_path.parent
        self.keys, self.labels = self._keys_and_labels(progress)
        self.class_names = [str(n) for n in range(self._num_classes())]

    def _image_keys(self) -> np.ndarray:
        if 0 in self.reader:
            header, body = unpack(self.reader.read(0), self.describe_key(0))
            if header.flag >= 2 and not body:  # InsightFace header: images are keys 1 .. label[0]-1
                end = int(header.label[0])
                keys = np.arange(1, end, dtype=np.int64)
                missing = keys[~self.reader.has_keys(keys)][:5].tolist()
                if end < 2 or missing:
                    raise DataError(f"{self.describe_key(0)}: header record says images are keys 1.."
                                    f"{end - 1}, but the index lacks keys {missing or 'all'}")
                return keys
        return self.reader.sorted_keys.copy()

    def _keys_and_labels(self, progress: bool):
        cache = _cache_file(self.reader)
        try:
            with np.load(cache) as saved:
                return saved["keys"], saved["labels"]
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):  # absent or unreadable: rescan
            pass
        from tqdm import tqdm

        keys = self._image_keys()
        raw = np.empty(len(keys), dtype=np.float64)
        for i, key in enumerate(tqdm(keys, desc=f"scan {self.rec_path.name}", unit="rec",
                                     disable=not progress or len(keys) < 100_000, leave=False)):
            raw[i] = self.reader.peek_label(int(key))
        bad = np.flatnonzero((raw < 0) | (raw != np.round(raw)) | ~np.isfinite(raw))
        if len(bad):
            key = int(keys[bad[0]])
            raise DataError(f"{self.describe_key(key)}: label {raw[bad[0]]} is not a class number "
                            f"(a non-negative integer); {len(bad)} such record(s)")
        labels = raw.astype(np.int64)
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".tmp-{os.getpid()}.npz")
            np.savez(tmp, keys=keys, labels=labels)
            os.replace(tmp, cache)
        except OSError as exc:  # a read-only home only costs a rescan next time
            log.debug("cannot cache RecordIO labels at %s: %s", cache, exc)
        return keys, labels

    def _num_classes(self) -> int:
        found = int(self.labels.max()) + 1 if len(self.labels) else 0
        prop = self.root / "property"
        if self.rec_path.name != "train.rec" or not prop.is_file():
            return found
        try:
            declared = int(prop.read_text().split(",")[0])
        except ValueError:
            raise DataError(f"{prop}: expected 'num_classes,height,width'") from None
        if declared < found:
            raise DataError(f"{prop}: says {declared} classes, but {self.rec_path} has label {found - 1}")
        return declared

    # ------------------------------------------------------------- source interface
    def __len__(self) -> int:
        return len(self.keys)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def content_files(self) -> list[str]:
        return [str(self.reader.rec_path), str(self.reader.idx_path)]

    def describe_key(self, key) -> str:
        return f"{self.rec_path} (record {int(key)})"

    def describe(self, sample_id: int) -> str:
        return self.describe_key(self.keys[int(sample_id)])

    def read_encoded(self, sample_id: int) -> bytes:
        key = int(self.keys[int(sample_id)])
        return unpack(self.reader.read(key), self.describe_key(key))[1]

    def _read_or_empty(self, sample_id: int) -> bytes:
        """Image bytes, or ``b""`` for an unreadable record (the decoder then drops it and the
        store's completeness check reports it with :meth:`read_encoded`'s error)."""
        try:
            return self.read_encoded(sample_id)
        except DataError as exc:
            log.debug("%s", exc)
            return b""

    def encoded_dataset(self, sample_ids, chunk: int = 64, parallel: int = 4):
        """``(sample_id, image bytes)`` in the given order; ``parallel`` readers each stream
        ``chunk`` consecutive ids, interleaved back in order. Nothing is held in memory."""
        import tensorflow as tf

        ids = np.asarray(sample_ids, dtype=np.int64).reshape(-1)
        if len(ids) and (ids.min() < 0 or ids.max() >= len(self)):
            raise DataError(f"{self.rec_path}: sample ids out of range [0, {len(self)})")
        starts = np.arange(0, len(ids), chunk, dtype=np.int64)
        signature = (tf.TensorSpec((None,), tf.int64), tf.TensorSpec((None,), tf.string))

        def read_chunk(start):  # one Python call per chunk, not per image
            part = ids[int(start):int(start) + chunk]
            yield part, np.array([self._read_or_empty(i) for i in part], dtype=object)

        return tf.data.Dataset.from_tensor_slices(starts).interleave(
            lambda start: tf.data.Dataset.from_generator(read_chunk, args=(start,),
                                                         output_signature=signature),
            cycle_length=parallel, num_parallel_calls=parallel, deterministic=True).unbatch()

    def listing_lines(self):
        name = self.rec_path.name
        for key, label in zip(self.keys.tolist(), self.labels.tolist()):
            yield f"{name}:{key}\t{label}\n"


def open_recordio(path, progress: bool = True) -> RecordIOSource:
    """Open ``DIR`` (holding ``train.rec``/``train.idx``) or ``path/to/name.rec``."""
    rec = find_rec(path)
    if rec is None:
        raise DataError(f"{path}: no train.rec found")
    return RecordIOSource(rec, progress=progress)


#: leading bytes → file extension of the encoded image.
IMAGE_SIGNATURES = {
    b"\xff\xd8\xff": "jpg",
    b"\x89PNG\r\n\x1a\n": "png",
    b"BM": "bmp",
    b"GIF87a": "gif",
    b"GIF89a": "gif",
}


def image_extension(data: bytes, where: str) -> str:
    """File extension for encoded image bytes, from their signature."""
    for signature, extension in IMAGE_SIGNATURES.items():
        if data.startswith(signature):
            return extension
    raise DataError(f"{where}: not a JPEG/PNG/BMP/GIF image (starts with {data[:8].hex() or 'nothing'})")


def rec_to_folder(rec, out, progress: bool = True) -> tuple[int, int]:
    """Write every image of the RecordIO set ``rec`` to ``out/<label>/<key>.<ext>`` with its
    original bytes. Files already there are kept (each is written to a temporary name and
    renamed, so a present file is complete), which makes an interrupted run resumable.
    Returns ``(written, already present)``.
    """
    from tqdm import tqdm

    from distill.utils import TMP_SUFFIX, remove_temporaries

    source = open_recordio(rec, progress=progress)
    out = Path(out)
    written = present = 0
    current, done = None, set()  # records come grouped by class: list each folder once
    with tqdm(total=len(source), desc="rec2folder", unit="img", disable=not progress) as bar:
        for sample_id, (key, label) in enumerate(zip(source.keys.tolist(), source.labels.tolist())):
            folder = out / str(label)
            if label != current:
                folder.mkdir(parents=True, exist_ok=True)
                remove_temporaries(folder)   # left by an interrupted earlier run
                current = label
                done = {f.split(".")[0] for f in os.listdir(folder) if not f.startswith(".")}
            if str(key) in done:
                present += 1
            else:
                data = source.read_encoded(sample_id)
                target = folder / f"{key}.{image_extension(data, source.describe(sample_id))}"
                tmp = folder / f".{target.name}.{os.getpid()}{TMP_SUFFIX}"
                tmp.write_bytes(data)
                os.replace(tmp, target)
                written += 1
            bar.update(1)
    return written, present

