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


def epoch_order(sample_ids: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """The shuffled sample order of one epoch: a function of (seed, epoch) only."""
    rng = np.random.default_rng([seed, epoch])
    return sample_ids[rng.permutation(len(sample_ids))]


def balanced_order(sample_ids: np.ndarray, labels: np.ndarray, batch_size: int, per_identity: int,
                   seed: int, epoch: int) -> np.ndarray:
    """An epoch order whose consecutive ``batch_size`` chunks hold ``batch_size // K``
    distinct identities × ``K`` images each (classes with fewer than K images are
    sampled with replacement), for triplet and other metric losses."""
    if batch_size % per_identity:
        raise ValueError(f"batch size {batch_size} is not a multiple of images per identity {per_identity}")
    rng = np.random.default_rng([seed, epoch, 1])
    by_class: dict[int, list] = {}
    for sample_id in sample_ids:
        by_class.setdefault(int(labels[sample_id]), []).append(int(sample_id))
    groups = {}
    for label, members in by_class.items():
        members = rng.permutation(members)
        if len(members) < per_identity:
            members = rng.choice(members, per_identity, replace=True)
        usable = len(members) // per_identity * per_identity
        groups[label] = [members[i:i + per_identity] for i in range(0, usable, per_identity)]
    per_batch = batch_size // per_identity
    if len(groups) < per_batch:
        raise ValueError(f"{len(groups)} identities, fewer than the {per_batch} a batch needs")
    order = []
    for _ in range(len(sample_ids) // batch_size):
        classes = np.array([c for c, g in groups.items() if g])
        if len(classes) < per_batch:
            break
        weights = np.array([len(groups[c]) for c in classes], dtype=np.float64)
        for label in rng.choice(classes, per_batch, replace=False, p=weights / weights.sum()):
            order.extend(groups[int(label)].pop())
    return np.asarray(order, dtype=np.int64)


def sample_order(sample_ids, labels, batch_size: int, per_identity: int, seed: int, epoch: int):
    """The order of one epoch: identity-balanced with ``per_identity`` > 0, else shuffled."""
    if per_identity:
        return balanced_order(sample_ids, labels, batch_size, per_identity, seed, epoch)
    return epoch_order(sample_ids, seed, epoch)


def training_dataset(source, sample_ids: np.ndarray, batch_size: int, seed: int, epoch: int,
                     augment: str = "flip", targets: TeacherTargets | None = None,
                     num_parallel_calls: int = -1, per_identity: int = 0, labels=None, share=None):
    """One epoch of batches ``{"image", "label", "sample_id", "flipped"[, "teacher"]}``.

    ``image`` is normalised float32 (``preprocess.normalize``); incomplete last batches are
    dropped so every step has the same shape. ``labels`` (by sample_id; −1 = unlabelled)
    replaces ``source.labels``, e.g. after rare classes were unlabelled for training.
    ``share`` (:class:`distill.train.distributed.ReplicaShare`) keeps this worker's part of
    every global batch, batched per replica.
    """
    import tensorflow as tf

    augment_fn = AUGMENTATIONS.builder(augment, "data.augment")
    parallel = input_parallelism(num_parallel_calls or -1)
    sample_ids = np.asarray(sample_ids, dtype=np.int64)
    labels = np.asarray(source.labels if labels is None else labels, dtype=np.int64)
    order = sample_order(sample_ids, labels, batch_size, per_identity, seed, epoch)
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
