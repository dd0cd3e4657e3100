"""What an epoch leaves behind for people: the one-line log summary and TensorBoard scalars."""
from __future__ import annotations

from pathlib import Path


def epoch_summary(record: dict) -> str:
    """``lr=… total=… classification=… grad/distill=… view1_test=…`` for the log."""
    loss = " ".join(f"{k}={v:.4f}" for k, v in record["loss"].items())
    ratios = " ".join(f"{k}={v:.3g}" for k, v in record.get("gradients", {}).items())
    loss = f"{loss} {ratios}".strip()
    evals = " ".join(f"{k}={v['accuracy']:.4f}" for k, v in record["eval"].items())
    return f"lr={record['lr']:g} {loss} {evals}".strip()


class ScalarWriter:
    """Per-epoch scalars in a TensorBoard folder (written with core TF summary ops, so the
    TensorBoard package is needed only to view them); the file is opened on first use."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._writer = None

    def write(self, record: dict) -> None:
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.folder))
            meta = summary_pb2.SummaryMetadata()
            meta.plugin_data.plugin_name = "scalars"
            self._meta = meta.SerializeToString()
        scalars = {"lr": record["lr"], **{f"loss/{k}": v for k, v in record["loss"].items()},
                   **record.get("gradients", {}),
                   **{f"eval/{k}": m["accuracy"] for k, m in record["eval"].items()},
                   **{f"auto_weight/{k}": w["weight"] for k, w in record.get("auto_weights", {}).items()},
                   **{f"auto_ratio/{k}": w["ratio"] for k, w in record.get("auto_weights", {}).items()}}
        with self._writer.as_default():
            for tag, value in scalars.items():
                tf.summary.write(tag, tf.constant(float(value), tf.float32), step=record["epoch"],
                                 metadata=self._meta)
        self._writer.flush()
