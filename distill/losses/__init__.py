"""Loss registry: ``get(name, **params)`` builds a loss, ``available()`` describes them all.

Kinds and call signatures (every loss returns per-sample float32 losses [B]):

- ``classification``: ``loss(labels, cosine, norms=None)``; ``loss.needs_norms``
- ``metric``: ``loss(labels, embeddings)``
- ``distillation``: ``loss(student, teacher)``

This module imports no TensorFlow; a loss's module is imported by :func:`get`.
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field

KINDS = ("classification", "metric", "distillation")


@dataclass(frozen=True)
class LossSpec:
    name: str
    kind: str
    factory: str              # "module:attribute" under distill.losses
    defaults: dict = field(default_factory=dict)
    doc: str = ""
    reference: str = ""

    def load(self):
        module, _, attribute = self.factory.partition(":")
        target = getattr(importlib.import_module(f"distill.losses.{module}"), attribute)
        return target


_SPECS: dict[str, LossSpec] = {}


def register(name, kind, factory, defaults, doc, reference) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown loss kind '{kind}'")
    _SPECS[name] = LossSpec(name, kind, factory, dict(defaults), doc, reference)


_LS = {"label_smoothing": 0.0}
_COMBINED = {"scale": 64.0, "easy_margin": False, **_LS}
_TRIPLET = {"margin": 0.3, "distance": "cosine", "normalize": True}
_INSIGHTFACE = "deepinsight/insightface (combined margin)"

register("softmax", "classification", "softmax:Softmax", _LS,
         "cross-entropy on the logits as given (no scale)", "softmax cross-entropy")
register("scale_softmax", "classification", "softmax:ScaleSoftmax", {"scale": 64.0, **_LS},
         "cross-entropy on s·cosθ", "NormFace, Wang et al. 2017, arXiv:1704.06369")
register("margin_softmax", "classification", "softmax:MarginSoftmax",
         {"scale": 64.0, "power": 2.0, "margin_scale": 0.4, **_LS},
         "target probability p ← (p^power + margin_scale·p)/2 on softmax(s·cosθ)",
         "leondgarse/Keras_insightface losses.margin_softmax")
register("combined_margin", "classification", "margin:CombinedMargin",
         {"scale": 64.0, "m1": 1.0, "m2": 0.3, "m3": 0.2, "easy_margin": False, **_LS},
         "target cos(m1·θ + m2) − m3 with InsightFace's th/mm fallback",
         f"ArcFace paper §3 (arXiv:1801.07698); {_INSIGHTFACE}")
register("arcface", "classification", "margin:arcface", {"scale": 64.0, "margin": 0.5, "easy_margin": False, **_LS},
         "additive angular margin cos(θ + m) = combined (1, m, 0)",
         "ArcFace, Deng et al. CVPR 2019, arXiv:1801.07698")
register("cosface", "classification", "margin:cosface", {"scale": 64.0, "margin": 0.35, **_LS},
         "additive cosine margin cosθ − m = combined (1, 0, m)",
         "CosFace, Wang et al. 2018, arXiv:1801.09414; AM-Softmax arXiv:1801.05599")
register("sphereface", "classification", "margin:sphereface", {"scale": 64.0, "margin": 1.35, **_LS},
         "multiplicative angular margin cos(m·θ) = combined (m, 0, 0)",
         "SphereFace, Liu et al. 2017, arXiv:1704.08063 (combined form of ArcFace paper)")
for _name, _values, _doc in (("sphere_arc", (1.2, 0.4, 0.0), "InsightFace preset (1.2, 0.4, 0)"),
                             ("cm1", (1.0, 0.3, 0.2), "InsightFace CM1 preset (1, 0.3, 0.2)"),
                             ("cm2", (0.9, 0.4, 0.15), "InsightFace CM2 preset (0.9, 0.4, 0.15)")):
    register(_name, "classification", "margin:CombinedMargin",
             {"scale": 64.0, "m1": _values[0], "m2": _values[1], "m3": _values[2],
              "easy_margin": False, **_LS}, _doc, f"ArcFace paper Table 1; {_INSIGHTFACE}")
register("adacos", "classification", "adaptive:AdaCos", {"num_classes": None, **_LS},
         "no margin; dynamic scale log(B_avg)/cos(min(π/4, θ_med))",
         "AdaCos, Zhang et al. CVPR 2019, arXiv:1905.00292")
register("curricularface", "classification", "adaptive:CurricularFace",
         {"scale": 64.0, "margin": 0.5, "momentum": 0.01, **_LS},
         "ArcFace target; hard negatives cos·(t + cos), t = running mean target cosine",
         "CurricularFace, Huang et al. CVPR 2020, arXiv:2004.00288")
register("magface", "classification", "adaptive:MagFace",
         {"scale": 64.0, "l_a": 10.0, "u_a": 110.0, "l_m": 0.45, "u_m": 0.8, "lambda_g": 35.0,
          "easy_margin": False, **_LS},
         "ArcFace margin linear in the feature norm + λ_g·(a/u_a² + 1/a)",
         "MagFace, Meng et al. CVPR 2021, arXiv:2103.06627")
register("adaface", "classification", "adaptive:AdaFace",
         {"scale": 64.0, "margin": 0.4, "h": 0.333, "t_alpha": 0.01, "eps": 1e-3, **_LS},
         "angular and additive margins set by the batch-standardised feature norm",
         "AdaFace, Kim et al. CVPR 2022, arXiv:2204.00964")

register("triplet_batch_hard", "metric", "triplet:BatchHardTriplet", {**_TRIPLET, "soft": False},
         "hardest positive vs hardest negative per anchor",
         "Hermans et al. 2017, arXiv:1703.07737")
register("triplet_batch_all", "metric", "triplet:BatchAllTriplet", {**_TRIPLET, "average": "active"},
         "every valid triplet, mean over active (or all) triplets",
         "Hermans et al. 2017, arXiv:1703.07737")
register("triplet_semihard", "metric", "triplet:SemiHardTriplet", dict(_TRIPLET),
         "semi-hard negatives per positive pair (TF-Addons TripletSemiHardLoss semantics)",
         "FaceNet, Schroff et al. 2015, arXiv:1503.03832; tfa.losses.TripletSemiHardLoss")
register("center", "metric", "center:CenterLoss",
         {"alpha": 0.5, "normalize": True, "num_classes": None, "embedding_dim": None},
         "½‖x − c_y‖², centres updated with rate alpha (replica-aggregated)",
         "Wen et al. ECCV 2016, 'A Discriminative Feature Learning Approach'")

_PROJECTION = {"projection": True, "bias": False}
register("l2", "distillation", "distillation:L2Distill", dict(_PROJECTION),
         "squared L2 distance of L2-normalised student and teacher embeddings",
         "embedding distillation (e.g. Keras_insightface distill)")
register("cosine", "distillation", "distillation:CosineDistill", dict(_PROJECTION),
         "1 − cos(student, teacher)", "embedding distillation")
register("kl", "distillation", "distillation:KLDistill", {"temperature": 4.0, **_PROJECTION},
         "T²·KL(softmax(t/T) ‖ softmax(s/T)) on logits",
         "Hinton et al. 2015, arXiv:1503.02531")
register("rkd_distance", "distillation", "relation:RKDDistance", {},
         "Huber loss on the batch's pairwise distances, each divided by their mean",
         "RKD, Park et al. CVPR 2019, arXiv:1904.05068")
register("rkd_angle", "distillation", "relation:RKDAngle", {},
         "Huber loss on the angles ∠(x_j − x_i, x_k − x_i) of the batch's triplets",
         "RKD, Park et al. CVPR 2019, arXiv:1904.05068")
register("similarity", "distillation", "relation:SimilarityPreserving", {},
         "squared distance of the row-normalised batch Gram matrices / B²",
         "SP, Tung & Mori ICCV 2019, arXiv:1907.09682")
register("ekd", "distillation", "relation:EvaluationRank", {"critical_fraction": 0.1, "temperature": 0.05},
         "listwise rank loss on the pairs either model accepts at a low false-accept rate",
         "in the spirit of EKD, Huang et al. CVPR 2022, arXiv:2206.02325")


def available() -> dict[str, LossSpec]:
    """Ordered mapping name → :class:`LossSpec` (kind, defaults, doc, reference)."""
    return dict(_SPECS)


def spec(name: str) -> LossSpec:
    """The spec of ``name``; ValueError naming the closest valid names otherwise."""
    if name not in _SPECS:
        close = difflib.get_close_matches(str(name), list(_SPECS), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown loss '{name}'{hint}; valid: {', '.join(_SPECS)}")
    return _SPECS[name]


def check_params(loss_spec: LossSpec, params: dict) -> None:
    """ValueError for a parameter the loss does not take."""
    for key in params:
        if key not in loss_spec.defaults:
            close = difflib.get_close_matches(key, list(loss_spec.defaults), n=2)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            valid = ", ".join(loss_spec.defaults) or "none"
            raise ValueError(f"loss '{loss_spec.name}' has no parameter '{key}'{hint}; valid: {valid}")


def get(name: str, **params):
    """Build the loss ``name`` with ``params`` over its defaults."""
    loss_spec = spec(name)
    check_params(loss_spec, params)
    return loss_spec.load()(**{**loss_spec.defaults, **params})


__all__ = ["KINDS", "LossSpec", "available", "get", "spec", "register"]
