"""MXNet checkpoints without MXNet: the .params reader, the symbol → Keras converter (checked
against a NumPy NCHW forward pass and InsightFace's y1 against its TFLite conversion), the
teacher spec, ``distill convert mxnet2keras`` and one-line errors."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from conftest import ORL, error_lines

Y1 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "teachers" / "insightface_mobilefacenet_y1"
GLINT = Y1.parents[1] / "glint24"
FLAGS = {np.dtype("float32"): 0, np.dtype("float64"): 1, np.dtype("float16"): 2}


# ---------------------------------------------------------------- test-side writers (from the format)
def write_params(path, arrays: dict, legacy=()):
    """An NDArray list file: V2 records, or V1/legacy ones for the keys in ``legacy``."""
    out = [struct.pack("<QQQ", 0x112, 0, len(arrays))]
    for key, a in arrays.items():
        if key in legacy:
            head = (struct.pack("<II", 0xF993FAC8, a.ndim) + struct.pack(f"<{a.ndim}q", *a.shape)
                    if legacy[key] == "v1" else struct.pack(f"<I{a.ndim}I", a.ndim, *a.shape))
        else:
            head = struct.pack("<Iii", 0xF993FAC9, 0, a.ndim) + struct.pack(f"<{a.ndim}q", *a.shape)
        out.append(head + struct.pack("<iii", 1, 0, FLAGS[a.dtype]) + a.astype(a.dtype.newbyteorder("<")).tobytes())
    out.append(struct.pack("<Q", len(arrays)))
    out += [struct.pack("<Q", len(k.encode())) + k.encode() for k in arrays]
    Path(path).write_bytes(b"".join(out))


class Symbol:
    """Builds a symbol JSON: ``op`` adds an op node (its weights as null nodes named NAME_W)."""

    def __init__(self):
        self.nodes, self.ids = [{"op": "null", "name": "data", "inputs": []}], {"data": 0}

    def op(self, op, name, inputs, weights=(), **attrs):
        attrs = {k: str(v) for k, v in attrs.items()}
        refs = [[self.ids[i], 0, 0] for i in inputs]
        for w in weights:
            self.ids[f"{name}_{w}"] = len(self.nodes)
            refs.append([len(self.nodes), 0, 0])
            self.nodes.append({"op": "null", "name": f"{name}_{w}", "attrs": attrs, "inputs": []})
        self.ids[name] = len(self.nodes)
        self.nodes.append({"op": op, "name": name, "attrs": attrs, "inputs": refs})
        return name

    def save(self, path):
        args = [i for i, n in enumerate(self.nodes) if n["op"] == "null"]
        Path(path).write_text(json.dumps({"nodes": self.nodes, "arg_nodes": args, "heads": [[len(self.nodes) - 1, 0, 0]],
                                          "attrs": {"mxnet_version": ["int", 10300]}}))


# ---------------------------------------------------------------- NumPy NCHW reference
def conv(x, w, b=None, stride=1, pad=0, dilate=1, groups=1):
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    k = w.shape[-1]
    win = np.lib.stride_tricks.sliding_window_view(x, ((k - 1) * dilate + 1,) * 2, axis=(2, 3))
    win = win[:, :, ::stride, ::stride, ::dilate, ::dilate]
    cin, cout = x.shape[1] // groups, w.shape[0] // groups
    y = np.concatenate([np.einsum("bchwij,ocij->bohw", win[:, g * cin:(g + 1) * cin], w[g * cout:(g + 1) * cout])
                        for g in range(groups)], axis=1)
    return y if b is None else y + b[None, :, None, None]


def pool(x, k, s, pad, kind, full=False):
    n = x.shape[2]
    span = n + 2 * pad - k
    out = (-(-span // s) if full else span // s) + 1
    extra = max(0, (out - 1) * s + k - n - 2 * pad)
    fill = -np.inf if kind == "max" else 0.0
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad + extra), (pad, pad + extra)), constant_values=fill)
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s][:, :, :out, :out]
    return win.max(axis=(4, 5)) if kind == "max" else win.mean(axis=(4, 5))


def bn(x, p, name, eps, fix_gamma):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    gamma = 1.0 if fix_gamma else p[f"arg:{name}_gamma"].reshape(shape)
    mean, var = p[f"aux:{name}_moving_mean"].reshape(shape), p[f"aux:{name}_moving_var"].reshape(shape)
    return (x - mean) / np.sqrt(var + eps) * gamma + p[f"arg:{name}_beta"].reshape(shape)


def synthetic(folder: Path, rng):
    """A small graph covering the supported ops; returns (symbol path, params as float64)."""
    s, p = Symbol(), {}

    def arr(key, shape, scale=0.3, dtype=np.float32, positive=False):
        a = rng.uniform(0.5, 1.5, shape) if positive else rng.normal(0, scale, shape)
        p[key] = a.astype(dtype)

    def batchnorm(name, x, channels, **attrs):
        arr(f"arg:{name}_gamma", channels, positive=True)
        arr(f"arg:{name}_beta", channels)
        arr(f"aux:{name}_moving_mean", channels)
        arr(f"aux:{name}_moving_var", channels, positive=True, dtype=np.float64)
        return s.op("BatchNorm", name, [x], ["gamma", "beta", "moving_mean", "moving_var"], **attrs)

    x = s.op("_minus_scalar", "sub", ["data"], scalar=127.5)
    x = s.op("_mul_scalar", "mul", [x], scalar=0.0078125)
    arr("arg:conv0_weight", (8, 3, 3, 3), dtype=np.float16)
    arr("arg:conv0_bias", 8, 0.1)
    x = s.op("Convolution", "conv0", [x], ["weight", "bias"], kernel=(3, 3), stride=(2, 2), pad=(1, 1), num_filter=8)
    x = batchnorm("bn0", x, 8, fix_gamma=False, eps=2e-5)
    arr("arg:prelu0_gamma", 8, 0.2)
    x = s.op("LeakyReLU", "prelu0", [x], ["gamma"], act_type="prelu")
    arr("arg:dw_weight", (16, 1, 3, 3), 0.5)                    # depthwise, multiplier 2
    x = s.op("Convolution", "dw", [x], ["weight"], kernel="(3, 3)", stride="(2, 2)", pad="(1, 1)",
             num_filter=16, num_group=8, no_bias=True)
    x = batchnorm("bn1", x, 16)                                  # fix_gamma defaults to True, eps to 1e-3
    a = s.op("LeakyReLU", "leaky1", [x], slope=0.1)
    arr("arg:gconv_weight", (16, 8, 1, 1), 0.3)
    g = s.op("Convolution", "gconv", [a], ["weight"], kernel=(1, 1), num_filter=16, num_group=2, no_bias="True")
    x = s.op("elemwise_add", "add", [a, g])
    x = s.op("Pooling", "pool_max", [x], kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="max")
    x = s.op("Pooling", "pool_full", [x], kernel=(3, 3), stride=(2, 2), pool_type="max", pooling_convention="full")
    x = s.op("Activation", "tanh", [x], act_type="tanh")
    x = s.op("Pooling", "pool_avg", [x], kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="avg")
    arr("arg:dil_weight", (6, 16, 3, 3), 0.3)
    arr("arg:dil_bias", 6, 0.1)
    x = s.op("Convolution", "dil", [x], ["weight", "bias"], kernel=(3, 3), dilate=(2, 2), pad=(2, 2), num_filter=6)
    e = s.op("Pooling", "se_pool", [x], global_pool=True, pool_type="avg", kernel=(7, 7))
    arr("arg:se_weight", (6, 6, 1, 1), 0.5)
    arr("arg:se_bias", 6, 0.1)
    e = s.op("Activation", "se_gate", [s.op("Convolution", "se", [e], ["weight", "bias"], kernel=(1, 1), num_filter=6)],
             act_type="sigmoid")
    x = s.op("broadcast_mul", "se_mul", [x, e])                  # squeeze-and-excitation
    s.op("Pooling", "gpool", [x], global_pool=True, pool_type="avg", kernel=(1, 1))   # a side branch
    x = s.op("Flatten", "flat", [x])
    x = s.op("Dropout", "drop", [x], p=0.4)
    arr("arg:fc_weight", (10, 96), 0.2, dtype=np.float16)
    arr("arg:fc_bias", 10, 0.1)
    x = s.op("FullyConnected", "fc", [x], ["weight", "bias"], num_hidden=10)
    x = batchnorm("fc1", x, 10, fix_gamma=True, eps=2e-5)
    s.nodes.append({"op": "null", "name": "softmax_label", "inputs": []})
    s.ids["softmax_label"] = len(s.nodes) - 1
    s.op("SoftmaxOutput", "fc1_softmax", [x, "softmax_label"])
    s.save(folder / "tiny-symbol.json")
    write_params(folder / "tiny-0007.params", p, legacy={"arg:conv0_bias": "v1", "arg:dw_weight": "legacy"})
    return folder / "tiny-symbol.json", {k: v.astype(np.float64) for k, v in p.items()}


def reference(images, p, output="fc1"):
    """The synthetic graph in NumPy, NCHW, float64."""
    x = (images.astype(np.float64).transpose(0, 3, 1, 2) - 127.5) * 0.0078125
    x = conv(x, p["arg:conv0_weight"], p["arg:conv0_bias"], stride=2, pad=1)
    x = bn(x, p, "bn0", 2e-5, False)
    x = np.where(x > 0, x, p["arg:prelu0_gamma"][None, :, None, None] * x)
    x = bn(conv(x, p["arg:dw_weight"], stride=2, pad=1, groups=8), p, "bn1", 1e-3, True)
    a = np.where(x > 0, x, 0.1 * x)
    x = a + conv(a, p["arg:gconv_weight"], groups=2)
    x = np.tanh(pool(pool(x, 3, 2, 1, "max"), 3, 2, 0, "max", full=True))
    x = conv(pool(x, 3, 2, 1, "avg"), p["arg:dil_weight"], p["arg:dil_bias"], pad=2, dilate=2)
    x = x / (1 + np.exp(-conv(x.mean(axis=(2, 3), keepdims=True), p["arg:se_weight"], p["arg:se_bias"])))
    if output == "gpool":
        return x.mean(axis=(2, 3))
    x = x.reshape(len(x), -1) @ p["arg:fc_weight"].T + p["arg:fc_bias"]
    return bn(x, p, "fc1", 2e-5, True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mxnet")
    symbol, params = synthetic(folder, np.random.default_rng(0))
    return folder, symbol, params


@pytest.fixture(scope="module")
def orl_faces():
    from distill.data.images import read_image

    return np.stack([read_image(ORL / f"s{p}" / f"{i}.png") for p in (1, 2) for i in (1, 2)])


def test_params_reader_reads_every_record_version(tiny):
    from teachers.mxnet_params import read_params

    folder, _, params = tiny
    got = read_params(folder / "tiny-0007.params")
    assert list(got) == list(params)
    assert got["arg:conv0_weight"].dtype == np.float16 and got["aux:bn0_moving_var"].dtype == np.float64
    for key in params:
        np.testing.assert_array_equal(got[key].astype(np.float64), params[key])


def test_synthetic_graph_matches_numpy_nchw_reference(tiny, orl_faces):
    from teachers import Preprocess, TeacherError, load_teacher
    from teachers.mxnet_params import params_by_name, read_params
    from teachers.mxnet_symbol import symbol_to_keras

    folder, symbol, params = tiny
    teacher = load_teacher(folder / "tiny-0007.params")
    assert teacher.kind == "mxnet" and teacher.embedding_dim == 10
    assert teacher.preprocess == Preprocess(mean=0.0, std=1.0)        # the graph normalises raw pixels
    describe = teacher.describe()
    assert describe["symbol"].endswith("tiny-symbol.json") and len(describe["sha256"]) == 64
    expected = reference(orl_faces, params)
    np.testing.assert_allclose(np.asarray(teacher.embed(orl_faces)), expected, atol=1e-4, rtol=1e-4)

    side = symbol_to_keras(symbol, params_by_name(read_params(folder / "tiny-0007.params")), output="gpool_output")
    got = np.asarray(side(orl_faces)).reshape(len(orl_faces), -1)
    np.testing.assert_allclose(got, reference(orl_faces, params, "gpool"), atol=1e-4, rtol=1e-4)
    with pytest.raises(TeacherError, match="raw uint8 pixels"):
        load_teacher(symbol, Preprocess())


def test_convert_command_and_embed_with_the_result(tiny, orl_faces, faces_small, cli, tmp_path):
    from teachers import Preprocess, load_teacher

    folder, symbol, params = tiny
    out = tmp_path / "tiny.keras"
    code, stdout, stderr = cli("convert", "mxnet2keras", symbol, out)
    assert code == 0 and "up to node 'fc1'" in stdout and "raw uint8" in stdout, stderr
    converted = load_teacher(out)
    assert converted.kind == "keras" and converted.preprocess == Preprocess(mean=0.0, std=1.0)
    np.testing.assert_allclose(np.asarray(converted.embed(orl_faces)), reference(orl_faces, params), atol=1e-4, rtol=1e-4)

    from distill.export import export_model

    export_model(out, "tflite", tmp_path / "tiny.tflite", parity_images=4, latency_runs=1)
    exported = load_teacher(tmp_path / "tiny.tflite")           # the model's own normalisation, not added twice
    cos = np.sum(exported(orl_faces) * converted(orl_faces), axis=1)
    assert cos.min() > 0.9999
    code, stdout, stderr = cli("embed", "--teacher", f"{folder / 'tiny-0007.params'}#fc1", "--data", faces_small,
                               "--out", tmp_path / "store", "--no-progress")
    assert code == 0 and "50 embeddings (dim 10" in stdout, stderr
    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert manifest["teacher"]["kind"] == "mxnet" and manifest["teacher"]["preprocess"]["std"] == 1.0


def test_float_input_graph_takes_the_project_preprocessing(tmp_path, orl_faces):
    from teachers import Preprocess, load_teacher

    s, rng = Symbol(), np.random.default_rng(1)
    x = s.op("Pooling", "gap", ["data"], global_pool=True, pool_type="avg", kernel=(7, 7))
    w = rng.normal(0, 1, (4, 3)).astype(np.float32)
    s.op("FullyConnected", "fc1", [x], ["weight"], num_hidden=4, no_bias=True)
    s.save(tmp_path / "m-symbol.json")
    write_params(tmp_path / "m-0001.params", {"arg:fc1_weight": w})
    teacher = load_teacher(tmp_path / "m-symbol.json")
    assert teacher.preprocess == Preprocess()
    expected = ((orl_faces.astype(np.float64) - 127.5) / 128).mean(axis=(1, 2)) @ w.T
    np.testing.assert_allclose(np.asarray(teacher.embed(orl_faces)), expected, atol=1e-5)


def test_bad_checkpoints_fail_in_one_line(tiny, tmp_path, cli):
    from teachers import TeacherError, load_teacher
    from teachers.mxnet_params import read_params
    from teachers.mxnet_teacher import MXNetCheckpoint

    folder, symbol, params = tiny
    data = (folder / "tiny-0007.params").read_bytes()
    (tmp_path / "cut-0000.params").write_bytes(data[:900])
    with pytest.raises(TeacherError, match=r"^cut-0000\.params: truncated: array \d+ of 23 needs \d+ bytes, \d+ left$"):
        read_params(tmp_path / "cut-0000.params")
    (tmp_path / "h5-0000.params").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(TeacherError, match=r"^h5-0000\.params: not an MXNet \.params file \(list magic"):
        read_params(tmp_path / "h5-0000.params")

    code, _, stderr = cli("convert", "mxnet2keras", tmp_path / "h5-0000.params", tmp_path / "x.keras")
    assert code != 0 and error_lines(stderr) == [f"error: {tmp_path / 'h5-0000.params'}: no symbol file "
                                                 "h5-symbol.json beside it (MXNet checkpoints are "
                                                 "PREFIX-symbol.json + PREFIX-EPOCH.params)"]
    with pytest.raises(TeacherError, match=r"model\.onnx: not an MXNet checkpoint"):
        MXNetCheckpoint.find(tmp_path / "model.onnx")
    with pytest.raises(TeacherError, match=r"lone-0000\.params: no symbol file lone-symbol\.json beside it"):
        load_teacher(_touch(tmp_path / "lone-0000.params"))
    with pytest.raises(TeacherError, match=r"solo-symbol\.json: no parameter file solo-EPOCH\.params beside it"):
        load_teacher(_touch(tmp_path / "solo-symbol.json"))
    two = tmp_path / "two"
    two.mkdir()
    for name in ("m-symbol.json", "m-0001.params", "m-0002.params"):
        _touch(two / name)
    with pytest.raises(TeacherError, match=r"several parameter files beside it \(m-0001\.params, m-0002\.params\)"):
        load_teacher(two / "m-symbol.json")

    with pytest.raises(TeacherError, match=r"tiny-symbol\.json: node 'fc1_softmax' uses op 'SoftmaxOutput', which "
                                           r"this converter does not support; supported: .*Convolution"):
        load_teacher(f"{symbol}#fc1_softmax")

    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "tiny-symbol.json").write_text(symbol.read_text())
    arrays = {k: v.astype(np.float32) for k, v in params.items() if k != "arg:dil_weight"}
    write_params(partial / "tiny-0000.params", arrays)
    code, _, stderr = cli("convert", "mxnet2keras", partial / "tiny-0000.params", tmp_path / "x.keras")
    assert code != 0 and error_lines(stderr) == [
        "error: tiny-0000.params: no array 'arg:dil_weight' or 'aux:dil_weight' for node 'dil' (Convolution)"]
    assert not (tmp_path / "x.keras").exists()


def _touch(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def test_y1_matches_its_independent_tflite_conversion():
    """InsightFace's MobileFaceNet y1 converted here vs the TFLite file converted elsewhere."""
    if not (Y1 / "model-symbol.json").is_file() or not GLINT.is_dir():
        pytest.skip(f"{Y1} or {GLINT} is absent (shared teacher files are not part of the repository)")
    from distill.data.images import read_image
    from teachers import Preprocess, load_teacher

    people = sorted(p for p in GLINT.iterdir() if p.is_dir())[:8]
    images = np.stack([read_image(path) for person in people for path in sorted(person.glob("*.jpg"))[:4]])
    labels = np.repeat(np.arange(len(people)), 4)
    mxnet = load_teacher(Y1 / "model-0000.params")
    tflite = load_teacher(Y1 / "mobilefacenet.tflite", Preprocess(mean=0.0, std=1.0))   # RGB, raw 0-255
    assert mxnet.embedding_dim == 128 and mxnet.preprocess == Preprocess(mean=0.0, std=1.0)
    a, b = mxnet(images), tflite(images)
    assert np.sum(a * b, axis=1).min() >= 0.9999
    cos = a @ a.T
    same = labels[:, None] == labels[None, :]
    assert cos[same & ~np.eye(len(a), dtype=bool)].mean() > cos[~same].mean() + 0.3
