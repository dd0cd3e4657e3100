"""Similarity estimation and 5-point face warping (geometry only)."""
from __future__ import annotations

import numpy as np
import pytest

from distill.align import ARCFACE_TEMPLATE, estimate_similarity, warp_affine, warp_face


def similarity(scale, angle, tx, ty):
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty]])


def apply(matrix, points):
    return points @ matrix[:, :2].T + matrix[:, 2]


def lstsq_similarity(src, dst):
    """Independent reference: linear least squares over (a, b, tx, ty) with x' = a x - b y + tx, y' = b x + a y + ty."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst):
        rows += [[x, -y, 1, 0], [y, x, 0, 1]]
        rhs += [u, v]
    a, b, tx, ty = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


def test_estimate_similarity_recovers_exact_transform():
    truth = similarity(2.3, 0.4, 100.0, -20.0)
    src = ARCFACE_TEMPLATE
    np.testing.assert_allclose(estimate_similarity(src, apply(truth, src)), truth, atol=1e-9)


def test_estimate_similarity_matches_least_squares_with_noise():
    rng = np.random.default_rng(0)
    for _ in range(20):
        src = rng.uniform(0, 200, size=(5, 2))
        dst = apply(similarity(rng.uniform(0.3, 3), rng.uniform(-3, 3), *rng.uniform(-50, 50, 2)), src)
        dst = dst + rng.normal(0, 3, dst.shape)
        np.testing.assert_allclose(estimate_similarity(src, dst), lstsq_similarity(src, dst), atol=1e-8)


def test_estimate_similarity_errors():
    with pytest.raises(ValueError, match="src_points"):
        estimate_similarity(np.zeros((5, 3)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="coincide"):
        estimate_similarity(np.ones((5, 2)), ARCFACE_TEMPLATE)
    with pytest.raises(ValueError, match="landmarks5"):
        warp_face(np.zeros((50, 50, 3), np.uint8), np.zeros((4, 2)))


def blob_centroid(channel, mask_threshold=100):
    ys, xs = np.nonzero(channel > mask_threshold)
    weights = channel[ys, xs].astype(float)
    return np.array([np.average(xs, weights=weights), np.average(ys, weights=weights)])


def test_warp_face_puts_landmarks_on_template():
    # a 300×260 image with a bright disc at each landmark of a rotated, scaled, shifted face
    truth = similarity(1.7, np.deg2rad(25), 90.0, 40.0)  # template → image
    landmarks = apply(truth, ARCFACE_TEMPLATE)
    height, width = 300, 260
    ys, xs = np.mgrid[0:height, 0:width]
    image = np.zeros((height, width, 3), np.uint8)
    for k, (x, y) in enumerate(landmarks):
        disc = (xs - x) ** 2 + (ys - y) ** 2 <= 4.0**2
        image[disc, k % 3] = 255  # alternate channels so neighbouring discs stay separable
    aligned = warp_face(image, landmarks)
    assert aligned.shape == (112, 112, 3) and aligned.dtype == np.uint8
    for k, target in enumerate(ARCFACE_TEMPLATE):
        # search only near the expected point: discs of the same colour are far apart
        channel = aligned[:, :, k % 3].astype(float)
        near = np.zeros_like(channel)
        x0, y0 = int(round(target[0])), int(round(target[1]))
        near[y0 - 8 : y0 + 9, x0 - 8 : x0 + 9] = channel[y0 - 8 : y0 + 9, x0 - 8 : x0 + 9]
        assert np.linalg.norm(blob_centroid(near) - target) < 1.0, k


def test_warp_identity_and_grey_input():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
    np.testing.assert_array_equal(warp_face(image, ARCFACE_TEMPLATE), image)
    grey = image[:, :, 0]
    out = warp_face(grey, ARCFACE_TEMPLATE)
    assert out.shape == (112, 112, 3) and np.array_equal(out[:, :, 1], grey)


def test_warp_affine_bilinear_matches_reference_translation():
    # half-pixel shift: every output pixel is the mean of two horizontal neighbours; outside = 0
    image = np.arange(5 * 6 * 3, dtype=np.uint8).reshape(5, 6, 3) * 2
    matrix = np.array([[1.0, 0.0, -0.5], [0.0, 1.0, 0.0]])  # output x = input x - 0.5
    out = warp_affine(image, matrix, (5, 6))
    want = np.zeros((5, 6, 3))
    padded = np.concatenate([image.astype(float), np.zeros((5, 1, 3))], axis=1)
    want[:] = (padded[:, :-1] + padded[:, 1:]) / 2
    np.testing.assert_array_equal(out, np.clip(np.rint(want), 0, 255).astype(np.uint8))
