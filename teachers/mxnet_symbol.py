"""An MXNet symbol (``PREFIX-symbol.json``) and its parameters → an equivalent Keras model.

The graph's nodes are walked in order (MXNet writes them topologically sorted); each op node
up to the chosen output is built by its builder in :data:`teachers.mxnet_ops.MXNET_OPS`,
in NHWC, with its weights taken from the ``.params`` arrays named by its weight inputs.
Nodes after the output (a training loss, say) are not built. When the input ``data`` feeds
only scalar arithmetic (InsightFace's ``_minus_scalar 127.5`` → ``_mul_scalar 0.0078125``),
the graph normalises itself: the Keras model then takes raw uint8 RGB pixels (as the models
``distill export`` writes do); otherwise it takes float32 input in the project's preprocessing.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from teachers.base import TeacherError
from teachers.mxnet_ops import MXNET_OPS, SCALAR_OPS

#: the node InsightFace's symbols name the embedding
DEFAULT_OUTPUT = "fc1"
INPUT_SHAPE = (112, 112, 3)


def _parse(value: str):
    """One attribute value: ``"(3, 3)"`` → (3, 3), ``"True"`` → True, ``"0.25"`` → 0.25."""
    text = str(value).strip()
    if text[:1] in "([" and text[-1:] in ")]":
        return tuple(_parse(v) for v in text[1:-1].split(",") if v.strip())
    if text in ("True", "true", "False", "false"):
        return text.lower() == "true"
    if text in ("None", "none"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class Node:
    """One op node as its builder sees it: attributes, input tensors and weights."""

    def __init__(self, graph: "SymbolGraph", index: int, tensors: dict):
        raw = graph.nodes[index]
        self.graph, self.index = graph, index
        self.name, self.op = raw["name"], raw["op"]
        self.attrs = graph.attrs(index)
        self.input_ids = graph.inputs(index)
        self.inputs = [tensors.get(i) for i in self.input_ids]

    def fail(self, message: str) -> TeacherError:
        return TeacherError(f"{self.graph.where}: node {self.name!r} ({self.op}): {message}")

    def attr(self, key: str, default=None, kind=None):
        """The attribute ``key`` parsed (``default`` when absent); ``kind`` checks/converts it:
        int, float, bool, str, or "pair" (a 2-tuple of ints; a single value is repeated)."""
        if key not in self.attrs:
            if default is None and kind is not None:
                raise self.fail(f"attribute {key!r} is missing")
            return default
        value = _parse(self.attrs[key])
        try:
            if kind == "pair":
                value = tuple(int(v) for v in (value if isinstance(value, tuple) else (value,)))
                value = value * 2 if len(value) == 1 else value
                if len(value) != 2:
                    raise ValueError
            elif kind is bool:
                value = value if isinstance(value, bool) else bool(int(value))
            elif kind is not None:
                value = kind(value)
        except (TypeError, ValueError):
            want = "a pair of integers (2-D)" if kind == "pair" else getattr(kind, "__name__", kind)
            raise self.fail(f"attribute {key}={self.attrs[key]!r} is not {want}") from None
        return value

    def input(self, position: int = 0, ndim: int | None = None):
        """The data tensor at input ``position`` (4-D NHWC or 2-D), checked for rank."""
        tensor = self.inputs[position] if position < len(self.inputs) else None
        if tensor is None:
            raise self.fail(f"input {position} is not a computed tensor")
        if ndim is not None and len(tensor.shape) != ndim:
            shape = "a 4-D feature map" if ndim == 4 else f"a {ndim}-D tensor"
            raise self.fail(f"needs {shape}, got shape {tuple(tensor.shape)[1:]} (batch left out)")
        return tensor

    def weight(self, position: int, shape=None) -> np.ndarray:
        """The parameter array feeding input ``position`` (float32), checked against ``shape``."""
        if position >= len(self.input_ids):
            raise self.fail(f"has no input {position} (a weight was expected there)")
        name = self.graph.nodes[self.input_ids[position]]["name"]
        value = self.graph.param(name)
        if value is None:
            raise TeacherError(f"{self.graph.params_where}: no array 'arg:{name}' or 'aux:{name}' "
                               f"for node {self.name!r} ({self.op})")
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise TeacherError(f"{self.graph.params_where}: {name!r} has shape {tuple(value.shape)}; "
                               f"node {self.name!r} ({self.op}) needs {tuple(shape)}")
        return np.asarray(value, np.float32)

    def layer_name(self, suffix: str = "") -> str:
        return self.graph.unique(self.name + suffix)


class SymbolGraph:
    """A parsed symbol JSON and its parameter arrays (``{name: array}``, prefixes removed)."""

    def __init__(self, symbol_path, params: dict, params_where: str = "params"):
        path = Path(symbol_path)
        self.where, self.params_where, self.params = path.name, params_where, params
        try:
            document = json.loads(path.read_text())
        except FileNotFoundError:
            raise TeacherError(f"{path}: symbol file does not exist") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TeacherError(f"{path.name}: not an MXNet symbol JSON ({str(exc)[:120]})") from None
        nodes = document.get("nodes") if isinstance(document, dict) else None
        if not isinstance(nodes, list) or not all(isinstance(n, dict) and "op" in n and "name" in n
                                                  for n in nodes):
            raise TeacherError(f"{path.name}: not an MXNet symbol JSON (no 'nodes' list of ops)")
        self.nodes, self.heads = nodes, document.get("heads") or [[len(nodes) - 1, 0, 0]]
        self._names: set[str] = set()

    def attrs(self, index: int) -> dict:
        node = self.nodes[index]  # MXNet < 1.0 wrote "param"/"attr", later versions "attrs"
        return {k: v for part in ("attr", "param", "attrs") for k, v in (node.get(part) or {}).items()
                if not k.startswith("__")}

    def inputs(self, index: int) -> list[int]:
        ids = []
        for ref in self.nodes[index].get("inputs", []):
            source, output = int(ref[0]), int(ref[1]) if len(ref) > 1 else 0
            if output != 0 and self.nodes[source]["op"] != "null":
                raise TeacherError(f"{self.where}: node {self.nodes[index]['name']!r} uses output {output} "
                                   f"of node {self.nodes[source]['name']!r}; only first outputs are supported")
            ids.append(source)
        return ids

    def param(self, name: str):
        return self.params.get(name)

    def unique(self, name: str) -> str:
        name = re.sub(r"[^\w.-]", "_", name) or "layer"
        base, n = name, 1
        while name in self._names:
            n += 1
            name = f"{base}_{n}"
        self._names.add(name)
        return name

    def output_index(self, output: str | None = None) -> int:
        """The node named ``output`` (``NAME`` or ``NAME_output``); by default ``fc1``, else the
        graph's first head."""
        names = {node["name"]: i for i, node in enumerate(self.nodes) if node["op"] != "null"}
        if output is None:
            return names.get(DEFAULT_OUTPUT, int(self.heads[0][0]))
        wanted = output.removesuffix("_output") if output not in names else output
        if wanted not in names:
            last = ", ".join(list(names)[-5:])
            raise TeacherError(f"{self.where}: no op node named {output!r} (the last ones: {last})")
        return names[wanted]

    def needed(self, out: int) -> list[int]:
        """The nodes the output depends on, in graph order."""
        seen, stack = set(), [out]
        while stack:
            index = stack.pop()
            if index not in seen:
                seen.add(index)
                stack.extend(int(ref[0]) for ref in self.nodes[index].get("inputs", []))
        return sorted(seen)


def symbol_to_keras(symbol_path, params: dict, output: str | None = None, input_shape=INPUT_SHAPE,
                    params_where: str = "params"):
    """Build the Keras model (NHWC) of ``symbol_path`` up to ``output`` with weights from
    ``params`` (``{name: array}``, see :func:`teachers.mxnet_params.params_by_name`). Its input
    is uint8 when the graph normalises raw pixels itself, float32 otherwise."""
    import keras

    graph = SymbolGraph(symbol_path, params, params_where)
    out = graph.output_index(output)
    order = graph.needed(out)
    inputs = [i for i in order if graph.nodes[i]["op"] == "null" and graph.param(graph.nodes[i]["name"]) is None]
    inputs = [i for i in inputs if graph.nodes[i]["name"] == "data"] or inputs  # others: missing weights
    if len(inputs) != 1:
        names = ", ".join(repr(graph.nodes[i]["name"]) for i in inputs) or "none"
        raise TeacherError(f"{graph.where}: the output {graph.nodes[out]['name']!r} needs exactly one "
                           f"input variable without a stored array, found {names}")
    data = inputs[0]
    users = [i for i in order if data in [int(ref[0]) for ref in graph.nodes[i].get("inputs", [])]]
    raw = bool(users) and all(graph.nodes[i]["op"] in SCALAR_OPS for i in users)
    image = keras.Input(input_shape, dtype="uint8" if raw else "float32",
                        name=graph.unique(graph.nodes[data]["name"]))
    tensors = {data: image}
    for index in order:
        op = graph.nodes[index]["op"]
        if op == "null":
            continue
        if op not in MXNET_OPS:
            raise TeacherError(f"{graph.where}: node {graph.nodes[index]['name']!r} uses op {op!r}, which "
                               f"this converter does not support; supported: {', '.join(sorted(MXNET_OPS))}")
        tensors[index] = MXNET_OPS.builder(op)(Node(graph, index, tensors))
    name = re.sub(r"[^\w.-]", "_", Path(symbol_path).name.removesuffix("-symbol.json"))
    model = keras.Model(image, tensors[out], name=f"{name}_{graph.nodes[out]['name']}")
    model.mxnet_output = graph.nodes[out]["name"]
    return model
