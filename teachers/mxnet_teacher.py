"""InsightFace MXNet checkpoints (``PREFIX-symbol.json`` + ``PREFIX-EPOCH.params``) as teachers.

A spec names either file; its partner is found beside it by MXNet's naming. ``#NODE`` after
the path picks the output node (default ``fc1``, InsightFace's embedding; ``NODE_output``
also works), e.g. ``model-0000.params#pre_fc1``. The checkpoint is converted to a Keras model
in memory (:mod:`teachers.mxnet_symbol`) and run as a Keras teacher; no MXNet is needed.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from distill.utils import sha256_path
from teachers.base import Preprocess, TeacherError
from teachers.keras_teacher import KerasTeacher, save_keras_file

SYMBOL_SUFFIX = "-symbol.json"
EPOCH_PARAMS = re.compile(r"^(?P<prefix>.+)-(?P<epoch>\d+)\.params$")


def split_spec(spec) -> tuple[Path, str | None]:
    """``PATH[#NODE]`` → (path, node or None); a path that exists with its ``#`` is kept whole."""
    spec = str(spec)
    path, sep, node = spec.rpartition("#")
    if not sep or Path(spec).exists() or not node:
        return Path(spec), None
    return Path(path), node


def is_mxnet_spec(spec) -> bool:
    """A ``PREFIX-symbol.json`` or ``*.params`` path, with an optional ``#NODE``."""
    name = split_spec(spec)[0].name.lower()
    return name.endswith(SYMBOL_SUFFIX) or name.endswith(".params")


@dataclass(frozen=True)
class MXNetCheckpoint:
    """The two files of a checkpoint and the output node (None: ``fc1``, else the head)."""

    symbol: Path
    params: Path
    output: str | None = None

    @classmethod
    def find(cls, spec, output: str | None = None) -> "MXNetCheckpoint":
        """The checkpoint a spec names; one-line errors for a missing file or partner, or for
        several epochs beside a symbol file."""
        path, node = split_spec(spec)
        output = output or node
        if not is_mxnet_spec(path):
            raise TeacherError(f"{path}: not an MXNet checkpoint (name PREFIX-symbol.json or PREFIX-EPOCH.params)")
        if not path.is_file():
            raise TeacherError(f"{path}: model file does not exist")
        if path.name.lower().endswith(SYMBOL_SUFFIX):
            prefix = path.name[:-len(SYMBOL_SUFFIX)]
            epochs = sorted(p for p in path.parent.glob("*.params")
                            if (m := EPOCH_PARAMS.match(p.name)) and m["prefix"] == prefix)
            if not epochs:
                raise TeacherError(f"{path}: no parameter file {prefix}-EPOCH.params beside it")
            if len(epochs) > 1:
                raise TeacherError(f"{path}: several parameter files beside it ({', '.join(p.name for p in epochs)}); "
                                   f"name the one to use, e.g. {epochs[-1]}")
            return cls(path, epochs[0], output)
        match = EPOCH_PARAMS.match(path.name)
        prefix = match["prefix"] if match else path.name[:-len(".params")]
        symbol = path.with_name(prefix + SYMBOL_SUFFIX)
        if not symbol.is_file():
            raise TeacherError(f"{path}: no symbol file {symbol.name} beside it (MXNet checkpoints are "
                               "PREFIX-symbol.json + PREFIX-EPOCH.params)")
        return cls(symbol, path, output)

    @property
    def spec(self) -> str:
        return f"{self.params}#{self.output}" if self.output else str(self.params)

    def sha256(self) -> str:
        """One fingerprint of both files and the output node."""
        digest = hashlib.sha256()
        for part in (sha256_path(self.symbol), sha256_path(self.params), self.output or ""):
            digest.update(f"{part}\n".encode())
        return digest.hexdigest()

    def to_keras(self, input_shape=(112, 112, 3)):
        """The equivalent Keras model (uint8 input when the graph normalises raw pixels)."""
        from teachers.mxnet_params import params_by_name, read_params
        from teachers.mxnet_symbol import symbol_to_keras

        params = params_by_name(read_params(self.params))
        return symbol_to_keras(self.symbol, params, self.output, input_shape, params_where=self.params.name)


class MXNetTeacher(KerasTeacher):
    """An MXNet checkpoint converted in memory and run as a Keras teacher."""

    kind = "mxnet"

    def __init__(self, spec, preprocess: Preprocess | None = None, threads=None):
        checkpoint = MXNetCheckpoint.find(spec)
        self.checkpoint = checkpoint
        super().__init__(checkpoint.spec, preprocess, build=checkpoint.to_keras, sha256=checkpoint.sha256())

    def describe(self) -> dict:
        return {**super().describe(), "symbol": str(self.checkpoint.symbol), "params": str(self.checkpoint.params)}


def mxnet_to_keras(spec, out, output: str | None = None) -> dict:
    """Convert an MXNet checkpoint to a ``.keras`` file (written atomically) that loads as a
    Keras teacher with the same input contract; returns what was written."""
    out = Path(out)
    if out.suffix.lower() != ".keras":
        raise TeacherError(f"{out}: the output must be a .keras file")
    checkpoint = MXNetCheckpoint.find(spec, output)
    model = checkpoint.to_keras()
    save_keras_file(model, out)
    return {"path": out, "symbol": checkpoint.symbol, "params": checkpoint.params,
            "output": model.mxnet_output, "embedding_dim": int(model.output.shape[-1]),
            "raw_pixels": str(model.inputs[0].dtype) == "uint8", "layers": len(model.layers)}
