"""One YAML loader for every recipe: PyYAML's SafeLoader that refuses a key given twice.

Plain YAML keeps the last of two equal keys in a mapping and drops the first without a word
(``data:`` twice in a recipe loses the first ``data`` section). :class:`UniqueKeyLoader` checks
every mapping of a document before building it and raises :class:`DuplicateKeyError` naming the
key's path (``data``, ``stages.1.lr``) and both line numbers; callers prefix the file.
"""
from __future__ import annotations

import yaml


class DuplicateKeyError(ValueError):
    """A mapping gives one key twice; the message names its path and both lines."""


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader whose mappings must not repeat a key (merge keys ``<<`` may still be overridden)."""

    place = ""   # the key path of the document's root (``--set data={...}``: ``data``)

    def construct_document(self, node):
        _check_unique(node, self.place)
        return super().construct_document(node)


def _check_unique(root, place: str = "") -> None:
    """Walk the composed node graph once (aliases are visited once, so no blow-up)."""
    seen, todo = set(), [(root, place)]
    while todo:
        node, place = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        children = []
        if isinstance(node, yaml.MappingNode):
            lines = {}
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else None
                where = f"{place}.{name}" if place else str(name)
                if name is not None and name != "<<":
                    if (key.tag, name) in lines:
                        raise DuplicateKeyError(f"key '{where}' is given twice (lines {lines[key.tag, name]} and "
                                                f"{key.start_mark.line + 1}); YAML would keep only the second: "
                                                "remove one")
                    lines[key.tag, name] = key.start_mark.line + 1
                children.append((value, where))
        elif isinstance(node, yaml.SequenceNode):
            children = [(item, f"{place}.{i}" if place else str(i)) for i, item in enumerate(node.value)]
        todo.extend(reversed(children))   # depth first, in document order


def load_yaml(text: str, place: str = ""):
    """The Python value of one YAML document; duplicate keys raise :class:`DuplicateKeyError`
    (their path prefixed with ``place``, the key path the document is the value of)."""
    loader = UniqueKeyLoader(text)
    loader.place = place
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def yaml_problem(exc: yaml.YAMLError) -> str:
    """One line for a YAML syntax error: the problem and where (``line 2, column 7``)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).strip().splitlines()[0]
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem
