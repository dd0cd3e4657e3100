"""The training input pipeline: read → decode → augment → normalise, joined with the stored
teacher embeddings by ``sample_id`` (the teacher is never run during training).

Every random choice is a pure function of ``(seed, epoch, sample_id)``: the epoch order
comes from NumPy's generator seeded with ``(seed, epoch)`` and each augmentation draws from
TF's stateless RNG, so an interrupted and resumed run sees exactly the same batches.
"""
from __future__ import annotations

import numpy as np

from distill.data.images import decode_and_resize, input_parallelism
from distill.data.preprocess import normalize

from distill.registry import Registry  # noqa: E402

#: name → function(image uint8 [H,W,3], seed [2] int) → (image uint8, flipped bool)
AUGMENTATIONS = Registry("augmentation", skip=("image", "seed"))
register_augmentation = AUGMENTATIONS.register


def _random_flip(image, seed):
    import tensorflow as tf

    flipped = tf.random.stateless_uniform([], seed=seed) < 0.5
    image = tf.cond(flipped, lambda: tf.reverse(image, axis=[1]), lambda: image)
    return image, flipped


@register_augmentation("none")
def augment_none(image, seed):
    import tensorflow as tf

    return image, tf.constant(False)


@register_augmentation("flip")
def augment_flip(image, seed):
    return _random_flip(image, seed)


@register_augmentation("flip_brightness")
def augment_flip_brightness(image, seed):
    import tensorflow as tf

    image, flipped = _random_flip(image, seed)
    x = tf.image.stateless_random_brightness(tf.cast(image, tf.float32), 32.0, seed=seed + 1)
    return tf.cast(tf.clip_by_value(x, 0, 255), tf.uint8), flipped


@register_augmentation("flip_color")
def augment_flip_color(image, seed):
    import tensorflow as tf

    image, flipped = _random_flip(image, seed)
    x = tf.image.stateless_random_brightness(tf.cast(image, tf.float32) / 255.0, 0.125, seed=seed + 1)
    x = tf.image.stateless_random_contrast(x, 0.75, 1.25, seed=seed + 2)
    x = tf.image.stateless_random_saturation(x, 0.75, 1.25, seed=seed + 3)
    return tf.cast(tf.clip_by_value(x * 255.0, 0, 255), tf.uint8), flipped


@register_augmentation("flip_color_crop")
def augment_flip_color_crop(image, seed):
    import tensorflow as tf

    image, flipped = augment_flip_color(image, seed)
    height, width = image.shape[0], image.shape[1]
    padded = tf.image.resize_with_crop_or_pad(image, height + 16, width + 16)
    image = tf.image.stateless_random_crop(padded, (height, width, 3), seed=seed + 4)
    return image, flipped


class TeacherTargets:
    """Stored teacher embeddings as tensors indexed by sample_id (plain and, if stored, flipped)."""

    def __init__(self, store, source):
        from distill.store import StoreError

        manifest = store.require_complete().manifest
        if manifest.source.get("fingerprint") != source.fingerprint():
            raise StoreError(f"{store.path}: store was embedded from a different dataset listing "
                             f"than {source.root} (fingerprints differ); re-run `distill embed`")
        from distill.store.integrity import check_source_content

        check_source_content(store, source)
        self.store = store
        self.dim = manifest.embedding_dim
        self.present = None

    def gather(self, sample_id, flipped):
        """float32 targets of a batch: the flipped image's embedding where ``flipped``."""
        import tensorflow as tf

        plain = tf.gather(self._plain, sample_id)
        if self._flip is not None:
            plain = tf.where(flipped[..., None], tf.gather(self._flip, sample_id), plain)
        return tf.cast(plain, tf.float32)

    def build(self):
        """Load the tables as tensors in the store's dtype (float16 stays float16, half the
        memory); call once, outside any tf.function."""
        import tensorflow as tf

        dtype = np.dtype(self.store.manifest.dtype)
        table, self.present = self.store.load_table("embedding", dtype)
        self._plain = tf.constant(table)
        del table
        self._flip = (tf.constant(self.store.load_table("embedding_flip", dtype)[0])
                      if self.store.has_flip else None)
        return self


#: name → order(sample_ids, labels, batch_size, per_identity, seed, epoch) → sample ids of one epoch
SAMPLERS = Registry("sampler", skip=("sample_ids", "labels", "batch_size", "per_identity", "seed", "epoch"))


@SAMPLERS.register("shuffle")
def epoch_order(sample_ids: np.ndarray, labels=None, batch_size: int = 0, per_identity: int = 0,
                seed: int = 0, epoch: int = 0) -> np.ndarray:
    """The shuffled sample order of one epoch: a function of (seed, epoch) only."""
    rng = np.random.default_rng([seed, epoch])
    return sample_ids[rng.permutation(len(sample_ids))]


@SAMPLERS.register("identity_balanced")
def balanced_order(sample_ids: np.ndarray, labels: np.ndarray, batch_size: int, per_identity: int,
                   seed: int, epoch: int) -> np.ndarray:
    """P×K batches: consecutive ``batch_size`` chunks hold P = ``batch_size // K`` distinct
    identities × K = ``per_identity`` images, a function of (seed, epoch).

    Unlabelled samples (label < 0) are left out. Each identity's n images, shuffled and
    repeated cyclically, fill ⌈n/K⌉ groups of K (an identity with fewer than K images repeats
    them; otherwise every image appears once or, topping up the last group, twice). Each batch
    takes the P identities with the most groups left (ties random), which uses every group
    whenever no identity holds more than 1/P of them; the rest (fewer than P groups, or a
    dominant identity's excess) waits for a later epoch. Batches are then shuffled."""
    import heapq

    if per_identity < 1 or batch_size % per_identity:
        raise ValueError(f"train.batch_size {batch_size} must be a multiple of data.images_per_identity "
                         f"{per_identity}")
    rng = np.random.default_rng([seed, epoch, 1])
    sample_ids = np.asarray(sample_ids, dtype=np.int64)
    labelled = sample_ids[np.asarray(labels)[sample_ids] >= 0]
    classes, inverse = np.unique(np.asarray(labels)[labelled], return_inverse=True)
    per_batch = batch_size // per_identity
    if len(classes) < per_batch:
        raise ValueError(f"data.sampler identity_balanced: {len(classes)} labelled identities, fewer than "
                         f"the {per_batch} a batch needs (train.batch_size / data.images_per_identity)")
    groups = []
    for index in range(len(classes)):
        members = rng.permutation(labelled[inverse == index])
        count = -(-len(members) // per_identity)
        groups.append(list(np.resize(members, count * per_identity).reshape(count, per_identity)))
    heap = [(-len(g), rng.random(), c) for c, g in enumerate(groups)]
    heapq.heapify(heap)
    batches = []
    while len(heap) >= per_batch:
        chosen = [heapq.heappop(heap) for _ in range(per_batch)]
        batches.append(np.concatenate([groups[c].pop() for _, _, c in chosen]))
        for left, _, c in chosen:
            if left + 1 < 0:
                heapq.heappush(heap, (left + 1, rng.random(), c))
    if not batches:
        return np.zeros(0, np.int64)
    return np.concatenate([batches[i] for i in rng.permutation(len(batches))]).astype(np.int64)


def sample_order(sample_ids, labels, batch_size: int, per_identity: int, seed: int, epoch: int,
                 sampler: str | None = None):
    """The order of one epoch from ``sampler`` (:data:`SAMPLERS`); without one, identity-balanced
    when ``per_identity`` > 0, else shuffled."""
    if sampler is None:
        sampler = "identity_balanced" if per_identity else "shuffle"
    return SAMPLERS.builder(sampler, "data.sampler")(sample_ids, labels, batch_size, per_identity, seed, epoch)


def training_dataset(source, sample_ids: np.ndarray, batch_size: int, seed: int, epoch: int,
                     augment: str = "flip", targets: TeacherTargets | None = None,
                     num_parallel_calls: int = -1, per_identity: int = 0, labels=None, share=None,
                     sampler: str | None = None):
    """One epoch of batches ``{"image", "label", "sample_id", "flipped"[, "teacher"]}``.

    ``image`` is normalised float32 (``preprocess.normalize``); incomplete last batches are
    dropped so every step has the same shape. ``labels`` (by sample_id; −1 = unlabelled)
    replaces ``source.labels``, e.g. after rare classes were unlabelled for training.
    ``share`` (:class:`distill.train.distributed.ReplicaShare`) keeps this worker's part of
    every global batch, batched per replica. ``sampler``: a :data:`SAMPLERS` name (see
    :func:`sample_order`).
    """
    import tensorflow as tf

    augment_fn = AUGMENTATIONS.builder(augment, "data.augment")
    parallel = input_parallelism(num_parallel_calls or -1)
    sample_ids = np.asarray(sample_ids, dtype=np.int64)
    labels = np.asarray(source.labels if labels is None else labels, dtype=np.int64)
    order = sample_order(sample_ids, labels, batch_size, per_identity, seed, epoch, sampler)
    if share is not None:
        order, batch_size = share(order, batch_size)
    labels = tf.constant(labels, dtype=tf.int64)

    def load(sample_id, data):  # per image: decode and augment (uint8)
        image = decode_and_resize(data)
        rng_seed = tf.stack([tf.cast(seed * 100003 + epoch, tf.int64), sample_id])
        image, flipped = augment_fn(image, rng_seed)
        return sample_id, image, flipped

    def finish(sample_id, image, flipped):  # per batch, vectorised: normalise, labels, targets
        item = {"image": normalize(image), "label": tf.gather(labels, sample_id),
                "sample_id": sample_id, "flipped": flipped}
        if targets is not None:
            item["teacher"] = targets.gather(sample_id, flipped)
        return item

    dataset = source.encoded_dataset(order)
    dataset = dataset.map(load, num_parallel_calls=parallel, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    dataset = dataset.map(finish, num_parallel_calls=parallel, deterministic=True)
    options = tf.data.Options()
    options.threading.max_intra_op_parallelism = 1   # input ops stay single-threaded; the model gets the cores
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)
