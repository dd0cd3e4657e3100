"""Partial FC (`loss.sample_rate`): at rate 1 the sampled path equals the full classifier (loss
and gradients); at 0.1 the sampled cosines are the right columns of the full (NumPy) cosine
matrix, positives always included; recipes validate the rate; training runs with it."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from distill.losses.objective import build_objective
from distill.losses.partial_fc import num_sampled, sample_classes, sampled_cosines
from distill.models.classifier import CosineClassifier

B, C, D = 8, 50, 12


def setup(sub_centers=1, seed=0):
    rng = np.random.default_rng(seed)
    classifier = CosineClassifier(C, sub_centers=sub_centers)
    classifier.build((None, D))
    classifier.kernel.assign(rng.normal(size=(D, C * sub_centers)).astype(np.float32))
    embeddings = tf.Variable(rng.normal(size=(B, D)).astype(np.float32))
    labels = np.array([3, 17, 3, -1, 42, 17, 42, 3], dtype=np.int64)
    return classifier, embeddings, labels


def numpy_cosines(kernel, embeddings, sub_centers=1):
    """The full cosine matrix [B, C] computed independently in NumPy (float64)."""
    x = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    w = kernel / np.linalg.norm(kernel, axis=0, keepdims=True)
    return np.clip(x @ w, -1, 1).reshape(len(x), -1, sub_centers).max(axis=-1)


@pytest.mark.parametrize("loss", [{"name": "arcface"}, {"name": "adaface"}, {"name": "curricularface"}])
def test_rate_one_equals_the_full_classifier_loss_and_gradients(loss):
    classifier, embeddings, labels = setup()
    results = []
    for sampled in (False, True):
        objective = build_objective({**loss, "scale": 16.0})
        with tf.GradientTape() as tape:
            if sampled:
                cosine, columns = sampled_cosines(classifier, embeddings, labels, C, tf.constant([1, 2]))
            else:
                cosine, columns = classifier(embeddings), None
            values = objective(labels, cosine, embeddings, class_labels=columns)
        grads = tape.gradient(values["total"], [classifier.kernel, embeddings])
        results.append((values["total"].numpy(), *[g.numpy() for g in grads]))
    for full, sampled in zip(*results):
        np.testing.assert_allclose(sampled, full, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("sub_centers", [1, 3])
def test_rate_point_one_samples_the_right_columns(sub_centers):
    classifier, embeddings, labels = setup(sub_centers)
    count = num_sampled(C, 0.1)
    assert count == 5
    full = numpy_cosines(classifier.kernel.numpy().astype(np.float64), embeddings.numpy().astype(np.float64),
                         sub_centers)
    seen = set()
    for step in range(6):
        classes, local = sample_classes(labels, C, count, tf.constant([0, step]))
        cosine, local_again = sampled_cosines(classifier, embeddings, labels, count, tf.constant([0, step]))
        classes, local, cosine = classes.numpy(), local.numpy(), cosine.numpy()
        np.testing.assert_array_equal(local, local_again.numpy())
        positives = set(labels[labels >= 0].tolist())
        assert len(classes) == count == 5 and len(positives) == 3
        assert np.all(np.diff(classes) > 0) and positives <= set(classes.tolist())
        assert local[3] == -1 and np.array_equal(classes[local[labels >= 0]], labels[labels >= 0])
        np.testing.assert_allclose(cosine, full[:, classes], atol=1e-5)
        seen.add(tuple(classes.tolist()))
    assert len(seen) > 1        # a different sample every step
    again, _ = sample_classes(labels, C, count, tf.constant([0, 5]))
    assert tuple(again.numpy().tolist()) in seen  # a function of the seed alone


def test_sampled_arcface_equals_arcface_on_the_columns():
    """The margin loss on the sample equals arcface on the full cosines' sampled columns."""
    classifier, embeddings, labels = setup()
    objective = build_objective({"name": "arcface", "scale": 16.0, "sample_rate": 0.1})
    assert objective.sample_rate == 0.1
    cosine, local = sampled_cosines(classifier, embeddings, labels, num_sampled(C, 0.1), tf.constant([4, 4]))
    got = objective(labels, cosine, embeddings, class_labels=local)["classification"].numpy()
    classes, _ = sample_classes(labels, C, 5, tf.constant([4, 4]))
    columns = classifier(embeddings).numpy()[:, classes.numpy()]
    reference = build_objective({"name": "arcface", "scale": 16.0})(local.numpy(), columns, embeddings)
    np.testing.assert_allclose(got, reference["classification"].numpy(), rtol=1e-6)


def test_more_positives_than_the_sample():
    labels = np.array([3, 17, 3, -1, 42, 17, 8, 49])
    classes, local = sample_classes(labels, C, 2, tf.constant([0, 0]))
    assert classes.numpy().tolist() == [3, 8, 17, 42, 49]
    assert local.numpy().tolist() == [0, 2, 0, -1, 3, 2, 1, 4]


def test_recipe_validates_sample_rate():
    from distill.train.recipe import RecipeError, recipe_from_dict

    base = {"data": {"train": "x"}, "stages": [{"epochs": 1}]}
    ok = recipe_from_dict({**base, "loss": {"name": "cosface", "sample_rate": 0.1}})
    assert ok.loss["sample_rate"] == 0.1
    for bad in (0, 1.5, -0.1, "half", True):
        with pytest.raises(RecipeError, match=r"r.yaml: loss.sample_rate must be a number in \(0, 1\]"):
            recipe_from_dict({**base, "loss": {"name": "arcface", "sample_rate": bad}}, "r.yaml")
    with pytest.raises(RecipeError, match="distill.sample_rate: only classification losses"):
        recipe_from_dict({**base, "distill": {"name": "l2", "weight": 1, "sample_rate": 0.5}}, "r.yaml")
    with pytest.raises(RecipeError, match="stages.0.loss.sample_rate must be"):
        recipe_from_dict({**base, "stages": [{"epochs": 1, "loss": {"sample_rate": 2}}]}, "r.yaml")


def test_training_with_partial_fc(faces_small, tmp_path):
    from distill.train.trainer import train

    result = train({"data": {"train": str(faces_small), "augment": "none"},
                    "model": {"alpha": 0.25, "embedding_size": 16},
                    "loss": {"name": "arcface", "scale": 16.0, "margin": 0.3, "sample_rate": 0.4},
                    "train": {"batch_size": 10}, "stages": [{"epochs": 1, "lr": 0.05}]},
                   tmp_path / "run", progress=False)
    assert np.isfinite(result.history[0]["loss"]["classification"])
