"""Kept for importers of the old path: the safe unpickler lives in :mod:`distill.safe_pickle`."""
from distill.safe_pickle import MAX_DEPTH, safe_unpickle, scan_pickle  # noqa: F401
