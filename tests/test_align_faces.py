"""``distill align``: real MTCNN detections on a real photo, ArcFace-template crops, report, resume."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import mtcnn  # noqa: F401  (the detector; a dev dependency, so its absence is a failure)
from PIL import Image
from skimage import data as skimage_data

from distill.align import ARCFACE_TEMPLATE  # noqa: E402
from distill.align_faces import (  # noqa: E402
    DETECTORS, REPORT_NAME, AlignError, Face, align_folder, make_detector)

ORL = Path(__file__).resolve().parents[1] / "distill" / "demo_data" / "orl_faces"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """person_a: the astronaut photo (scikit-image) and two faces side by side;
    person_b: an ORL face, a gradient without a face, a broken file."""
    src = tmp_path_factory.mktemp("photos") / "src"
    astronaut = skimage_data.astronaut()
    (src / "person_a").mkdir(parents=True)
    (src / "person_b").mkdir()
    Image.fromarray(astronaut).save(src / "person_a" / "astro.png")
    pair = np.concatenate([astronaut[:, 100:350], astronaut[:, 100:350][:, ::-1]], axis=1)
    Image.fromarray(pair).save(src / "person_a" / "two.jpg", quality=95)
    shutil.copy(ORL / "s1" / "1.png", src / "person_b" / "orl.png")
    gradient = np.tile(np.linspace(0, 255, 300).astype(np.uint8)[None, :, None], (200, 1, 3))
    Image.fromarray(gradient).save(src / "person_b" / "gradient.png")
    (src / "person_b" / "broken.jpg").write_bytes(b"not a jpeg at all")
    return src


@pytest.fixture(scope="module")
def aligned(photos, tmp_path_factory):
    dst = tmp_path_factory.mktemp("aligned") / "dst"
    return dst, align_folder(photos, dst, progress=False)


def eye_errors(crop: np.ndarray) -> np.ndarray:
    """Re-detect the face in an aligned crop; distance (px) of each landmark to the template."""
    faces = make_detector("mtcnn", min_face=20)(crop)
    assert faces, "no face found again in the aligned crop"
    best = max(faces, key=lambda f: f.area)
    return np.linalg.norm(best.landmarks - ARCFACE_TEMPLATE, axis=1)


def test_largest_face_lands_on_the_template(aligned):
    dst, report = aligned
    crop = np.asarray(Image.open(dst / "person_a" / "astro.png"))
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    errors = eye_errors(crop)
    assert errors[:2].max() < 4.0, f"eyes {errors[:2]} px from the template"
    assert errors.max() < 8.0, f"landmarks {errors} px from the template"  # nose/mouth: face shape


def test_layout_and_report(aligned, photos):
    dst, report = aligned
    written = sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*.png"))
    assert written == ["person_a/astro.png", "person_a/two.png", "person_b/orl.png"]
    assert report.photos == 5 and report.aligned == 3 and report.faces_written == 3
    saved = json.loads((dst / REPORT_NAME).read_text())
    assert saved["no_face"] == ["person_b/gradient.png"]
    assert [entry["path"] for entry in saved["unreadable"]] == ["person_b/broken.jpg"]
    assert saved["unreadable"][0]["error"]


def test_all_faces_writes_each_face(photos, tmp_path):
    dst = tmp_path / "all"
    report = align_folder(photos, dst, all_faces=True, progress=False)
    assert (dst / "person_a" / "two_0.png").exists() and (dst / "person_a" / "two_1.png").exists()
    assert not (dst / "person_a" / "two_2.png").exists()
    assert (dst / "person_a" / "astro_0.png").exists()
    assert report.faces_written == 4
    for k in (0, 1):
        errors = eye_errors(np.asarray(Image.open(dst / "person_a" / f"two_{k}.png")))
        assert errors[:2].max() < 5.0


def test_resume_skips_done_photos_and_reported_failures(aligned, photos):
    dst, _ = aligned
    before = {p: p.stat().st_mtime_ns for p in dst.rglob("*.png")}
    again = align_folder(photos, dst, progress=False)
    assert again.aligned == 0 and again.already_done == 5
    assert {p: p.stat().st_mtime_ns for p in dst.rglob("*.png")} == before
    assert again.no_face == ["person_b/gradient.png"] and len(again.unreadable) == 1
    (dst / "person_b" / "orl.png").unlink()
    redo = align_folder(photos, dst, progress=False)
    assert redo.aligned == 1 and (dst / "person_b" / "orl.png").exists()
    retried = align_folder(photos, dst, retry_failed=True, progress=False)
    assert retried.aligned == 0 and retried.no_face == ["person_b/gradient.png"]


def test_other_settings_on_the_same_dst_are_refused(aligned, photos):
    dst, _ = aligned
    with pytest.raises(AlignError, match="other settings"):
        align_folder(photos, dst, min_face=40, progress=False)


def test_min_face_drops_small_faces(photos, tmp_path):
    report = align_folder(photos, tmp_path / "big", min_face=150, progress=False)
    assert report.aligned == 0 and len(report.no_face) == 4


def test_plugged_in_detector_on_a_flat_folder(tmp_path, monkeypatch):
    """Any registered detector works; a flat folder gives a flat output."""
    calls = []

    def fixed_detector(min_face=20):
        def detect(image):
            calls.append(image.shape)
            scale = image.shape[1] / 112.0
            return [Face(box=(0.0, 0.0, image.shape[1], image.shape[0]), score=1.0,
                         landmarks=ARCFACE_TEMPLATE * scale)]
        return detect

    monkeypatch.setitem(DETECTORS, "fixed", fixed_detector)
    src = tmp_path / "flat"
    src.mkdir()
    for i in (1, 2):
        shutil.copy(ORL / "s2" / f"{i}.png", src / f"face{i}.png")
    report = align_folder(src, tmp_path / "out", detector="fixed", progress=False)
    assert report.aligned == 2 and calls == [(112, 92, 3)] * 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [REPORT_NAME, "face1.png", "face2.png"]
    with pytest.raises(AlignError, match="unknown face detector 'nope'"):
        align_folder(src, tmp_path / "out2", detector="nope", progress=False)


def test_cli_align(cli, photos, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(photos / "person_b", src / "person_b")
    code, out, err = cli("align", src, tmp_path / "dst", "--no-progress", "--min-face", "30")
    assert code == 0, err
    assert "1 faces from 1 photos" in out and "1 without a face, 1 unreadable" in out
    assert (tmp_path / "dst" / "person_b" / "orl.png").exists()
    code, out, err = cli("align", tmp_path / "missing", tmp_path / "dst2")
    assert code == 2 and "source folder does not exist" in err
