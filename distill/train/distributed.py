"""Training past one machine on TensorFlow's own engine: ``train.distribute: multi_worker``.

``tf.distribute.MultiWorkerMirroredStrategy`` reads the cluster from ``TF_CONFIG`` (the
Keras/TF convention: ``{"cluster": {"worker": ["host0:port", ...]}, "task": {"type":
"worker", "index": i}}``); no launcher of our own. Without ``TF_CONFIG`` it is one worker.

Every worker computes the same global epoch order (a function of ``(seed, epoch)``,
:func:`distill.train.pipeline.epoch_order`) and reads only its replicas' slices of each global
batch (:class:`ReplicaShare`): global replica ``r`` gets rows ``[r·b, (r+1)·b)`` of every
batch of ``B = R·b``, the split ``experimental_distribute_dataset`` makes on one machine.
The chief (worker 0) writes checkpoints, history, models and evaluates; every worker restores
from the (shared) run directory.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def multi_worker_strategy(devices):
    """``train.distribute: multi_worker`` (registered in distill.train.step)."""
    import tensorflow as tf

    if devices:
        raise ValueError("train.devices does not apply to train.distribute: multi_worker (each "
                         "worker uses every GPU it sees; set CUDA_VISIBLE_DEVICES per worker)")
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_multi_worker(strategy) -> bool:
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy) -> bool:
    """Whether this process writes the run's files (always, except on non-chief workers)."""
    return bool(getattr(strategy.extended, "should_checkpoint", True))


@dataclass(frozen=True)
class ReplicaShare:
    """This worker's part of every global batch: replicas ``first … first+count−1`` of ``total``."""

    first: int
    count: int
    total: int

    def __call__(self, order: np.ndarray, batch_size: int) -> tuple[np.ndarray, int]:
        """``(order of this worker's samples, per-replica batch)``; consecutive per-replica
        batches go to this worker's replicas in turn (as ``distribute_datasets_from_function``
        hands them out). Global batches beyond the last full one are dropped."""
        if batch_size % self.total:
            raise ValueError(f"train.batch_size {batch_size} is not divisible by {self.total} replicas")
        per_replica = batch_size // self.total
        steps = len(order) // batch_size
        table = np.asarray(order[:steps * batch_size]).reshape(steps, self.total, per_replica)
        return table[:, self.first:self.first + self.count].reshape(-1), per_replica

    @classmethod
    def of(cls, context) -> "ReplicaShare":
        """From a ``tf.distribute.InputContext`` (worker = input pipeline)."""
        local = context.num_replicas_in_sync // context.num_input_pipelines
        return cls(context.input_pipeline_id * local, local, context.num_replicas_in_sync)


def distribute_dataset(strategy, make_dataset):
    """``make_dataset(share)`` → the dataset to iterate under ``strategy``: across workers each
    builds only its share (``share`` a :class:`ReplicaShare`); on one machine the global
    batches are split by ``experimental_distribute_dataset`` (``share`` None)."""
    if is_multi_worker(strategy):
        return strategy.distribute_datasets_from_function(lambda context: make_dataset(ReplicaShare.of(context)))
    if strategy.num_replicas_in_sync > 1:
        return strategy.experimental_distribute_dataset(make_dataset(None))
    return make_dataset(None)
