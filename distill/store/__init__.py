"""The sharded HDF5 embedding store: manifest, writer (``embed``), reader, verify."""
from distill.store.manifest import Manifest, StoreError
from distill.store.reader import Store

__all__ = ["Manifest", "Store", "StoreError"]
