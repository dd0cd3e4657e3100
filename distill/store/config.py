"""Embedding recipes: a YAML file with the arguments of :func:`distill.store.writer.embed`."""
from __future__ import annotations

import difflib
import inspect
from pathlib import Path

from distill.store.manifest import StoreError
from distill.utils import read_yaml_mapping


def load_embed_config(path) -> dict:
    """Read and check an embed recipe: only ``embed()``'s arguments, with the right kinds."""
    from distill.store.writer import embed

    path = Path(path)
    raw = read_yaml_mapping(path, StoreError, "embed recipe")
    params = inspect.signature(embed).parameters
    for key, value in raw.items():
        if key not in params or key == "preprocess":
            close = difflib.get_close_matches(str(key), list(params), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(params)}"
            raise StoreError(f"{path}: unknown key '{key}'{hint}")
        default = params[key].default
        if default is not inspect.Parameter.empty and default is not None and value is not None \
                and not isinstance(value, type(default)) and not (isinstance(default, float) and isinstance(value, int)):
            raise StoreError(f"{path}: '{key}' must be {type(default).__name__}, got {value!r}")
    return raw
