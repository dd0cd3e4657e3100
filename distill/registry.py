"""Registries: plain ``name → builder`` dicts filled by a decorator, instead of if-chains."""
from __future__ import annotations

from typing import Callable


def registrar(table: dict) -> Callable:
    """``register = registrar(TABLE)``; then ``@register("name")`` adds a function to TABLE."""

    def register(name: str):
        def decorate(fn):
            table[name] = fn
            return fn

        return decorate

    return register


def lookup(table: dict, name: str, what: str):
    """``table[name]``, or a ValueError listing what is available."""
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; available: {', '.join(sorted(table))}")
    return table[name]
