"""Decoding of encoded images (jpg/png/bmp/gif, grey or colour, any size) to model-sized RGB uint8."""
from __future__ import annotations

import numpy as np

from distill.data.preprocess import INPUT_SIZE
from distill.utils import first_line as _first_line


def decode_and_resize(encoded, size=INPUT_SIZE):
    """TF op: encoded image bytes (scalar string tensor) → uint8 RGB tensor of shape ``size + (3,)``.

    Grey images are repeated to three channels; images not already ``size`` are resized
    bilinearly (antialiased when shrinking; plain bilinear when enlarging, where
    antialiasing changes nothing but costs time). Safe to use inside ``tf.data.Dataset.map``.
    """
    import tensorflow as tf

    check = tf.debugging.assert_less_equal(
        declared_pixels(encoded), tf.constant(MAX_PIXELS, tf.int64),
        message=f"image declares more than {MAX_PIXELS:,} pixels (refused before decoding)")
    with tf.control_dependencies([check]):
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    height, width = size

    def resize(antialias):
        def run():
            resized = tf.image.resize(image, (height, width), method="bilinear", antialias=antialias)
            return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)

        return run

    shape = tf.shape(image)
    same = tf.logical_and(tf.equal(shape[0], height), tf.equal(shape[1], width))
    shrinking = tf.logical_or(shape[0] > height, shape[1] > width)
    out = tf.cond(same, lambda: image, lambda: tf.cond(shrinking, resize(True), resize(False)))
    out.set_shape([height, width, 3])
    return out


#: images whose header declares more pixels are refused before decoding (a crafted 12,000² PNG
#: of a few hundred KB would otherwise need over a gigabyte to decode and resize)
MAX_PIXELS = 50_000_000
_MAGIC = {"png": b"\x89PNG", "gif": b"GIF8", "bmp": b"BM", "jpeg": b"\xff\xd8", "webp": b"RIFF"}


def declared_pixels(encoded):
    """TF op: width × height from the header of a PNG, GIF, BMP, WebP or JPEG (0 for other
    formats, left to the decoder), read without decoding the image."""
    import tensorflow as tf

    head = tf.strings.join([tf.strings.substr(encoded, 0, 32), tf.constant(b"\0" * 32)])
    h = tf.cast(tf.io.decode_raw(tf.strings.substr(head, 0, 32), tf.uint8), tf.int64)

    def number(offset, size, big_endian=False):
        parts = [h[offset + i] * (256 ** (size - 1 - i if big_endian else i)) for i in range(size)]
        return tf.add_n(parts)

    def signed32(offset):   # BMP sizes are signed (a negative height means top-down rows)
        value = number(offset, 4)
        return tf.abs(tf.where(value >= 2 ** 31, value - 2 ** 32, value))

    def starts(kind):
        magic = _MAGIC[kind]
        return tf.reduce_all(tf.equal(h[:len(magic)], tf.constant(list(magic), tf.int64)))

    def jpeg():
        shape = tf.cast(tf.image.extract_jpeg_shape(encoded), tf.int64)
        return shape[0] * shape[1]

    def webp():   # the chunk after "RIFF....WEBP": VP8X (extended), VP8L (lossless) or "VP8 "
        lossless = number(21, 4)
        return tf.where(tf.equal(h[15], ord("X")), (number(24, 3) + 1) * (number(27, 3) + 1),
                        tf.where(tf.equal(h[15], ord("L")),
                                 (lossless % 2 ** 14 + 1) * (lossless // 2 ** 14 % 2 ** 14 + 1),
                                 number(26, 2) % 2 ** 14 * (number(28, 2) % 2 ** 14)))

    return tf.case([(starts("png"), lambda: number(16, 4, True) * number(20, 4, True)),
                    (starts("gif"), lambda: number(6, 2) * number(8, 2)),
                    (starts("bmp"), lambda: signed32(18) * signed32(22)),
                    (starts("webp"), webp), (starts("jpeg"), jpeg)],
                   default=lambda: tf.constant(0, tf.int64))


def decode_image_bytes(data: bytes, size=INPUT_SIZE, source: str = "image") -> np.ndarray:
    """Eager NumPy version of :func:`decode_and_resize`; raises ``ValueError`` naming ``source``."""
    import tensorflow as tf

    try:
        return decode_and_resize(tf.constant(data), size).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as exc:
        raise ValueError(f"{source}: cannot decode image ({_first_line(exc)})") from None


def read_image(path, size=INPUT_SIZE) -> np.ndarray:
    """Read and decode one image file to RGB uint8 of ``size``; clear error naming the file."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read image ({exc.strerror})") from None
    return decode_image_bytes(data, size, source=str(path))


def input_parallelism(requested: int = -1, training: bool = True):
    """Decode threads for tf.data: ``requested`` if positive; else AUTOTUNE for inference
    (``training=False``: embed) or when a GPU does the model's work, and a quarter of the cores
    when training on a CPU-only machine, where backprop needs the cores (bench/bench_train.py
    on 2 cores: AUTOTUNE 0.79 vs 1 thread 0.90; bench/bench_embed.py prefers AUTOTUNE).
    The environment variable ``DISTILL_DECODE_THREADS`` (a number or ``autotune``) overrides."""
    import os

    import tensorflow as tf

    if requested and requested > 0:
        return int(requested)
    override = os.environ.get("DISTILL_DECODE_THREADS", "")
    if override:
        return tf.data.AUTOTUNE if override.lower() == "autotune" else max(1, int(override))
    if not training or tf.config.list_logical_devices("GPU"):
        return tf.data.AUTOTUNE
    return max(1, (os.cpu_count() or 1) // 4)


def read_problem(source, sample_id: int) -> str | None:
    """Why sample ``sample_id`` of ``source`` cannot be read or decoded, in words (None: it can)."""
    try:
        decode_image_bytes(source.read_encoded(sample_id), source=source.describe(sample_id))
    except ValueError as exc:   # includes the sources' DataError
        return str(exc).split(": ", 1)[-1]
    return None


def why_unreadable(source, sample_id: int) -> str:
    return read_problem(source, sample_id) or "image failed to decode in the input pipeline"


def unreadable_samples(source, sample_ids) -> list[dict]:
    """``[{"sample_id", "path", "reason"}]`` for the samples of ``sample_ids`` that cannot be
    read or decoded; one parallel decoding pass (tf.data) over them, in the given order."""
    import tensorflow as tf

    ids = np.asarray(sample_ids, dtype=np.int64)
    dataset = source.encoded_dataset(ids).map(
        lambda sample_id, data: (sample_id, tf.reduce_max(decode_and_resize(data))),  # (a value, so decoding runs)
        num_parallel_calls=input_parallelism(training=False), deterministic=False)
    delivered = [batch.numpy() for batch, _ in dataset.ignore_errors().batch(1024)]
    missing = ids[~np.isin(ids, np.concatenate(delivered or [np.zeros(0, np.int64)]))]
    return [{"sample_id": int(i), "path": source.describe(int(i)), "reason": why_unreadable(source, int(i))}
            for i in missing]
