"""The house rules, checked: no import cycle, data flows one way, small modules."""
from __future__ import annotations

import ast
import collections
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(list((ROOT / "distill").rglob("*.py")) + list((ROOT / "teachers").rglob("*.py")))


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def absolute_module(name: str, path: Path, node: ast.ImportFrom) -> str:
    """The module an ``ImportFrom`` names; relative ones (``from . import x``, ``from ..a import
    b``) resolved against the importing module's package."""
    if node.level == 0:
        return node.module or ""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    base = package[:len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(module_level_only: bool) -> dict:
    modules = {module_name(p): p for p in SOURCES}
    graph = collections.defaultdict(set)
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        nodes = tree.body if module_level_only else list(ast.walk(tree))
        for node in nodes:
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = absolute_module(name, path, node)
                targets = [module] + [f"{module}.{a.name}" for a in node.names]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def test_relative_imports_resolve_to_module_names():
    package, module = ROOT / "distill" / "store" / "__init__.py", ROOT / "distill" / "store" / "reader.py"
    node = ast.parse("from . import x").body[0]
    assert absolute_module("distill.store", package, node) == "distill.store"
    assert absolute_module("distill.store.reader", module, node) == "distill.store"
    node = ast.parse("from ..train import recipe").body[0]
    assert absolute_module("distill.store.reader", module, node) == "distill.train"


def find_cycles(graph: dict) -> list:
    state, cycles = {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_no_import_cycle_at_module_level():
    assert not find_cycles(import_graph(True))


def test_no_import_cycle_inside_functions_either():
    """A function-level import that closes a cycle is still a cycle (ARCHITECTURE.md)."""
    assert not find_cycles(import_graph(False))


def test_the_flow_is_one_way():
    """images → data → teachers → store → train ◄ losses, models; evals → report; the CLI on top."""
    forbidden = {"distill.data": ("distill.store", "distill.train", "distill.evals", "distill.report", "distill.cli"),
                 "teachers": ("distill.store", "distill.train", "distill.evals", "distill.report", "distill.cli"),
                 "distill.store": ("distill.train", "distill.evals", "distill.report", "distill.cli"),
                 "distill.losses": ("distill.train", "distill.store", "distill.report", "distill.cli"),
                 "distill.models": ("distill.train", "distill.store", "distill.report", "distill.cli"),
                 "distill.evals": ("distill.train", "distill.report", "distill.cli"),
                 "distill.train": ("distill.report", "distill.cli"),
                 "distill.report": ("distill.cli",)}
    graph = import_graph(False)
    wrong = [(a, b) for a, targets in graph.items() for b in targets
             for layer, banned in forbidden.items() if a.startswith(layer) and b.startswith(banned)]
    assert not wrong, wrong


def test_no_module_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in SOURCES if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long
