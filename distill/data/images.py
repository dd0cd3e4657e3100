"""Decoding of encoded images (jpg/png/bmp/gif, grey or colour, any size) to model-sized RGB uint8."""
from __future__ import annotations

import numpy as np

from distill.data.preprocess import INPUT_SIZE


def decode_and_resize(encoded, size=INPUT_SIZE):
    """TF op: encoded image bytes (scalar string tensor) → uint8 RGB tensor of shape ``size + (3,)``.

    Grey images are repeated to three channels; images not already ``size`` are resized
    bilinearly (antialiased when shrinking; plain bilinear when enlarging, where
    antialiasing changes nothing but costs time). Safe to use inside ``tf.data.Dataset.map``.
    """
    import tensorflow as tf

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


def _first_line(exc: Exception) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return message.strip().splitlines()[0] if message.strip() else type(exc).__name__


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
