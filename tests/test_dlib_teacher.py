"""The dlib teacher plugin: its wiring with a fake dlib (always), the real model when the
``[dlib]`` extra is installed, and its input contract through ``distill embed``."""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest


class FakeDlib:
    """Records what the plugin hands to dlib; descriptors are a function of the pixels."""

    def __init__(self):
        self.calls = []
        module = types.ModuleType("dlib")
        module.rectangle = lambda *box: tuple(box)
        module.full_object_detections = list
        module.shape_predictor = lambda path: self.predict
        module.face_recognition_model_v1 = lambda path: types.SimpleNamespace(
            compute_face_descriptor=self.describe)
        self.module = module

    def predict(self, image, box):
        self.calls.append(("shape", image.shape, box))
        return {"image": image, "box": box}

    def describe(self, images, shapes, jitters, padding):
        self.calls.append(("describe", len(images), jitters, padding))
        out = []
        for image in images:
            values = image.reshape(-1, 3).mean(axis=0)
            out.append([np.resize(np.r_[values, image[0, 0]], 128)])
        return out


@pytest.fixture()
def fake_dlib(monkeypatch):
    from teachers import dlib_resnet

    fake = FakeDlib()
    files = types.ModuleType("face_recognition_models")
    files.pose_predictor_five_point_model_location = lambda: "shape_predictor_5.dat"
    files.face_recognition_model_location = lambda: "resnet.dat"
    monkeypatch.setitem(sys.modules, "dlib", fake.module)
    monkeypatch.setitem(sys.modules, "face_recognition_models", files)
    dlib_resnet.models.cache_clear()
    yield fake
    dlib_resnet.models.cache_clear()


def test_plugin_pads_places_the_box_and_batches_one_dlib_call(fake_dlib):
    from teachers import dlib_resnet

    images = np.random.default_rng(0).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    out = dlib_resnet.embed(images)
    assert out.shape == (3, 128) and out.dtype == np.float32
    pad = dlib_resnet.PAD
    box = tuple(v + pad for v in dlib_resnet.FACE_BOX)
    shapes = [c for c in fake_dlib.calls if c[0] == "shape"]
    assert shapes == [("shape", (112 + 2 * pad,) * 2 + (3,), box)] * 3
    assert [c for c in fake_dlib.calls if c[0] == "describe"] == [("describe", 3, 0, 0.25)]
    # reflection padding: the padded image's corner pixel mirrors the crop (pixel [pad, pad])
    expected = np.pad(images[1], ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    np.testing.assert_allclose(out[1][:3], expected.reshape(-1, 3).mean(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(out[1][3:6], images[1][pad, pad])
    with pytest.raises(ValueError, match="uint8 RGB NHWC"):
        dlib_resnet.embed(images.astype(np.float32))


def test_embed_cli_with_the_plugin_records_raw_pixels_and_refuses_preprocessing(fake_dlib, cli, faces_small, tmp_path):
    from distill.store import Store

    code, out, err = cli("embed", "--teacher", "teachers.dlib_resnet:embed", "--data", faces_small,
                         "--out", tmp_path / "store", "--no-progress", "--batch-size", "16")
    assert code == 0, err
    manifest = Store(tmp_path / "store").manifest
    assert manifest.embedding_dim == 128 and manifest.teacher["kind"] == "plugin"
    assert manifest.teacher["preprocess"]["mean"] == 0.0 and manifest.teacher["preprocess"]["std"] == 1.0
    code, out, err = cli("embed", "--teacher", "teachers.dlib_resnet:embed", "--data", faces_small,
                         "--out", tmp_path / "store2", "--rgb")
    assert code == 2 and "declares distill_input = 'uint8'" in err and "cannot apply" in err


def test_missing_extra_is_one_clear_error(monkeypatch):
    from teachers import dlib_resnet

    monkeypatch.setitem(sys.modules, "dlib", None)   # import dlib → ImportError
    dlib_resnet.models.cache_clear()
    try:
        with pytest.raises(dlib_resnet.DlibUnavailable, match=r"pip install 'distill\[dlib\]'"):
            dlib_resnet.embed(np.zeros((1, 112, 112, 3), np.uint8))
    finally:
        dlib_resnet.models.cache_clear()


def test_real_dlib_model_on_aligned_faces():
    """With the extra installed: 128-d descriptors, a mirrored face stays close to itself and
    closer than another person (ORL faces, centre-cropped to the ArcFace framing)."""
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    from PIL import Image

    from teachers import dlib_resnet
    from tests.conftest import ORL

    def face(person, index):
        image = Image.open(ORL / person / f"{index}.png").convert("RGB")
        return np.asarray(image.crop((4, 12, 88, 96)).resize((112, 112), Image.BILINEAR))

    images = np.stack([face("s1", 1), face("s1", 1)[:, ::-1], face("s2", 1)])
    out = dlib_resnet.embed(images)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    assert out.shape == (3, 128) and np.all(np.isfinite(out))
    assert out[0] @ out[1] > 0.95 and out[0] @ out[1] > out[0] @ out[2]
