"""Verification evaluation: ``.bin`` / pairs.txt sets, InsightFace metrics, IJB-B/C templates.

Modules: :mod:`~distill.evals.bins` (safe ``.bin`` I/O, ``make_bin``), :mod:`~distill.evals.pairs`
(LFW ``pairs.txt``), :mod:`~distill.evals.metrics` (NumPy metrics), :mod:`~distill.evals.verification`
(embedding models on sets), :mod:`~distill.evals.ijb` (IJB 1:1). Importing this package does
not import TensorFlow.
"""
from __future__ import annotations
