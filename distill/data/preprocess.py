"""The one input normalisation of the project, used by embed, train, eval and export.

Images enter every model as RGB uint8 of size ``INPUT_SIZE`` (112×112); a model sees
``(pixel - MEAN) / STD`` = ``(pixel - 127.5) / 128``, i.e. values in about [-1, 1].
"""
from __future__ import annotations

import numpy as np

INPUT_SIZE = (112, 112)
MEAN = 127.5
STD = 128.0


def normalize(images):
    """uint8 (or float) RGB images → float32 ``(x - 127.5) / 128``; works on NumPy and TF tensors."""
    if isinstance(images, np.ndarray):
        return (images.astype(np.float32) - MEAN) / STD
    import tensorflow as tf

    return (tf.cast(images, tf.float32) - MEAN) / STD
