"""The identity-balanced (P×K) sampler: batch shape, determinism per (seed, epoch), how often each
sample appears, unlabelled samples, replica shares, and the recipe keys that choose it."""
from __future__ import annotations

import numpy as np
import pytest

from distill.train.pipeline import balanced_order, sample_order

SIZES = [10, 7, 4, 3, 2, 9, 8, 5, 1, 6]     # K = 4: 3+2+1+1+1+3+2+2+1+2 = 18 groups, P = 3


def dataset(unlabelled=5):
    labels = np.concatenate([np.repeat(np.arange(len(SIZES)), SIZES), np.full(unlabelled, -1)])
    return np.arange(len(labels)), labels


def test_every_batch_holds_p_identities_times_k_and_no_unlabelled_sample():
    ids, labels = dataset()
    order = balanced_order(ids, labels, batch_size=12, per_identity=4, seed=3, epoch=0)
    assert len(order) == 18 * 4                                   # every group used: 6 batches
    for batch in order.reshape(-1, 12):
        classes, counts = np.unique(labels[batch], return_counts=True)
        assert len(classes) == 3 and set(counts) == {4} and classes.min() >= 0
        assert all(len(set(batch[i:i + 4])) == min(4, SIZES[labels[batch[i]]]) for i in range(0, 12, 4))


def test_each_sample_appears_as_its_identity_cycle_says():
    """An identity of n images fills ⌈n/K⌉·K slots with its shuffled images repeated cyclically:
    every image once, the first ones of the cycle once more (twice over for n < K/2)."""
    ids, labels = dataset()
    order = balanced_order(ids, labels, batch_size=12, per_identity=4, seed=3, epoch=1)
    seen = np.bincount(order, minlength=len(ids))
    for label, n in enumerate(SIZES):
        slots = -(-n // 4) * 4
        mine = seen[labels == label]
        assert mine.sum() == slots and set(mine) <= {slots // n, -(-slots // n)}
    assert seen[labels < 0].sum() == 0


def test_order_is_a_function_of_seed_and_epoch():
    ids, labels = dataset()
    first = balanced_order(ids, labels, 12, 4, seed=0, epoch=0)
    np.testing.assert_array_equal(first, balanced_order(ids, labels, 12, 4, seed=0, epoch=0))
    assert not np.array_equal(first, balanced_order(ids, labels, 12, 4, seed=0, epoch=1))
    assert not np.array_equal(first, balanced_order(ids, labels, 12, 4, seed=1, epoch=0))
    np.testing.assert_array_equal(first, sample_order(ids, labels, 12, 4, 0, 0, "identity_balanced"))
    assert sorted(sample_order(ids, labels, 12, 4, 0, 0, "shuffle")) == list(ids)


def test_a_dominant_identity_waits_and_too_few_identities_are_refused():
    labels = np.repeat(np.arange(4), [40, 4, 4, 4])
    order = balanced_order(np.arange(len(labels)), labels, 8, 4, seed=0, epoch=0)
    assert len(order) == 3 * 8                                    # 3 batches pair the 3 small ones with it
    with pytest.raises(ValueError, match=r"data.sampler identity_balanced: 4 labelled identities, fewer than "
                                         r"the 5 a batch needs \(train.batch_size / data.images_per_identity\)"):
        balanced_order(np.arange(len(labels)), labels, 20, 4, seed=0, epoch=0)
    with pytest.raises(ValueError, match="train.batch_size 10 must be a multiple of data.images_per_identity 4"):
        balanced_order(np.arange(len(labels)), labels, 10, 4, seed=0, epoch=0)


def test_replica_shares_keep_whole_identities():
    """Each worker computes the same order; with b = B/R a multiple of K every replica's
    rows hold whole identity groups."""
    from distill.train.distributed import ReplicaShare

    ids, labels = dataset()
    order = balanced_order(ids, labels, 12, 4, seed=2, epoch=0)
    parts = [ReplicaShare(r, 1, 3)(order, 12) for r in range(3)]
    assert all(b == 4 for _, b in parts)
    for part, _ in parts:
        for group in part.reshape(-1, 4):
            assert len(set(labels[group])) == 1
    np.testing.assert_array_equal(np.stack([p.reshape(-1, 4) for p, _ in parts], 1).reshape(-1), order)


@pytest.mark.parametrize("override, message", [
    ({"data": {"sampler": "balanced"}}, "data.sampler: unknown sampler 'balanced'"),
    ({"data": {"sampler": "identity_balanced", "images_per_identity": 3}},
     "train.batch_size 8 must be a multiple of data.images_per_identity 3 (identity_balanced batches, stage 0)"),
    ({"data": {"images_per_identity": 1}}, "data.images_per_identity must be ≥ 2, got 1"),
    ({"train": {"images_per_identity": 4}}, "train.images_per_identity is now data.images_per_identity"),
])
def test_recipe_refuses_bad_sampler_settings_naming_the_key(override, message):
    from distill.train.recipe import RecipeError, load_recipe

    data = {"data": {"train": "x", **override.get("data", {})}, "train": {"batch_size": 8, **override.get("train", {})},
            "stages": [{"epochs": 1, "lr": 0.1}]}
    with pytest.raises(RecipeError) as error:
        load_recipe(data=data)
    assert str(error.value) == f"recipe: {message}" or str(error.value).startswith(f"recipe: {message}")


def test_auto_is_identity_balanced_only_where_a_triplet_term_is_on():
    from distill.train.recipe import load_recipe
    from distill.train.stages import resolve_stages, sampler_of

    recipe = load_recipe(data={"data": {"train": "x"}, "train": {"batch_size": 8},
                               "stages": [{"epochs": 1}, {"epochs": 1, "triplet_weight": 1.0}]})
    assert [sampler_of(recipe, s) for s in resolve_stages(recipe)] == ["shuffle", "identity_balanced"]
    recipe.data.sampler = "identity_balanced"
    assert [sampler_of(recipe, s) for s in resolve_stages(recipe)] == ["identity_balanced"] * 2
