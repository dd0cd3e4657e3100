"""The one model runtime: a uint8 RGB NHWC batch in, embeddings out.

Every model file the project handles — a teacher to embed a dataset with, a student or an
exported model to evaluate or check for parity — is run through a :class:`Teacher` made by
``teachers.load_teacher``: ``embed(images)`` gives raw embeddings, calling the object gives
them L2-normalised. Each loader states its input contract: the model's preprocessing
(:class:`Preprocess`, by default the project's ``(pixel - 127.5) / 128`` on RGB NHWC), or
raw uint8 pixels when the model takes uint8 itself (exported models, uint8 plugins); for
those, preprocessing options are refused rather than silently changing what the model sees.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from distill.data.preprocess import MEAN, STD


class TeacherError(ValueError):
    """A teacher that cannot be loaded or run; the message names the file."""


def raw_pixels(where: str, preprocess, layout: str = "NHWC", why: str = "its input is uint8"):
    """The :class:`Preprocess` of a model that takes raw uint8 pixels; refuses given options."""
    if preprocess is not None:
        raise TeacherError(f"{where}: the model takes raw uint8 pixels ({why}); preprocessing "
                           "options (--mean/--std/--bgr/--rgb/--nchw) cannot apply to it")
    return Preprocess(mean=0.0, std=1.0, layout=layout)


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
        """L2-normalised float32 embeddings of a uint8 batch (NumPy)."""
        import numpy as np

        out = np.asarray(self.embed(images), dtype=np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def describe(self) -> dict:
        """What the store manifest records about this teacher."""
        return {
            "kind": self.kind,
            "source": self.source,
            "sha256": self.sha256,
            "embedding_dim": self.embedding_dim,
            "preprocess": self.preprocess.to_dict(),
        }
