"""IJB-style 1:1 template verification on a tiny set written from ORL faces."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score, roc_curve

from distill.align import ARCFACE_TEMPLATE, warp_affine
from distill.evals import ijb

ORL = Path(__file__).resolve().parents[1] / "distill" / "demo_data" / "orl_faces"


def embed(batch):
    """Deterministic, mirror-sensitive pixel embedding."""
    grey = batch.astype(np.float64).mean(axis=3)[:, 8:104, 8:104].reshape(len(batch), 12, 8, 12, 8).mean(axis=(2, 4))
    grey = grey - grey.mean(axis=(1, 2), keepdims=True)
    return grey.reshape(len(batch), -1) @ np.random.default_rng(0).normal(size=(144, 24))


def face_112(person, image):
    """ORL 92×112 grey face padded to 112×112 RGB; we declare its landmarks to be ARCFACE_TEMPLATE."""
    grey = np.asarray(Image.open(ORL / f"s{person}" / f"{image}.png").convert("L"))
    return np.repeat(np.pad(grey, ((0, 0), (10, 10)), mode="edge")[:, :, None], 3, axis=2)


def write_ijb(root: Path, rng):
    """5 people × 2 templates × 3 faces (2 media per template), pasted into 240×260 canvases."""
    (root / "meta").mkdir(parents=True)
    (root / "loose_crop").mkdir()
    faces, marks, truth = [], [], {}
    for person in range(1, 6):
        for t in range(2):
            tid = 10 * person + t
            for k in range(3):
                image = 1 + 3 * t + k
                name = f"{person}_{image}.png"
                angle, scale = rng.uniform(-0.3, 0.3), rng.uniform(1.2, 1.8)
                c, s = scale * np.cos(angle), scale * np.sin(angle)
                matrix = np.array([[c, -s, rng.uniform(20, 60)], [s, c, rng.uniform(10, 40)]])
                face = face_112(person, image)
                Image.fromarray(warp_affine(face, matrix, (260, 240))).save(root / "loose_crop" / name)
                points = ARCFACE_TEMPLATE @ matrix[:, :2].T + matrix[:, 2]
                score = rng.uniform(0.7, 1.0)
                faces.append(f"{name} {tid} {100 * tid + (k == 2)}")
                marks.append(" ".join([name] + [f"{v:.4f}" for v in points.ravel()] + [f"{score:.4f}"]))
                truth[name] = (face, tid, 100 * tid + (k == 2), float(f"{score:.4f}"))
    tids = sorted({v[1] for v in truth.values()})
    pairs = [(a, b, int(a // 10 == b // 10)) for i, a in enumerate(tids) for b in tids[i + 1 :]]
    (root / "meta" / "tiny_face_tid_mid.txt").write_text("\n".join(faces) + "\n")
    (root / "meta" / "tiny_name_5pts_score.txt").write_text("\n".join(marks) + "\n")
    (root / "meta" / "tiny_template_pair_label.txt").write_text("\n".join(f"{a} {b} {l}" for a, b, l in pairs) + "\n")
    return truth, pairs


@pytest.fixture(scope="module")
def tiny_ijb(tmp_path_factory):
    root = tmp_path_factory.mktemp("ijb") / "IJBT"
    truth, pairs = write_ijb(root, np.random.default_rng(0))
    return root, truth, pairs


def reference(root, truth, pairs, fars):
    """Plain loops: align, flip-sum, detector-score weight, media mean, template sum, cosine, sklearn ROC."""
    lines = (root / "meta" / "tiny_name_5pts_score.txt").read_text().split("\n")
    lmk = {f[0]: np.array(f[1:11], float).reshape(5, 2) for f in (line.split() for line in lines if line)}
    media = {}
    for name, (_, tid, mid, score) in truth.items():
        face = ijb.load_aligned_face(root / "loose_crop" / name, lmk[name])[None]
        feat = (embed(face)[0] + embed(face[:, :, ::-1])[0]) * score
        media.setdefault(tid, {}).setdefault(mid, []).append(feat)
    templates = {}
    for tid, by_media in media.items():
        total = sum(np.mean(feats, axis=0) for feats in by_media.values())
        templates[tid] = total / np.linalg.norm(total)
    scores = np.array([templates[a] @ templates[b] for a, b, _ in pairs])
    labels = np.array([l for *_, l in pairs])
    fpr, tpr, _ = roc_curve(labels, scores)
    return {far: np.max(tpr[fpr <= far]) for far in fars}, roc_auc_score(labels, scores)


def test_evaluate_ijb_matches_plain_reference(tiny_ijb):
    root, truth, pairs = tiny_ijb
    result = ijb.evaluate_ijb(embed, root, batch_size=8)
    assert result["set"] == "tiny" and result["templates"] == 10 and result["pairs"] == 45
    tars, auc = reference(root, truth, pairs, ijb.IJB_FARS)
    for far, tar in tars.items():
        assert result[f"tar_at_far_{ijb.far_key(far)}"] == pytest.approx(tar, abs=1e-9)
    assert result["auc"] == pytest.approx(auc, abs=1e-9)
    assert result["auc"] > 0.8  # pixel features separate ORL people after alignment


def test_alignment_recovers_the_pasted_face(tiny_ijb):
    root, truth, _ = tiny_ijb
    lines = (root / "meta" / "tiny_name_5pts_score.txt").read_text().split("\n")
    for line in lines[:4]:
        fields = line.split()
        aligned = ijb.load_aligned_face(root / "loose_crop" / fields[0], np.array(fields[1:11], float).reshape(5, 2))
        original = truth[fields[0]][0]
        diff = np.abs(aligned[4:-4, 4:-4].astype(float) - original[4:-4, 4:-4])
        assert diff.mean() < 6.0, fields[0]


def test_template_features_vectorised_equals_loop():
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(40, 5))
    tids = rng.integers(0, 6, 40) * 7
    mids = rng.integers(0, 3, 40)
    templates, pooled = ijb.template_features(feats, tids, mids)
    assert templates.tolist() == sorted(set(tids.tolist()))
    for tid, row in zip(templates, pooled):
        total = sum(feats[(tids == tid) & (mids == m)].mean(axis=0) for m in set(mids[tids == tid].tolist()))
        np.testing.assert_allclose(row, total / np.linalg.norm(total), rtol=1e-12)


def test_ijb_errors_name_file_and_line(tiny_ijb, tmp_path):
    root, _, _ = tiny_ijb
    broken = tmp_path / "B"
    (broken / "meta").mkdir(parents=True)
    (broken / "loose_crop").mkdir()
    for f in (root / "meta").iterdir():
        (broken / "meta" / f.name).write_text(f.read_text())
    faces = broken / "meta" / "tiny_face_tid_mid.txt"
    faces.write_text(faces.read_text() + "ghost.png 10 1000\n")
    with pytest.raises(ValueError, match=r"tiny_face_tid_mid.txt:31: image ghost.png has no landmarks"):
        ijb.evaluate_ijb(embed, broken)
    marks = broken / "meta" / "tiny_name_5pts_score.txt"
    marks.write_text("a.png 1 2 3\n")
    with pytest.raises(ValueError, match=r"tiny_name_5pts_score.txt:1: expected 12 fields"):
        ijb.read_landmarks(marks)
    with pytest.raises(ValueError, match=r"pair 2: template 2 id 99"):
        ijb.pair_scores(np.array([1, 2]), np.eye(2), np.array([1, 1]), np.array([2, 99]))
    with pytest.raises(ValueError, match="face_tid_mid.txt, found 0"):
        ijb.find_meta(tmp_path)


def test_eval_ijb_cli_runs_a_keras_model(tiny_ijb, tiny_teacher, cli, tmp_path):
    root, _, pairs = tiny_ijb
    out = tmp_path / "ijb.json"
    code, stdout, stderr = cli("eval-ijb", "--model", tiny_teacher, "--root", root,
                               "--batch-size", "16", "--json", out)
    assert code == 0, stderr
    import json

    row = json.loads(out.read_text())[0]
    assert row["pairs"] == len(pairs) and "tar_at_far_1e-1" in row
    assert 0.0 <= float(row["tar_at_far_1e-1"]) <= 1.0
