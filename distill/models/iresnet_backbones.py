"""IResNet student backbones ``iresnet18/34/50/100/200`` (see :mod:`teachers.iresnet`).

Each gives the 7×7×512 feature map for the InsightFace output layer ``E``; with
``activation="prelu"`` nothing changes (IResNets already use PReLU, and have no ReLU).
"""
from __future__ import annotations

from functools import partial

from distill.models.backbones import register_backbone
from teachers.iresnet import IRESNET_LAYERS


def _build(depth: int, input_shape=(112, 112, 3), bn_epsilon: float = 1e-5, bn_momentum: float = 0.9):
    from teachers.iresnet import iresnet

    return iresnet(depth, input_shape=input_shape, bn_epsilon=bn_epsilon, bn_momentum=bn_momentum)


for _depth in IRESNET_LAYERS:
    register_backbone(f"iresnet{_depth}")(partial(_build, _depth))
