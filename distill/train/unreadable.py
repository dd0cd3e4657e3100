"""Training images that cannot be read or decoded.

Without ``data.skip_bad`` the first one stops the run with a one-line error naming the file
(looked up in the batch where the input pipeline failed). With ``data.skip_bad: true`` the
training images are checked once, before the first epoch (one parallel decoding pass): the
unreadable ones are left out of every epoch and recorded in ``RUN/skipped.json``, which a
resumed run reuses while the dataset listing is unchanged.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from distill.data.images import read_problem, unreadable_samples
from distill.data.sources import DataError
from distill.utils import atomic_write_json, first_line

log = logging.getLogger(__name__)

SKIPPED_NAME = "skipped.json"
_HINT = "fix or remove it, or set data.skip_bad: true to skip and record unreadable images"


def skip_unreadable(source, sample_ids, run_dir, record: bool = True) -> np.ndarray:
    """The sample_ids among ``sample_ids`` to leave out (with ``record``, the chief's, also
    written to ``run_dir/skipped.json``)."""
    path = Path(run_dir) / SKIPPED_NAME
    key = {"fingerprint": source.fingerprint(), "checked": int(len(sample_ids))}
    try:
        saved = json.loads(path.read_text())
        if {k: saved.get(k) for k in key} == key:
            return np.array([s["sample_id"] for s in saved["skipped"]], dtype=np.int64)
    except (OSError, ValueError, KeyError, TypeError):
        pass   # not checked yet (or a damaged record): check again
    skipped = unreadable_samples(source, sample_ids)
    if record:
        atomic_write_json(path, {**key, "skipped": skipped})
    for item in skipped:
        log.warning("skipped %s: %s", item["path"], item["reason"])
    return np.array([s["sample_id"] for s in skipped], dtype=np.int64)


def named_input_errors(dataset, source, epoch_order, batch_size: int, targets=None):
    """Iterate ``dataset``; when the input pipeline fails (an image that cannot be read or
    decoded), raise a :class:`DataError` naming the image. ``epoch_order()`` gives the
    epoch's sample order, computed only then. A damaged teacher row read by ``targets`` is
    reported as the targets' own error (``targets.failure``)."""
    import tensorflow as tf

    iterator, step = iter(dataset), 0
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.DataLossError,
                tf.errors.UnknownError) as exc:
            if getattr(targets, "failure", None) is not None:
                raise targets.failure from None
            raise _unreadable_error(source, epoch_order(), step, batch_size, exc) from None
        yield batch
        step += 1


def _unreadable_error(source, order, step: int, batch_size: int, exc) -> Exception:
    """The error naming the first unreadable image of the failed batch (else of the epoch)."""
    for sample_id in order[step * batch_size:(step + 1) * batch_size]:
        reason = read_problem(source, int(sample_id))
        if reason:
            return DataError(f"{source.describe(int(sample_id))}: {reason} (sample_id {int(sample_id)}); {_HINT}")
    found = unreadable_samples(source, order)
    if found:
        return DataError(f"{found[0]['path']}: {found[0]['reason']} (sample_id {found[0]['sample_id']}); {_HINT}")
    return DataError(f"{source.root}: the input pipeline failed at batch {step + 1} ({first_line(exc)})")
