"""What the LFW experiments needed, on tiny real data: fold layout and exact thresholds,
merged/unlabelled file lists, teacher-space conditioning, unlabelled samples that only the
distillation term sees, distillation alone, face picking and the centre-crop fallback."""
from __future__ import annotations

import json
import logging

import h5py
import numpy as np
import pytest
import yaml

from conftest import ORL, copy_people


# ------------------------------------------------------------------ evaluation protocol
def test_one_sided_folds_are_stratified_with_a_warning(caplog):
    from distill.evals import metrics as M

    rng = np.random.default_rng(0)
    issame = np.r_[np.ones(500, bool), np.zeros(500, bool)]           # pairsDevTest.txt order
    distances = np.where(issame, rng.normal(0.8, 0.3, 1000), rng.normal(1.4, 0.3, 1000))
    with caplog.at_level(logging.WARNING):
        folds, layout = M.verification_folds(issame, 10, "view1")
    assert layout == "stratified" and "10 of 10 contiguous folds hold only one kind" in caplog.text
    assert all(np.sum(issame[folds == k]) == 50 and np.sum(~issame[folds == k]) == 50 for k in range(10))
    # the metric on the file's order equals the metric on the same pairs laid out fold by fold
    order = np.argsort(np.r_[np.arange(500) // 50 * 2, np.arange(500) // 50 * 2 + 1], kind="stable")
    stratified = M.kfold_accuracy(distances, issame)
    laid_out = M.kfold_accuracy(distances[order], issame[order])
    assert stratified == pytest.approx(laid_out)
    assert M.verification_folds(issame[order], 10)[1] == "contiguous"
    with pytest.raises(ValueError, match="cannot fill 10 folds"):
        M.verification_folds(np.r_[np.ones(5, bool), np.zeros(50, bool)], 10)


@pytest.mark.parametrize("seed", range(4))
def test_exact_threshold_search_equals_brute_force(seed):
    """Every candidate threshold tried by brute force gives no better training accuracy, and a
    compressed space (all distances < 0.05) loses nothing with the exact search."""
    from distill.evals import metrics as M

    rng = np.random.default_rng(seed)
    issame = rng.random(300) < 0.5
    distances = np.round(np.where(issame, rng.normal(0.02, 0.01, 300), rng.normal(0.035, 0.01, 300)), 4)
    distances = np.clip(distances, 0, None)
    threshold = M.best_exact_threshold(distances, issame)
    best = max(np.mean((distances < t) == issame) for t in np.r_[np.unique(distances), np.inf])
    assert np.mean((distances < threshold) == issame) == pytest.approx(best)
    folds = M.fold_ids(300, 10)
    exact = M.kfold_accuracy(distances, issame, search="exact")
    manual = []
    for k in range(10):
        t = M.best_exact_threshold(distances[folds != k], issame[folds != k])
        manual.append(np.mean((distances[folds == k] < t) == issame[folds == k]))
    assert exact["accuracy"] == pytest.approx(np.mean(manual))
    assert exact["accuracy"] >= M.kfold_accuracy(distances, issame)["accuracy"] - 0.05


def test_pairs_bin_is_laid_out_fold_by_fold(tmp_path):
    """A pairsDevTest-style file (all matched pairs first) becomes a .bin whose contiguous
    folds each hold both kinds; aligned .png crops are found for the .jpg names."""
    from distill.evals import pairs as P
    from distill.evals.bins import read_bin

    images = tmp_path / "aligned"
    for person in ("P1", "P2", "P3", "P4"):
        (images / person).mkdir(parents=True)
        for k in (1, 2, 3):
            (images / person / f"{person}_{k:04d}.png").write_bytes((ORL / f"s{person[1]}" / f"{k}.png").read_bytes())
    same = [f"P{p} 1 {j}" for p in (1, 2, 3, 4) for j in (2, 3)] + ["P1 2 3", "P2 2 3"]
    diff = [f"P{a} {i} P{b} {i}" for a, b in ((1, 2), (3, 4), (1, 3), (2, 4), (1, 4)) for i in (1, 2)]
    (tmp_path / "pairs.txt").write_text("10\n" + "\n".join(same + diff) + "\n")
    out = P.pairs_to_bin(tmp_path / "pairs.txt", images, tmp_path / "v.bin")
    _, issame = read_bin(out)
    assert issame.tolist() == [True, False] * 10
    assert P.pair_image_path(images, "P1", 2).suffix == ".png"


# ------------------------------------------------------------------------ file lists
def test_merged_list_with_people_subset_and_unlabelled(tmp_path):
    from distill.data.lists import merge_folders
    from distill.data.sources import DataError, open_source

    copy_people(tmp_path / "a", ["s1", "s2", "s3"])
    copy_people(tmp_path / "b", ["s3", "s4"])
    unlabelled = copy_people(tmp_path / "u", ["s5"])
    (tmp_path / "people.txt").write_text("2\ns1\t10\ns3\t10\n")
    counts = merge_folders(tmp_path / "lists" / "train.csv", [(tmp_path / "a", tmp_path / "people.txt"),
                                                               tmp_path / "b"], unlabeled=[unlabelled])
    assert counts == {"images": 50, "classes": 3, "unlabeled": 10, "merged": ["s3"]}
    source = open_source(tmp_path / "lists" / "train.csv")
    assert source.class_names == ["s1", "s3", "s4"]
    assert np.bincount(source.labels[source.labels >= 0]).tolist() == [10, 20, 10]
    assert int(np.sum(source.labels == -1)) == 10 and "\t-1\n" in "".join(source.listing_lines())
    (tmp_path / "bad.txt").write_text("s1\ns9\n")
    with pytest.raises(DataError, match="1 people of .*bad.txt have no folder here"):
        merge_folders(tmp_path / "x.csv", [(tmp_path / "a", tmp_path / "bad.txt")])
    (tmp_path / "neg.csv").write_text(f"{ORL / 's1' / '1.png'},a\n{ORL / 's1' / '2.png'},-2\n")
    with pytest.raises(DataError, match="neg.csv:2: negative label -2"):
        open_source(tmp_path / "neg.csv")


def test_training_labels_unlabel_rare_classes():
    from distill.train.trainer import training_labels

    labels = np.array([0, 0, 1, 2, 2, 2, -1, 3])
    mapped, classes = training_labels(labels, np.arange(8), min_class_images=2)
    assert mapped.tolist() == [0, 0, -1, 1, 1, 1, -1, -1] and classes == 2
    mapped, classes = training_labels(labels, np.array([0, 2, 3, 4, 5, 6, 7]), min_class_images=2)
    assert mapped.tolist() == [-1, -1, -1, 0, 0, 0, -1, -1] and classes == 1


# ---------------------------------------------------------------- store conditioning
@pytest.fixture(scope="module")
def conditioned_store(tmp_path_factory, tiny_teacher):
    from distill.store.writer import embed

    root = tmp_path_factory.mktemp("cond")
    copy_people(root / "train", [f"s{i}" for i in range(1, 7)])
    (root / "train.csv").write_text("path,label\n" + "".join(
        f"{p},{'' if p.parent.name == 's6' else p.parent.name}\n"
        for p in sorted((root / "train").glob("*/*.png"))))
    embed(tiny_teacher, root / "train.csv", root / "store", shard_size=16, flip=True, progress=False,
          condition="center")
    return root


def raw_rows(store):
    rows = {}
    for shard in sorted(store.glob("shard-*.h5")):
        with h5py.File(shard, "r") as handle:
            for key in ("sample_id", "embedding", "embedding_flip"):
                rows.setdefault(key, []).append(handle[key][...])
    return {k: np.concatenate(v) for k, v in rows.items()}


@pytest.mark.parametrize("mode", ["center", "whiten"])
def test_conditioning_equals_numpy_and_is_applied_wherever_targets_are_read(conditioned_store, mode, tmp_path):
    import shutil

    from distill.data.sources import open_source
    from distill.store import Store
    from distill.store.conditioning import fit_conditioning
    from distill.train.pipeline import TeacherTargets

    store_dir = tmp_path / "store"
    shutil.copytree(conditioned_store / "store", store_dir)
    fit_conditioning(store_dir, mode, shrinkage=0.1)
    raw = raw_rows(store_dir)
    both = np.concatenate([raw["embedding"], raw["embedding_flip"]]).astype(np.float64)
    mean = both.mean(axis=0)
    if mode == "center":
        matrix = np.eye(mean.size)
    else:
        values, vectors = np.linalg.eigh(np.cov(both.T, bias=True))
        values = np.maximum(values, 0) + 0.1 * values.mean()
        matrix = vectors @ np.diag(values ** -0.5) @ vectors.T
    expected = (raw["embedding"] - mean) @ matrix
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    store = Store(store_dir)
    assert store.manifest.conditioning["mode"] == mode and store.manifest.conditioning["samples"] == 120
    table, present = store.load_table("embedding")
    np.testing.assert_allclose(table[raw["sample_id"]], expected, atol=2e-3)
    np.testing.assert_allclose(store.lookup(raw["sample_id"][:5]), expected[:5], atol=2e-3)
    targets = TeacherTargets(store, open_source(conditioned_store / "train.csv")).build()
    import tensorflow as tf

    gathered = targets.gather(tf.constant(raw["sample_id"][:8]), tf.zeros(8, tf.bool)).numpy()
    np.testing.assert_allclose(gathered, expected[:8], atol=2e-3)
    if mode == "center":  # a centred space is no longer a cone
        assert abs(float(np.mean(expected @ (expected.mean(0) / np.linalg.norm(expected.mean(0)))))) < 0.5


def test_store_info_reports_the_cone_and_a_changed_conditioning_file_is_refused(conditioned_store, cli, tmp_path):
    import shutil

    from distill.store import Store, StoreError

    store_dir = tmp_path / "store"
    shutil.copytree(conditioned_store / "store", store_dir)
    code, out, err = cli("store", "info", store_dir)
    assert code == 0, err
    assert "space stored: mean cos to mean direction 0.9" in out          # random teacher: a cone
    assert "space conditioned (center)" in out and "warning" not in out
    code, out, err = cli("store", "condition", store_dir, "--mode", "none")
    assert code == 0 and "warning" in out and "distill store condition" in out
    code, out, err = cli("store", "condition", store_dir, "--mode", "whiten")
    assert code == 0 and "conditioned (whiten)" in out
    (store_dir / "conditioning.npz").write_bytes(b"x" + (store_dir / "conditioning.npz").read_bytes()[1:])
    with pytest.raises(StoreError, match="conditioning.npz: does not match the SHA-256"):
        Store(store_dir).load_table()


def test_embed_redoing_a_shard_drops_then_refits_the_conditioning(conditioned_store, tiny_teacher, tmp_path):
    import shutil

    from distill.store import Store
    from distill.store.writer import embed

    store_dir = tmp_path / "store"
    shutil.copytree(conditioned_store / "store", store_dir)
    with np.load(store_dir / "conditioning.npz") as saved:
        before = saved["mean"]
    (store_dir / "shard-00001.h5").unlink()
    embed(tiny_teacher, conditioned_store / "train.csv", store_dir, shard_size=16, flip=True, progress=False)
    assert Store(store_dir).manifest.conditioning == {"mode": "none"}
    embed(tiny_teacher, conditioned_store / "train.csv", store_dir, shard_size=16, flip=True, progress=False,
          condition="center")
    assert Store(store_dir).manifest.conditioning["mode"] == "center"
    with np.load(store_dir / "conditioning.npz") as saved:
        np.testing.assert_allclose(saved["mean"], before, atol=1e-6)     # same data, same fit


# ------------------------------------------------------------------- training
def recipe(root, **changes):
    base = {"name": "u", "seed": 1,
            "data": {"train": str(root / "train.csv"), "store": str(root / "store"), "augment": "flip",
                     "min_class_images": 1},
            "model": {"backbone": "mobilenet", "alpha": 0.25, "embedding_size": 16},
            "loss": {"name": "arcface", "scale": 16.0, "margin": 0.3},
            "distill": {"name": "l2", "weight": 4.0},
            "train": {"batch_size": 10},
            "stages": [{"epochs": 1, "lr": 0.01}]}
    for key, value in changes.items():
        base[key] = value if not isinstance(value, dict) else {**base.get(key, {}), **value}
    return base


def test_unlabelled_samples_reach_only_the_distillation_term(conditioned_store, tmp_path):
    """s6's 10 images are unlabelled: with distillation every epoch has 6 steps (60 images),
    without it 5 (the 50 labelled); the classifier knows only the 5 labelled people."""
    import distill

    result = distill.train(recipe(conditioned_store, terms={"sp": {"name": "similarity", "weight": 2.0}}),
                           run_dir=tmp_path / "with", progress=False)
    record = result.history[0]
    assert record["steps"] == 6 and set(record["loss"]) == {"total", "classification", "distill", "sp"}
    assert set(record["gradients"]) == {"grad/distill", "gradcos/distill", "grad/sp", "gradcos/sp"}
    assert record["gradients"]["grad/distill"] > 0
    plain = distill.train(recipe(conditioned_store, distill={"weight": 0.0}), run_dir=tmp_path / "plain",
                          progress=False)
    assert plain.history[0]["steps"] == 5 and set(plain.history[0]["loss"]) == {"total", "classification"}
    from distill.train.checkpoints import variables_path

    with np.load(variables_path(tmp_path / "plain")) as saved:
        assert [saved[k].shape for k in saved.files if k.startswith("classifier/")] == [(16, 5)]
    from distill.train.trainer import TrainingError

    with pytest.raises(TrainingError, match="metric terms .* need every sample labelled"):
        distill.train(recipe(conditioned_store, triplet={"weight": 1.0},
                                    train={"batch_size": 10}, data={"images_per_identity": 5}), run_dir=tmp_path / "t", progress=False)


def test_distillation_alone_builds_no_classifier(conditioned_store, tmp_path, cli):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe(conditioned_store, loss={"weight": 0}, distill={"name": "cosine"})))
    code, out, err = cli("train", "--recipe", path, "--run-dir", tmp_path / "run", "--no-progress")
    assert code == 0, err
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert set(history[0]["loss"]) == {"total", "distill"}
    from distill.train.checkpoints import variables_path

    with np.load(variables_path(tmp_path / "run")) as saved:
        assert not [k for k in saved.files if k.startswith("classifier/")]


@pytest.mark.parametrize("change, message", [
    ({"distill": {"name": "l2", "wieght": 64}}, r"distill: loss 'l2' has no parameter 'wieght' \(did you mean weight"),
    ({"distill": {"name": "l3", "weight": 64}}, r"distill.name: unknown distillation loss 'l3' \(did you mean l2, kl\?\); valid: l2, cosine"),
    ({"terms": {"x": {"name": "arcface", "weight": 1}}, "distill": {"name": "arcface"}},
     r"distill.name 'arcface' is a classification loss, not distillation"),
    ({"stages": [{"epochs": 1, "weights": {"rkd": 1}}]}, r"stages.0.weights.rkd is not a term"),
    ({"loss": {"name": "arcface", "weight": -1}}, r"loss.weight must be a number ≥ 0"),
])
def test_misconfigured_terms_are_refused_at_load(conditioned_store, change, message):
    from distill.train.recipe import RecipeError, load_recipe

    with pytest.raises(RecipeError, match=message):
        load_recipe(None, data=recipe(conditioned_store, **change))


# ------------------------------------------------------------------- alignment
def test_center_pick_and_center_crop_fallback(tmp_path, monkeypatch):
    from distill.align_faces import DETECTORS, Face, align_folder, choose_faces

    big = Face((0, 0, 60, 60), 0.9, np.zeros((5, 2)))
    central = Face((40, 40, 80, 80), 0.9, np.zeros((5, 2)))
    assert choose_faces([big, central], False, 10, "largest", (120, 120)) == [big]
    assert choose_faces([big, central], False, 10, "center", (120, 120)) == [central]

    monkeypatch.setitem(DETECTORS, "none", lambda min_face=20: (lambda image: []))
    src = copy_people(tmp_path / "src", ["s1"])
    report = align_folder(src, tmp_path / "dst", detector="none", fallback="center", center_crop=0.8,
                          progress=False)
    assert report.aligned == 10 and len(report.fallback) == 10 and not report.no_face
    from PIL import Image

    crop = np.asarray(Image.open(tmp_path / "dst" / "s1" / "1.png"))
    photo = np.asarray(Image.open(ORL / "s1" / "1.png").convert("RGB"))    # 92 wide × 112 high
    side = 0.8 * 92
    box = photo[int(round((112 - side) / 2)):, int(round((92 - side) / 2)):][:int(side), :int(side)]
    reference = np.asarray(Image.fromarray(box).resize((112, 112), Image.BILINEAR)).astype(float)
    assert crop.shape == (112, 112, 3) and np.abs(crop.astype(float) - reference).mean() < 6
