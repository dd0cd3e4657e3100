"""Every classification loss (and combinations with distill/triplet/center) trains a small
student for 3 SGD steps on 32 real ORL faces: finite losses and gradients, weights move."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from distill import losses
from distill.data.images import read_image
from distill.data.preprocess import normalize
from distill.losses.objective import build_objective
from distill.models.classifier import CosineClassifier

PEOPLE, PER_PERSON, EMBEDDING, TEACHER = 8, 4, 32, 16


@pytest.fixture(scope="module")
def faces(orl_root):
    paths = [orl_root / f"s{p}" / f"{i}.png" for p in range(1, PEOPLE + 1) for i in range(1, PER_PERSON + 1)]
    images = normalize(np.stack([read_image(path) for path in paths]))
    labels = np.repeat(np.arange(PEOPLE), PER_PERSON).astype(np.int32)
    teacher = np.random.default_rng(0).normal(size=(len(labels), TEACHER)).astype(np.float32)
    return tf.constant(images), tf.constant(labels), tf.constant(teacher)


def student():
    inputs = keras.Input((112, 112, 3))
    x = keras.layers.Conv2D(8, 3, strides=4, activation="relu")(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(EMBEDDING)(x))


CLASSIFICATION = [n for n, s in losses.available().items() if s.kind == "classification"]
COMBOS = [
    ("arcface", {"name": "l2", "weight": 7.0}, None, None),
    ("cosface", None, {"name": "triplet_semihard", "weight": 1.0}, {"weight": 0.01}),
    ("adaface", {"name": "kl", "weight": 1.0}, {"name": "triplet_batch_hard", "weight": 1.0}, None),
    ("softmax", {"name": "cosine", "weight": 2.0}, {"name": "triplet_batch_all", "weight": 1.0},
     {"weight": 0.1, "alpha": 0.1}),
]
CASES = [(name, None, None, None) for name in CLASSIFICATION] + COMBOS


@pytest.mark.parametrize("name,distill,triplet,center", CASES,
                         ids=CLASSIFICATION + [f"combo-{c[0]}" for c in COMBOS])
def test_trains_a_few_steps(faces, name, distill, triplet, center):
    images, labels, teacher = faces
    keras.utils.set_random_seed(0)
    model, classifier = student(), CosineClassifier(PEOPLE)
    classifier.build((None, EMBEDDING))
    own_centres = "cosine" not in losses.spec(name).reads      # adadistill: teacher centres
    if own_centres:
        teacher = tf.tile(teacher, [1, EMBEDDING // TEACHER])      # its centres need the student's dim
    objective = build_objective({"name": name}, distill, triplet, center, num_classes=PEOPLE,
                                embedding_dim=EMBEDDING, teacher_dim=int(teacher.shape[-1]))
    variables = (model.trainable_variables + ([] if own_centres else classifier.trainable_variables)
                 + objective.trainable_variables)
    optimizer = keras.optimizers.SGD(0.01)
    optimizer.build(variables)
    before = [v.numpy().copy() for v in variables]

    @tf.function
    def step(images, labels, teacher):
        with tf.GradientTape() as tape:
            embeddings = tf.cast(model(images, training=True), tf.float32)
            terms = objective(labels, classifier(embeddings), embeddings, teacher_embeddings=teacher,
                              norms=tf.norm(embeddings, axis=1))
        grads = tape.gradient(terms["total"], variables)
        optimizer.apply_gradients(zip(grads, variables))
        return terms, grads

    for _ in range(3):
        terms, grads = step(images, labels, teacher)
        assert all(np.isfinite(v.numpy()) for v in terms.values()), terms
        assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)
    assert set(terms) == {"total", "classification"} | {
        k for k, v in (("distill", distill), ("triplet", triplet), ("center", center)) if v}
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(before, variables))
