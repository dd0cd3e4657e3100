"""IResNet backbones: InsightFace structure, 7×7×512 features, published parameter counts."""
from __future__ import annotations

import numpy as np
import pytest



def torch_parameter_count(depth: int, embedding: int = 512) -> int:
    """``sum(p.numel() for p in model.parameters())`` of arcface_torch's IResNet (fc + features
    BN included), counted from the architecture description independently of the Keras code."""
    from teachers.iresnet import IRESNET_LAYERS

    total = 27 * 64 + 2 * 64 + 64                        # conv1, bn1, prelu
    cin = 64
    for blocks, c in zip(IRESNET_LAYERS[depth], (64, 128, 256, 512)):
        for b in range(blocks):
            total += 2 * cin + 9 * cin * c + 2 * c + c + 9 * c * c + 2 * c
            if b == 0:                                   # stride 2: conv1×1 + BN shortcut
                total += cin * c + 2 * c
            cin = c
    return total + 2 * 512 + (512 * 49 * embedding + embedding) + 2 * embedding


def trainable(model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


@pytest.mark.parametrize("depth", [18, 34])
def test_small_iresnets_give_7x7x512_and_a_512d_embedding(depth):
    import keras

    from distill.models import build_embedding_model

    model = build_embedding_model(f"iresnet{depth}", embedding_size=512, output_layer="E")
    backbone = model.layers[1]
    assert backbone.output.shape[1:] == (7, 7, 512) and model.output.shape[1:] == (512,)
    assert trainable(model) == torch_parameter_count(depth)
    kinds = [type(layer).__name__ for layer in backbone.layers if layer.name.startswith("layer1_0_")]
    assert kinds == ["BatchNormalization", "Conv2D", "BatchNormalization", "PReLU", "ZeroPadding2D",
                     "Conv2D", "Conv2D", "BatchNormalization", "BatchNormalization", "Add"]
    if depth == 18:
        out = model(np.random.default_rng(0).normal(size=(2, 112, 112, 3)).astype("float32"))
        assert out.shape == (2, 512) and np.all(np.isfinite(keras.ops.convert_to_numpy(out)))


@pytest.mark.parametrize("depth, published", [(50, 43.6e6), (100, 65.2e6)])
def test_parameter_counts_match_insightface(depth, published):
    from distill.models import build_embedding_model

    model = build_embedding_model(f"iresnet{depth}", embedding_size=512, output_layer="E")
    count = trainable(model)
    assert count == torch_parameter_count(depth)         # r50: 43,590,848; r100: 65,156,160
    assert abs(count - published) < 0.05e6
