"""ONNX, TFLite and plugin teachers give the embeddings of the model they wrap (real faces)."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest

from conftest import ORL


def cosine(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def faces():
    from distill.data.images import read_image

    return np.stack([read_image(ORL / f"s{p}" / f"{i}.png") for p in (1, 2, 3) for i in (1, 2, 3)])


@pytest.fixture(scope="module")
def keras_teacher(tmp_path_factory):
    """A small conv net saved as .keras, and its embeddings through the Keras teacher."""
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((112, 112, 3))
    x = keras.layers.Conv2D(8, 5, strides=4, activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(24)(x))
    model.layers[2].set_weights([w + np.random.default_rng(0).uniform(0.1, 0.5, w.shape).astype(np.float32)
                                 for w in model.layers[2].get_weights()])  # non-trivial BN
    path = tmp_path_factory.mktemp("keras") / "teacher.keras"
    model.save(path)
    return model, path


def reference(keras_teacher, faces):
    from teachers import load_teacher

    return np.asarray(load_teacher(keras_teacher[1]).embed(faces))


def test_onnx_teacher_from_tf2onnx_matches_keras(tmp_path, keras_teacher, faces, faces_small, cli):
    import tensorflow as tf
    import tf2onnx

    from teachers import load_teacher

    model, _ = keras_teacher
    path = tmp_path / "teacher.onnx"
    spec = (tf.TensorSpec((None, 112, 112, 3), tf.float32, name="image"),)
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=13, output_path=str(path))
    teacher = load_teacher(path)
    assert teacher.kind == "onnx" and teacher.preprocess.layout == "NHWC"
    assert teacher.embedding_dim == 24 and teacher.describe()["sha256"]
    assert cosine(teacher.embed(faces), reference(keras_teacher, faces)).min() > 0.9999

    code, out, err = cli("embed", "--teacher", path, "--data", faces_small, "--out", tmp_path / "store",
                         "--no-progress")
    assert code == 0 and "50 embeddings (dim 24" in out, err


def nchw_patch_model(path, rng):
    """An NCHW ONNX graph built with the onnx helper API: 4×4/4 conv → ReLU → flatten → dense.
    Returns the weights for the NumPy reference."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = rng.normal(0, 0.2, (8, 3, 4, 4)).astype(np.float32)
    b = rng.normal(0, 0.1, 8).astype(np.float32)
    g = rng.normal(0, 0.02, (20, 8 * 28 * 28)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[4, 4], strides=[4, 4]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "g"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, "patch", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 112, 112])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 20])],
        [numpy_helper.from_array(a, n) for a, n in ((w, "w"), (b, "b"), (g, "g"))])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return w, b, g


def test_onnx_nchw_graph_with_bgr_preprocess_matches_numpy(tmp_path, faces):
    from teachers import Preprocess, load_teacher

    w, b, g = nchw_patch_model(tmp_path / "nchw.onnx", np.random.default_rng(1))
    teacher = load_teacher(tmp_path / "nchw.onnx", Preprocess(std=127.5, channel_order="BGR"))
    assert teacher.preprocess.layout == "NCHW"            # read from the graph's input shape
    x = (faces[..., ::-1].astype(np.float32) - 127.5) / 127.5
    patches = x.transpose(0, 3, 1, 2).reshape(len(x), 3, 28, 4, 28, 4)
    conv = np.einsum("bchiwj,ocij->bohw", patches, w) + b[None, :, None, None]
    expected = np.maximum(conv, 0).reshape(len(x), -1) @ g.T
    assert cosine(teacher.embed(faces), expected).min() > 0.9999


def test_tflite_teacher_matches_keras_for_any_batch(tmp_path, keras_teacher, faces):
    import tensorflow as tf

    from teachers import load_teacher

    path = tmp_path / "teacher.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(keras_teacher[0]).convert())
    teacher = load_teacher(path)
    assert teacher.kind == "tflite" and teacher.embedding_dim == 24
    expected = reference(keras_teacher, faces)
    got = np.concatenate([teacher.embed(faces[:5]), teacher.embed(faces[5:])])  # batch 5, then 4
    assert cosine(got, expected).min() > 0.9999


def test_plugin_teacher_wraps_any_callable(tmp_path, keras_teacher, faces, monkeypatch):
    from teachers import Preprocess, TeacherError, load_teacher

    (tmp_path / "my_plugin.py").write_text(textwrap.dedent(f"""
        import keras
        import numpy as np

        MODEL = keras.models.load_model({str(keras_teacher[1])!r}, compile=False)

        def embed(batch):
            assert batch.dtype == np.uint8 and batch.shape[1:] == (112, 112, 3)
            return MODEL((batch.astype("float32") - 127.5) / 128.0, training=False)

        def embed_normalized(batch):
            assert batch.dtype == np.float32
            return MODEL(batch, training=False).numpy()

        embed_normalized.distill_input = "normalized"
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    teacher = load_teacher("my_plugin:embed")
    assert teacher.kind == "plugin" and teacher.preprocess == Preprocess(mean=0.0, std=1.0)
    assert cosine(teacher.embed(faces), reference(keras_teacher, faces)).min() > 0.9999
    declared = load_teacher("my_plugin:embed_normalized")
    assert declared.preprocess == Preprocess()
    assert cosine(declared.embed(faces), reference(keras_teacher, faces)).min() > 0.9999
    with pytest.raises(TeacherError, match="takes raw pixels; preprocessing options .* cannot apply"):
        load_teacher("my_plugin:embed", Preprocess())  # e.g. --rgb given to a raw-pixel plugin

    with pytest.raises(TeacherError, match="no_such_module_xyz:f: cannot import module"):
        load_teacher("no_such_module_xyz:f")
    with pytest.raises(TeacherError, match="has no attribute 'nope'"):
        load_teacher("my_plugin:nope")
    with pytest.raises(TeacherError, match=r"missing\.onnx: model file does not exist"):
        load_teacher(tmp_path / "missing.onnx")


def test_savedmodel_teacher_matches_keras_model(tmp_path):
    """A SavedModel folder (Keras `model.export`) teaches like the Keras model it came from."""
    import numpy as np

    from distill.data.preprocess import normalize
    from distill.models import build_embedding_model
    from teachers import load_teacher

    model = build_embedding_model("mobilenet", embedding_size=16, alpha=0.25)
    model.export(str(tmp_path / "saved"))
    teacher = load_teacher(tmp_path / "saved")
    images = np.random.default_rng(0).integers(0, 256, (5, 112, 112, 3), dtype=np.uint8)
    np.testing.assert_allclose(teacher.embed(images).numpy(),
                               model.predict(normalize(images), verbose=0), atol=1e-5)
    assert teacher.kind == "keras" and teacher.embedding_dim == 16 and len(teacher.sha256) == 64
