"""The loss registry (names, defaults, errors) and the training objective."""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import tensorflow as tf

from distill import losses
from distill.losses.objective import build_objective

EXPECTED = {
    "classification": ["softmax", "scale_softmax", "margin_softmax", "combined_margin", "arcface",
                       "cosface", "sphereface", "sphere_arc", "cm1", "cm2", "adacos",
                       "curricularface", "magface", "adaface", "adadistill"],
    "metric": ["triplet_batch_hard", "triplet_batch_all", "triplet_semihard", "center"],
    "distillation": ["l2", "cosine", "kl", "rkd_distance", "rkd_angle", "similarity", "critical_rank_kl", "ekd"],
}


def test_available_is_ordered_and_complete():
    specs = losses.available()
    assert list(specs) == [n for names in EXPECTED.values() for n in names]
    for kind, names in EXPECTED.items():
        assert all(specs[n].kind == kind and specs[n].doc and specs[n].reference for n in names)


@pytest.mark.parametrize("name", list(losses.available()))
def test_defaults_match_the_factories(name):
    spec = losses.available()[name]
    factory = spec.load()
    signature = inspect.signature(factory.__init__ if inspect.isclass(factory) else factory)
    params = {k: p.default for k, p in signature.parameters.items() if k != "self"}
    assert set(params) == set(spec.defaults)
    if name not in ("sphere_arc", "cm1", "cm2", "combined_margin"):
        assert params == spec.defaults
    loss = losses.get(name)
    assert loss.kind == spec.kind
    assert isinstance(loss.needs_norms, bool)


def test_unknown_name_and_param_errors():
    with pytest.raises(ValueError, match=r"unknown loss 'arcfce' \(did you mean arcface.*available: softmax"):
        losses.get("arcfce")
    with pytest.raises(ValueError, match=r"no parameter 'scal' \(did you mean scale\?\); valid: scale, margin"):
        losses.get("arcface", scal=30)
    with pytest.raises(ValueError, match="m1 > 0"):
        losses.get("combined_margin", m1=0.0)


def data(batch=8, classes=4, dim=6, teacher_dim=6, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), batch // classes).astype(np.int32)
    emb = rng.normal(size=(batch, dim)).astype(np.float32)
    weights = rng.normal(size=(dim, classes))
    cosine = ((emb / np.linalg.norm(emb, axis=1, keepdims=True))
              @ (weights / np.linalg.norm(weights, axis=0))).astype(np.float32)
    teacher = rng.normal(size=(batch, teacher_dim)).astype(np.float32)
    return labels, cosine, emb, teacher


def test_objective_terms_and_total():
    labels, cosine, emb, teacher = data()
    objective = build_objective({"name": "arcface", "scale": 32.0, "margin": 0.4},
                                {"name": "l2", "weight": 7.0},
                                {"name": "triplet_semihard", "weight": 0.5, "margin": 0.2},
                                {"name": "center", "weight": 0.1, "alpha": 0.2})
    out = objective(labels, cosine, emb, teacher_embeddings=teacher)
    assert list(out) == ["total", "classification", "distill", "triplet", "center"]
    assert all(v.shape == () and v.dtype == tf.float32 for v in out.values())
    cls = losses.get("arcface", scale=32.0, margin=0.4)(labels, cosine).numpy().mean()
    dis = losses.get("l2")(emb, teacher).numpy().mean()
    tri = losses.get("triplet_semihard", margin=0.2)(labels, emb).numpy().mean()
    cen = losses.get("center", num_classes=4, embedding_dim=6)(labels, emb).numpy().mean()
    np.testing.assert_allclose([out[k].numpy() for k in ("classification", "distill", "triplet", "center")],
                               [cls, dis, tri, cen], rtol=1e-5, atol=1e-5)
    assert float(out["total"]) == pytest.approx(cls + 7 * dis + 0.5 * tri + 0.1 * cen, rel=1e-5)
    assert objective.trainable_variables == []
    assert len(objective.variables) == 1 and tuple(objective.variables[0].shape) == (4, 6)


def test_weight_zero_or_none_is_not_computed():
    labels, cosine, emb, _ = data()
    objective = build_objective({"name": "cosface"}, {"name": "l2", "weight": 0.0}, None,
                                {"name": "center", "weight": None})
    assert [term.label for term in objective.terms] == ["classification"]
    out = objective(labels, cosine, emb)  # no teacher needed
    assert list(out) == ["total", "classification"]
    assert float(out["total"]) == float(out["classification"])


def test_sample_weight_norms_projection_and_errors():
    labels, cosine, emb, teacher = data(teacher_dim=10)
    objective = build_objective({"name": "magface"}, {"weight": 64.0}, embedding_dim=6, teacher_dim=10)
    assert objective.needs_norms and len(objective.trainable_variables) == 1
    weight = np.array([1, 0, 1, 0, 1, 0, 2, 0], np.float32)
    out = objective(labels, cosine, emb, teacher, sample_weight=weight)
    per_sample = losses.get("magface")(labels, cosine, np.linalg.norm(emb, axis=1)).numpy()
    assert float(out["classification"]) == pytest.approx((per_sample * weight).sum() / weight.sum(), rel=1e-5)
    with pytest.raises(ValueError, match="teacher_embeddings"):
        objective(labels, cosine, emb)
    with pytest.raises(ValueError, match="is a metric loss, not classification"):
        build_objective({"name": "center"})
    with pytest.raises(ValueError, match="not distillation; valid: l2, cosine, kl"):
        build_objective({"name": "softmax"}, {"name": "arcface", "weight": 1.0})


def test_objective_in_tf_function_with_gradients():
    labels, cosine, emb, teacher = data(teacher_dim=3)
    objective = build_objective({"name": "adaface"}, {"name": "cosine", "weight": 2.0},
                                {"name": "triplet_batch_hard", "weight": 1.0},
                                {"weight": 0.01}, num_classes=4, embedding_dim=6, teacher_dim=3)
    emb_var = tf.Variable(emb)
    variables = [emb_var] + objective.trainable_variables

    @tf.function
    def step(labels, cosine, teacher):
        with tf.GradientTape() as tape:
            terms = objective(labels, cosine, emb_var, teacher_embeddings=teacher,
                              norms=tf.norm(emb_var, axis=1))
        return terms, tape.gradient(terms["total"], variables)

    terms, grads = step(labels, cosine, teacher)
    assert set(terms) == {"total", "classification", "distill", "triplet", "center"}
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)
    assert len(objective.variables) == 1 + 2 + 1  # projection, adaface stats, centres
