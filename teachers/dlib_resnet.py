"""dlib's ResNet face model as a teacher plugin: the worked example of a non-TensorFlow teacher.

dlib's ``dlib_face_recognition_resnet_model_v1`` (a 29-layer ResNet, 128-d, LFW 99.38 % in
dlib's own pipeline) ships in PyPI's ``face-recognition-models``; ``dlib-bin`` runs it on the
CPU, offline. Install both with ``pip install -e ".[dlib]"``, then::

    distill embed --teacher teachers.dlib_resnet:embed --data train/ --out store_dlib/ --flip

Input contract (declared below as ``embed.distill_input = "uint8"``): a uint8 RGB NHWC batch
of faces aligned to the 112×112 ArcFace template, raw pixels (preprocessing flags are refused
for this plugin). dlib wants a 150×150 chip cut with 25 % padding around its own 5 landmarks,
which reaches beyond a tight 112 crop, so each face is padded by reflection, dlib's 5-point
shape predictor runs inside the box where dlib's detector finds faces on ArcFace crops
(``FACE_BOX``, measured on the glint24 crops), and dlib extracts and embeds the chip.
"""
from __future__ import annotations

import functools

import numpy as np

#: reflection padding (pixels per side) so that dlib's padded chip stays inside real pixels
PAD = 56
#: median box of dlib's HOG detector on 112×112 ArcFace crops: left, top, right, bottom
FACE_BOX = (10, 30, 99, 110)
#: dlib's chip padding (its default; the model was trained with it)
CHIP_PADDING = 0.25


class DlibUnavailable(ImportError):
    """The ``[dlib]`` extra is not installed."""


@functools.lru_cache(maxsize=1)
def models():
    """``(dlib module, shape predictor, face recognition model)``, loaded once per process."""
    try:
        import dlib
        import face_recognition_models as files
    except ImportError as exc:
        raise DlibUnavailable(f"the dlib teacher needs the [dlib] extra: pip install 'distill[dlib]' "
                              f"(dlib-bin and face-recognition-models; {exc})") from None
    predictor = dlib.shape_predictor(files.pose_predictor_five_point_model_location())
    recognizer = dlib.face_recognition_model_v1(files.face_recognition_model_location())
    return dlib, predictor, recognizer


def embed(images) -> np.ndarray:
    """uint8 RGB ``[B, 112, 112, 3]`` ArcFace-aligned faces → float32 ``[B, 128]`` descriptors."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected a uint8 RGB NHWC batch, got {images.dtype} {images.shape}")
    dlib, predictor, recognizer = models()
    scale_y, scale_x = images.shape[1] / 112.0, images.shape[2] / 112.0
    left, top, right, bottom = (round(v * s) + PAD for v, s in
                                zip(FACE_BOX, (scale_x, scale_y, scale_x, scale_y)))
    box = dlib.rectangle(left, top, right, bottom)
    padded, shapes = [], []
    for image in images:
        big = np.ascontiguousarray(np.pad(image, ((PAD, PAD), (PAD, PAD), (0, 0)), mode="reflect"))
        detections = dlib.full_object_detections()
        detections.append(predictor(big, box))
        padded.append(big)
        shapes.append(detections)
    if not padded:
        return np.zeros((0, 128), np.float32)
    out = recognizer.compute_face_descriptor(padded, shapes, 0, CHIP_PADDING)
    return np.asarray([np.asarray(face[0], dtype=np.float32) for face in out], dtype=np.float32)


embed.distill_input = "uint8"
