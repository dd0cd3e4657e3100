"""Loss registry: ``get(name, **params)`` builds a loss, ``available()`` describes them all.

Kinds and call signatures (every loss returns per-sample float32 losses [B]):

- ``classification``: ``loss(labels, cosine, norms=None)``; ``loss.needs_norms``
- ``metric``: ``loss(labels, embeddings)``
- ``distillation``: ``loss(student, teacher)``; ``loss(student, teacher, labels)`` when
  ``loss.needs_labels`` (pair terms such as ``ekd``; label −1 forms no pairs)

What a loss reads besides labels (``LossSpec.reads``) follows its kind (``KIND_READS``) unless
registered otherwise: ``adadistill`` is a classification loss that scores its own teacher-made
class centres, so it reads the embeddings and the teacher, not the shared classifier's cosines.

This module imports no TensorFlow; a loss's module is imported by :func:`get`.
"""
from __future__ import annotations

from dataclasses import dataclass

from distill.registry import Registry

KINDS = ("classification", "metric", "distillation")
#: what a loss of each kind reads besides labels: the shared classifier's cosines, the student
#: embeddings, the stored teacher embeddings
KIND_READS = {"classification": ("cosine",), "metric": ("embeddings",),
              "distillation": ("embeddings", "teacher")}
#: recipe sections that are objective terms: the kind they must be and their default loss
NAMED_TERMS = {"classification": ("classification", None), "distill": ("distillation", "l2"),
               "triplet": ("metric", "triplet_batch_hard"), "center": ("metric", "center")}

#: every loss: name → builder ("module:attribute" under distill.losses, imported when built);
#: info: kind, doc, reference. Parameters and defaults are the builder's signature.
LOSSES = Registry("loss")


@dataclass(frozen=True)
class LossSpec:
    """A read-only view of one registered loss (defaults come from the builder's signature)."""

    name: str
    kind: str
    factory: str
    defaults: dict
    doc: str = ""
    reference: str = ""
    reads: tuple = ()

    @property
    def uses_teacher(self) -> bool:
        return "teacher" in self.reads

    def load(self):
        return LOSSES.builder(self.name)


def register(name, kind, factory, doc, reference, preset=None, reads=None) -> None:
    """Register ``distill.losses.<factory>`` (``"module:attribute"``) as loss ``name``;
    ``preset`` replaces signature defaults (variants of one builder); ``reads`` what the loss
    reads (default: its kind's ``KIND_READS``)."""
    if kind not in KINDS:
        raise ValueError(f"unknown loss kind '{kind}'")
    LOSSES.register(name, f"distill.losses.{factory}", preset=preset, kind=kind, doc=doc,
                    reference=reference, reads=tuple(reads or KIND_READS[kind]))


_INSIGHTFACE = "deepinsight/insightface (combined margin)"

register("softmax", "classification", "softmax:Softmax",
         "cross-entropy on the logits as given (no scale)", "softmax cross-entropy")
register("scale_softmax", "classification", "softmax:ScaleSoftmax",
         "cross-entropy on s·cosθ", "NormFace, Wang et al. 2017, arXiv:1704.06369")
register("margin_softmax", "classification", "softmax:MarginSoftmax",
         "target probability p ← (p^power + margin_scale·p)/2 on softmax(s·cosθ)",
         "leondgarse/Keras_insightface losses.margin_softmax")
register("combined_margin", "classification", "margin:CombinedMargin",
         "target cos(m1·θ + m2) − m3 with InsightFace's th/mm fallback",
         f"ArcFace paper §3 (arXiv:1801.07698); {_INSIGHTFACE}", preset={"m2": 0.3, "m3": 0.2})
register("arcface", "classification", "margin:arcface",
         "additive angular margin cos(θ + m) = combined (1, m, 0)",
         "ArcFace, Deng et al. CVPR 2019, arXiv:1801.07698")
register("cosface", "classification", "margin:cosface",
         "additive cosine margin cosθ − m = combined (1, 0, m)",
         "CosFace, Wang et al. 2018, arXiv:1801.09414; AM-Softmax arXiv:1801.05599")
register("sphereface", "classification", "margin:sphereface",
         "multiplicative angular margin cos(m·θ) = combined (m, 0, 0)",
         "SphereFace, Liu et al. 2017, arXiv:1704.08063 (combined form of ArcFace paper)")
for _name, _values, _doc in (("sphere_arc", (1.2, 0.4, 0.0), "InsightFace preset (1.2, 0.4, 0)"),
                             ("cm1", (1.0, 0.3, 0.2), "InsightFace CM1 preset (1, 0.3, 0.2)"),
                             ("cm2", (0.9, 0.4, 0.15), "InsightFace CM2 preset (0.9, 0.4, 0.15)")):
    register(_name, "classification", "margin:CombinedMargin", _doc, f"ArcFace paper Table 1; {_INSIGHTFACE}",
             preset=dict(zip(("m1", "m2", "m3"), _values)))
register("adacos", "classification", "adaptive:AdaCos",
         "no margin; dynamic scale log(B_avg)/cos(min(π/4, θ_med))",
         "AdaCos, Zhang et al. CVPR 2019, arXiv:1905.00292")
register("curricularface", "classification", "adaptive:CurricularFace",
         "ArcFace target; hard negatives cos·(t + cos), t = running mean target cosine",
         "CurricularFace, Huang et al. CVPR 2020, arXiv:2004.00288")
register("magface", "classification", "adaptive:MagFace",
         "ArcFace margin linear in the feature norm + λ_g·(a/u_a² + 1/a)",
         "MagFace, Meng et al. CVPR 2021, arXiv:2103.06627")
register("adaface", "classification", "adaptive:AdaFace",
         "angular and additive margins set by the batch-standardised feature norm",
         "AdaFace, Kim et al. CVPR 2022, arXiv:2204.00964")

register("adadistill", "classification", "adadistill:AdaDistill",
         "margin loss on EMA teacher class centres with a per-sample adaptive momentum",
         "AdaDistill, Boutros et al. ECCV 2024, arXiv:2407.01332; fdbtrs/AdaDistill",
         reads=("embeddings", "teacher"))

register("triplet_batch_hard", "metric", "triplet:BatchHardTriplet",
         "hardest positive vs hardest negative per anchor",
         "Hermans et al. 2017, arXiv:1703.07737")
register("triplet_batch_all", "metric", "triplet:BatchAllTriplet",
         "every valid triplet, mean over active (or all) triplets",
         "Hermans et al. 2017, arXiv:1703.07737")
register("triplet_semihard", "metric", "triplet:SemiHardTriplet",
         "semi-hard negatives per positive pair (TF-Addons TripletSemiHardLoss semantics)",
         "FaceNet, Schroff et al. 2015, arXiv:1503.03832; tfa.losses.TripletSemiHardLoss")
register("center", "metric", "center:CenterLoss",
         "½‖x − c_y‖², centres updated with rate alpha (replica-aggregated)",
         "Wen et al. ECCV 2016, 'A Discriminative Feature Learning Approach'")

register("l2", "distillation", "distillation:L2Distill",
         "squared L2 distance of L2-normalised student and teacher embeddings",
         "embedding distillation (e.g. Keras_insightface distill)")
register("cosine", "distillation", "distillation:CosineDistill",
         "1 − cos(student, teacher)", "embedding distillation")
register("kl", "distillation", "distillation:KLDistill",
         "T²·KL(softmax(t/T) ‖ softmax(s/T)) on logits",
         "Hinton et al. 2015, arXiv:1503.02531")
register("rkd_distance", "distillation", "relation:RKDDistance",
         "Huber loss on the batch's pairwise distances, each divided by their mean",
         "RKD, Park et al. CVPR 2019, arXiv:1904.05068")
register("rkd_angle", "distillation", "relation:RKDAngle",
         "Huber loss on the angles ∠(x_j − x_i, x_k − x_i) of the batch's triplets",
         "RKD, Park et al. CVPR 2019, arXiv:1904.05068")
register("similarity", "distillation", "relation:SimilarityPreserving",
         "squared distance of the row-normalised batch Gram matrices / B²",
         "SP, Tung & Mori ICCV 2019, arXiv:1907.09682")
register("critical_rank_kl", "distillation", "relation:CriticalRankKL",
         "listwise KL rank loss on the pairs either model accepts at a low false-accept rate",
         "our variant inspired by EKD (not the published rule; that is `ekd`)")
register("ekd", "distillation", "ekd:EvaluationOrientedKD",
         "MSE of smooth rank counts vs EMA FPR thresholds on positive and top-k hard negative pairs",
         "EKD, Huang et al. CVPR 2022, arXiv:2206.02325; Tencent/TFace recognition/tasks/ekd")


def _spec(name: str) -> LossSpec:
    entry = LOSSES.entry(name)
    return LossSpec(name, entry.info["kind"], entry.target.removeprefix("distill.losses."),
                    LOSSES.defaults(name), entry.info["doc"], entry.info["reference"],
                    entry.info.get("reads", KIND_READS[entry.info["kind"]]))


def available() -> dict[str, LossSpec]:
    """Ordered mapping name → :class:`LossSpec` (kind, defaults, doc, reference)."""
    return {name: _spec(name) for name in LOSSES}


def spec(name: str) -> LossSpec:
    """The spec of ``name``; ValueError naming the closest valid names otherwise."""
    return _spec(name)


def check_params(loss_spec: LossSpec, params: dict) -> None:
    """ValueError for a parameter the loss does not take."""
    LOSSES.check(loss_spec.name, params)


def get(name: str, **params):
    """Build the loss ``name`` with ``params`` over its defaults."""
    return LOSSES.build(name, **params)


__all__ = ["KINDS", "KIND_READS", "LOSSES", "NAMED_TERMS", "LossSpec", "available", "get", "spec", "register"]
