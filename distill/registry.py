"""One registry type for every pluggable part (losses, optimizers, schedules, backbones, output
layers, augmentations, strategies, data sources, teachers, exporters, face detectors).

A registry maps a name to a builder. The builder's own signature is the parameter schema, so
defaults live in one place; ``check`` refuses an unknown parameter naming it, the valid ones
and the closest match; an unknown name gets the same "did you mean" error everywhere.
Builders may be registered lazily as ``"package.module:attribute"``: listing names and checking
parameters then read the signature from the module's source (``ast``), importing nothing heavy
(TensorFlow stays unloaded until something is built). ``preset`` replaces signature defaults
for variants of one builder (e.g. the CM1/CM2 margin presets of ``CombinedMargin``).
"""
from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

#: marks a parameter without a default
REQUIRED = inspect.Parameter.empty


class RegistryError(ValueError):
    """An unknown name or parameter; the message names it, the valid ones and a close match."""


@dataclass(frozen=True)
class Entry:
    name: str
    target: Any                     # a callable, or "package.module:attribute"
    preset: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)   # free metadata: kind, doc, reference, ...


def did_you_mean(word: str, options, n: int = 1) -> str:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=n, cutoff=0.5)
    return f" (did you mean {', '.join(close)}?)" if close else ""


class Registry:
    """``name → builder``; ``skip`` names the builder parameters the framework passes itself
    (e.g. a backbone's ``input_shape``), which are not user parameters; ``error`` is the
    exception type raised for unknown names and parameters."""

    def __init__(self, what: str, skip: tuple = (), error: type = RegistryError):
        self.what = what
        self.skip = tuple(skip)
        self.error = error          # the ValueError subclass raised (a domain's own error type)
        self._entries: dict[str, Entry] = {}

    # ------------------------------------------------------------------ filling
    def register(self, name: str, target=None, *, preset: dict | None = None, first: bool = False, **info):
        """Register ``target`` under ``name`` (or, without ``target``, decorate a function or
        class). ``first`` puts it ahead of the others (for registries tried in order)."""
        def add(value):
            entry = Entry(name, value, dict(preset or {}), info)
            items = [(k, v) for k, v in self._entries.items() if k != name]
            items = [(name, entry)] + items if first else items + [(name, entry)]
            self._entries.clear()
            self._entries.update(items)
            return value

        return add if target is None else add(target)

    def __setitem__(self, name, target) -> None:     # dict-like, e.g. for monkeypatch.setitem
        self.register(name, target)

    def __delitem__(self, name) -> None:
        del self._entries[name]

    # ------------------------------------------------------------------ reading
    def __getitem__(self, name) -> Callable:
        return self.builder(name)

    def __contains__(self, name) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def unknown(self, name, place: str = "") -> ValueError:
        where = f"{place}: " if place else ""
        return self.error(f"{where}unknown {self.what} {name!r}{did_you_mean(name, self._entries, 2)}; "
                             f"available: {', '.join(self._entries) or '(none)'}")

    def entry(self, name, place: str = "") -> Entry:
        if name not in self._entries:
            raise self.unknown(name, place)
        return self._entries[name]

    def get(self, name, default=None):
        """dict-like: the builder of ``name``, or ``default`` when it is not registered."""
        return self.builder(name) if name in self._entries else default

    def builder(self, name, place: str = "") -> Callable:
        """The builder itself (a lazy one is imported now); RegistryError naming ``place``
        and a close match when ``name`` is unknown."""
        target = self.entry(name, place).target
        if isinstance(target, str):
            module, _, attribute = target.partition(":")
            target = getattr(importlib.import_module(module), attribute)
        return target

    def parameters(self, name) -> dict:
        """``{parameter: default or REQUIRED}`` of the builder, presets applied, ``skip`` left out;
        ``{"**": REQUIRED}`` is included when the builder accepts any keyword."""
        entry = self.entry(name)
        params = _signature(entry.target)
        out = {k: v for k, v in params.items() if k not in self.skip}
        out.update({k: v for k, v in entry.preset.items() if k in out or "**" in out})
        return out

    def defaults(self, name) -> dict:
        return {k: v for k, v in self.parameters(name).items() if k != "**" and v is not REQUIRED}

    def check(self, name, params: dict, place: str = "") -> None:
        """RegistryError for an unknown name, an unknown parameter, or a missing required one."""
        self.entry(name, place)
        schema = self.parameters(name)
        if "**" in schema:
            return
        where = f"{place}: " if place else ""
        valid = [k for k in schema]
        for key in params:
            if key not in schema and key not in self.skip:
                raise self.error(f"{where}{self.what} {name!r} has no parameter {key!r}"
                                    f"{did_you_mean(key, valid)}; valid: {', '.join(valid) or 'none'}")
        missing = [k for k, v in schema.items() if v is REQUIRED and k not in params]
        if missing:
            raise self.error(f"{where}{self.what} {name!r} needs {', '.join(missing)}")

    def build(self, name, *args, place: str = "", **params):
        """``builder(*args, **{preset, params})`` after :meth:`check`."""
        self.check(name, params, place)
        preset = self.entry(name).preset
        return self.builder(name)(*args, **{**preset, **params})


# ------------------------------------------------------------------- signatures
def _signature(target) -> dict:
    if isinstance(target, str):
        parsed = _source_signature(target)
        if parsed is not None:
            return parsed
        module, _, attribute = target.partition(":")
        target = getattr(importlib.import_module(module), attribute)
    return _live_signature(target)


def _live_signature(target) -> dict:
    function = target.__init__ if inspect.isclass(target) else target
    out = {}
    for index, (name, param) in enumerate(inspect.signature(function).parameters.items()):
        if inspect.isclass(target) and index == 0:
            continue    # self
        if param.kind is param.VAR_KEYWORD:
            out["**"] = REQUIRED
        elif param.kind is not param.VAR_POSITIONAL:
            out[name] = param.default
    return out


def _source_signature(target: str) -> dict | None:
    """The signature of ``module:attribute`` read from the module's source without importing
    it; None when it cannot be read that way (then the module is imported)."""
    module, _, attribute = target.partition(":")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    with open(spec.origin, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    node = next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))
                 and n.name == attribute), None)
    if isinstance(node, ast.ClassDef):
        node = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
        skip_first = True
    else:
        skip_first = False
    if node is None:
        return None
    args = node.args
    positional = args.posonlyargs + args.args
    defaults = [REQUIRED] * (len(positional) - len(args.defaults)) + list(args.defaults)
    out = {}
    pairs = list(zip(positional, defaults))[1 if skip_first else 0:]
    pairs += list(zip(args.kwonlyargs, [d if d is not None else REQUIRED for d in args.kw_defaults]))
    for arg, default in pairs:
        if default is REQUIRED:
            out[arg.arg] = REQUIRED
            continue
        try:
            out[arg.arg] = ast.literal_eval(default)
        except ValueError:
            return None     # a default that is not a literal: import the module instead
    if args.kwarg is not None:
        out["**"] = REQUIRED
    return out
