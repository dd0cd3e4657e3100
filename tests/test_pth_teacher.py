"""arcface_torch ``backbone.pth`` loaded without PyTorch matches PyTorch's own outputs.

The fixture ``tests/data/pth/`` was made once with real PyTorch (torch 2.13.0+cpu) by
``tests/fixtures/make_pth_fixture.py`` (its docstring says how to rerun it): a tiny IResNet in
arcface_torch's structure (blocks (1, 2, 1, 1), widths (8, 16, 16, 32), 16-d features, random
weights, BN statistics and PReLU slopes) saved with ``torch.save`` as float32 and as fp16 with
DataParallel's ``module.`` prefix, plus three uint8 images and torch's eval-mode outputs. These
tests never import torch: other ``.pth`` files (malicious, strided, wrong keys) are written
here by :func:`write_pth`, which pickles through stand-in ``torch`` modules.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data" / "pth"


@pytest.fixture(scope="module")
def torch_io():
    return dict(np.load(DATA / "io.npz"))


def deviation(got, ref):
    """(max |got − ref| relative to max |ref|, 1 − min cosine)."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    cos = np.sum(got * ref, 1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    return np.abs(got - ref).max() / np.abs(ref).max(), 1 - cos.min()


class _Storage:
    def __init__(self, key, array):
        self.key, self.array = key, array


def write_pth(path: Path, obj, protocol: int = 2) -> Path:
    """``torch.save``'s zip layout for ``obj`` (NumPy arrays become tensors; an array given as
    ``(storage_array, offset, size, stride)`` becomes a strided view), pickled through stand-in
    ``torch`` / ``torch._utils`` modules (present only while pickling: Keras looks for a loaded
    torch) so that the globals read as torch's own."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    kinds = {np.dtype("float32"): "FloatStorage", np.dtype("float16"): "HalfStorage", np.dtype("int64"): "LongStorage"}
    for name in kinds.values():
        setattr(torch, name, type(name, (), {"__module__": "torch"}))

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2, torch._utils = _rebuild_tensor_v2, utils
    storages = []

    class Tensor:
        def __init__(self, value):
            array, self.offset, self.size, self.stride = value if isinstance(value, tuple) else (
                value, 0, value.shape, tuple(s // value.itemsize for s in value.strides))
            known = [st for st in storages if st.source is array]     # one storage per array object
            if not known:
                storages.append(_Storage(str(len(storages)), np.ascontiguousarray(array).ravel()))
                storages[-1].source = array
            self.storage = (known or storages)[-1]

        def __reduce__(self):
            return _rebuild_tensor_v2, (self.storage, self.offset, tuple(self.size), tuple(self.stride),
                                        False, collections.OrderedDict())

    class Pickler(pickle.Pickler):
        def persistent_id(self, value):
            if isinstance(value, _Storage):
                kind = getattr(torch, kinds[value.array.dtype])
                return ("storage", kind, value.key, "cpu", value.array.size)
            return None

    def wrap(value):
        if isinstance(value, dict):
            return collections.OrderedDict((k, wrap(v)) for k, v in value.items())
        return Tensor(value) if isinstance(value, (np.ndarray, tuple)) else value

    buffer = io.BytesIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "torch", torch)
        patch.setitem(sys.modules, "torch._utils", utils)
        Pickler(buffer, protocol=protocol).dump(wrap(obj))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        archive.writestr("archive/byteorder", "little")
        for storage in storages:
            archive.writestr(f"archive/data/{storage.key}", storage.array.tobytes())
        archive.writestr("archive/version", "3\n")
    return path


def test_float32_checkpoint_matches_torch(torch_io):
    from teachers import load_teacher

    teacher = load_teacher(DATA / "backbone.pth")
    assert teacher.kind == "pth" and teacher.embedding_dim == 16
    assert (teacher.preprocess.mean, teacher.preprocess.std, teacher.preprocess.channel_order) == (127.5, 127.5, "RGB")
    assert teacher.layout == {"blocks": (1, 2, 1, 1), "widths": (8, 16, 16, 32), "embedding": 16,
                              "side": 7, "input_size": 112}
    relative, cosine = deviation(teacher.embed(torch_io["images"]), torch_io["features"])
    assert relative < 1e-5 and cosine < 1e-6            # measured: 6.3e-7 and 3e-13


def test_fp16_checkpoint_with_module_prefix_matches_torch(torch_io):
    """fp16 weights are cast to float32: the reference is torch run with those same weights in
    float32, so the tolerance is the float32 one; the fp16 rounding itself (vs the float32
    model) is ~1e-3 of the scale, far above it — the check does see which weights ran."""
    from teachers import load_teacher
    from teachers.torch_checkpoint import read_state_dict

    state = read_state_dict(DATA / "backbone_fp16.pth")
    assert state["conv1.weight"].dtype == np.float16 and not any(k.startswith("module.") for k in state)
    assert state["layer1.0.bn1.num_batches_tracked"].dtype == np.int64
    got = load_teacher(DATA / "backbone_fp16.pth").embed(torch_io["images"])
    relative, cosine = deviation(got, torch_io["features_fp16"])
    assert relative < 1e-5 and cosine < 1e-6
    assert deviation(got, torch_io["features"])[0] > 1e-4


def test_converted_keras_model_runs_as_a_keras_teacher(tmp_path, torch_io, cli, faces_small):
    from teachers import load_teacher

    code, out, err = cli("convert", "pth2keras", DATA / "backbone.pth", tmp_path / "r.keras")
    assert code == 0 and "widths (8, 16, 16, 32), 16-d embedding" in out, err
    teacher = load_teacher(tmp_path / "r.keras")          # the project's default input contract
    assert teacher.kind == "keras" and teacher.preprocess.std == 128.0
    relative, cosine = deviation(teacher.embed(torch_io["images"]), torch_io["features"])
    assert relative < 1e-5 and cosine < 1e-6

    code, out, err = cli("embed", "--teacher", DATA / "backbone.pth", "--data", faces_small,
                         "--out", tmp_path / "store", "--no-progress")
    assert code == 0 and "50 embeddings (dim 16" in out, err


def test_strided_views_and_shared_storages_are_read_like_torch(tmp_path):
    from teachers.torch_checkpoint import read_torch_checkpoint

    base = np.arange(24, dtype=np.float32)
    path = write_pth(tmp_path / "views.pth", {
        "transposed": (base[:12], 0, (4, 3), (1, 4)),            # torch's t() of a 3×4 tensor
        "window": (base, 6, (2, 2), (4, 1)),                      # x.view(6, 4)[1:3, 2:4]
        "row": (base, 20, (4,), (1,)),                            # x.view(6, 4)[5]: same storage
        "half": np.linspace(-2, 2, 5).astype(np.float16),
        "count": np.array(7, np.int64)})
    got = read_torch_checkpoint(path)
    assert np.array_equal(got["transposed"], base[:12].reshape(3, 4).T)
    assert np.array_equal(got["window"], base.reshape(6, 4)[1:3, 2:4])
    assert np.array_equal(got["row"], base[20:]) and len(zipfile.ZipFile(path).namelist()) == 7
    assert got["half"].dtype == np.float16 and got["count"].shape == () and got["count"] == 7
    with pytest.raises(ValueError, match=r"views.pth: .*runs past its storage"):
        read_torch_checkpoint(write_pth(tmp_path / "views.pth", {"x": (base[:4], 2, (3,), (1,))}))


class _Call:
    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize("function, protocol, named", [   # protocol 2 names builtins __builtin__
    (os.system, 2, f"{os.system.__module__}.system"), (exec, 2, "__builtin__.exec"),
    (os.system, 4, f"{os.system.__module__}.system"), (exec, 4, "builtins.exec"),
])
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, function, protocol, named):
    from teachers import TeacherError, load_teacher

    sentinel = tmp_path / "SENTINEL"
    code = f"touch {sentinel}" if function is os.system else f"open({str(sentinel)!r}, 'w')"
    path = write_pth(tmp_path / "evil.pth", {"conv1.weight": np.ones(3, np.float32),
                                             "payload": _Call(function, code)}, protocol)
    with pytest.raises(TeacherError) as info:
        load_teacher(path)
    message = str(info.value)
    assert message.startswith(f"{path}: refused to load global") and named in message and "\n" not in message
    assert not sentinel.exists()


def test_truncated_corrupt_legacy_and_foreign_files_are_one_line_errors(tmp_path):
    from teachers import TeacherError
    from teachers.torch_checkpoint import read_state_dict

    good = (DATA / "backbone.pth").read_bytes()
    cases = {"cut.pth": (good[: len(good) // 2], "truncated or corrupt zip"),
             "tail.pth": (good[:-30], "truncated or corrupt zip"),
             "legacy.pth": (b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.\x80\x02M\xe9\x03.",
                            "legacy .* re-save it with a current torch"),
             "text.pth": (b"hello, not a checkpoint", "not a PyTorch checkpoint")}
    with zipfile.ZipFile(DATA / "backbone.pth") as archive:   # one storage byte flipped: CRC error
        name = next(n for n in archive.namelist() if n.endswith("/data/0"))
        offset = good.index(archive.read(name)[:64])
    cases["crc.pth"] = (good[:offset] + bytes([good[offset] ^ 1]) + good[offset + 1:], "truncated or corrupt zip")
    for name, (data, pattern) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(TeacherError, match=rf"^{tmp_path / name}: {pattern}") as info:
            read_state_dict(tmp_path / name)
        assert "\n" not in str(info.value)


def test_a_state_dict_that_is_not_an_iresnet_names_the_key(tmp_path):
    from teachers import TeacherError, load_teacher
    from teachers.torch_checkpoint import read_state_dict

    state = read_state_dict(DATA / "backbone.pth")
    extra = dict(state, **{"head.weight": np.ones(2, np.float32)})
    missing = {k: v for k, v in state.items() if k != "layer2.1.bn3.running_var"}
    other = {"encoder.weight": np.ones((4, 4), np.float32)}
    wrong = dict(state, **{"layer3.0.prelu.weight": np.ones(5, np.float32)})
    flat = dict(state, **{"layer4.0.conv2.weight": np.ones(5, np.float32)})
    for name, value, pattern in [("extra", extra, "unexpected key 'head.weight'"),
                                 ("missing", missing, "missing key 'layer2.1.bn3.running_var'"),
                                 ("other", other, "missing key 'layer1.0.conv1.weight'"),
                                 ("wrong", wrong, r"layer3.0.prelu has shape \(1, 1, 5\)"),
                                 ("flat", flat, "layer4.0.conv2 has a wrong shape")]:
        path = write_pth(tmp_path / f"{name}.pth", value)
        with pytest.raises(TeacherError, match=rf"^{path}: .*{pattern}"):
            load_teacher(path)
