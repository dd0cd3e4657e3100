"""The one teacher interface: a uint8 RGB NHWC batch in, raw embeddings out.

Each teacher declares its preprocessing (:class:`Preprocess`); the default matches
InsightFace models and the project's normalisation ``(pixel - 127.5) / 128`` on RGB NHWC.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from distill.data.preprocess import MEAN, STD


class TeacherError(ValueError):
    """A teacher that cannot be loaded or run; the message names the file."""


@dataclass(frozen=True)
class Preprocess:
    """How a teacher wants its input: ``(pixel - mean) / std``, channel order and layout."""

    mean: float = MEAN
    std: float = STD
    channel_order: str = "RGB"
    layout: str = "NHWC"

    def __post_init__(self):
        if self.channel_order not in ("RGB", "BGR"):
            raise TeacherError(f"channel_order must be RGB or BGR, got {self.channel_order!r}")
        if self.layout not in ("NHWC", "NCHW"):
            raise TeacherError(f"layout must be NHWC or NCHW, got {self.layout!r}")

    def apply(self, images):
        """TF op: uint8 RGB NHWC batch → float32 model input in this teacher's convention."""
        import tensorflow as tf

        x = tf.cast(images, tf.float32)
        if self.channel_order == "BGR":
            x = x[..., ::-1]
        x = (x - self.mean) / self.std
        if self.layout == "NCHW":
            x = tf.transpose(x, (0, 3, 1, 2))
        return x

    def apply_numpy(self, images):
        """NumPy version of :meth:`apply`."""
        import numpy as np

        x = np.asarray(images, dtype=np.float32)
        if self.channel_order == "BGR":
            x = x[..., ::-1]
        x = (x - self.mean) / self.std
        if self.layout == "NCHW":
            x = np.transpose(x, (0, 3, 1, 2))
        return np.ascontiguousarray(x)

    def to_dict(self) -> dict:
        return asdict(self)


class Teacher:
    """Base class. Subclasses implement :meth:`embed` (and may set ``graph_compatible``).

    ``embed(images)`` takes a uint8 RGB NHWC batch (NumPy or tf.Tensor) and returns float32
    embeddings ``[B, D]`` (not normalised; the store L2-normalises). When
    ``graph_compatible`` is True, ``embed`` is a TF function usable on tensors inside
    ``tf.data``/``tf.function`` code; otherwise it takes and returns NumPy arrays.
    """

    kind = "base"
    graph_compatible = False

    def __init__(self, source: str, sha256: str, preprocess: Preprocess, embedding_dim: int):
        self.source = source
        self.sha256 = sha256
        self.preprocess = preprocess
        self.embedding_dim = int(embedding_dim)

    def embed(self, images):  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, images):
        return self.embed(images)

    def describe(self) -> dict:
        """What the store manifest records about this teacher."""
        return {
            "kind": self.kind,
            "source": self.source,
            "sha256": self.sha256,
            "embedding_dim": self.embedding_dim,
            "preprocess": self.preprocess.to_dict(),
        }
