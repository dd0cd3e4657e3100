"""Face alignment: 5-point similarity warp onto the ArcFace 112×112 template.

Landmarks are ``(x, y)`` pixel coordinates in the order left eye, right eye, nose tip,
left mouth corner, right mouth corner (as seen in the image). Pixel ``(x, y)`` means column
``x``, row ``y`` at the pixel's centre (the OpenCV ``warpAffine`` convention).
"""
from __future__ import annotations

import numpy as np

#: ArcFace / InsightFace landmark template for 112×112 crops, ``(x, y)`` per row.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def _points(points, name: str) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] < 2:
        raise ValueError(f"{name}: expected an (N, 2) array of (x, y) points with N >= 2, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: points must be finite")
    return arr


def estimate_similarity(src_points, dst_points) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; Umeyama 1991).

    Returns the 2×3 matrix ``M`` minimising ``sum ||M @ [x, y, 1] - dst||²`` over the points.
    """
    src = _points(src_points, "src_points")
    dst = _points(dst_points, "dst_points")
    if src.shape != dst.shape:
        raise ValueError(f"src_points {src.shape} and dst_points {dst.shape} must have the same shape")
    n = src.shape[0]
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = np.sum(src_c**2) / n
    if src_var <= 1e-12:
        raise ValueError("src_points: all points coincide, the similarity is undefined")
    cov = dst_c.T @ src_c / n
    u, sing, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # avoid a reflection
        sign[-1] = -1.0
    rotation = u @ np.diag(sign) @ vt
    scale = float(np.sum(sing * sign)) / src_var
    matrix = np.empty((2, 3), dtype=np.float64)
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def template_for_size(size=(112, 112)) -> np.ndarray:
    """ARCFACE_TEMPLATE scaled to an output ``size`` = (height, width)."""
    height, width = int(size[0]), int(size[1])
    if height <= 0 or width <= 0:
        raise ValueError(f"size: expected positive (height, width), got {size}")
    return ARCFACE_TEMPLATE * np.array([width / 112.0, height / 112.0])


def _as_rgb(image) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"image: expected HxW, HxWx1, HxWx3 or HxWx4, got shape {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return arr[:, :, :3]


def warp_affine(image, matrix, size) -> np.ndarray:
    """Bilinear warp: output pixel ``p`` takes the input at ``inverse(matrix) @ p``; outside is 0."""
    src = _as_rgb(image).astype(np.float32)
    height, width = int(size[0]), int(size[1])
    full = np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    inverse = np.linalg.inv(full)[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    sx = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    sy = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    in_h, in_w = src.shape[:2]

    def tap(yy, xx):
        valid = (yy >= 0) & (yy < in_h) & (xx >= 0) & (xx < in_w)
        values = src[np.clip(yy, 0, in_h - 1), np.clip(xx, 0, in_w - 1)]
        return values * valid[..., None]

    out = (
        tap(y0, x0) * (1 - fx) * (1 - fy)
        + tap(y0, x0 + 1) * fx * (1 - fy)
        + tap(y0 + 1, x0) * (1 - fx) * fy
        + tap(y0 + 1, x0 + 1) * fx * fy
    )
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def warp_face(image_uint8, landmarks5, size=(112, 112)) -> np.ndarray:
    """Align a face: similarity-warp ``landmarks5`` (5×2, x/y) onto the template → uint8 H×W×3."""
    landmarks = _points(landmarks5, "landmarks5")
    if landmarks.shape != (5, 2):
        raise ValueError(f"landmarks5: expected shape (5, 2), got {landmarks.shape}")
    matrix = estimate_similarity(landmarks, template_for_size(size))
    return warp_affine(image_uint8, matrix, size)
