"""The import contract of the code base (issue [R]): no import circles inside ``drake``, no module importing
another's private names, and the engines never reaching up into the runner.

Imports are read from the source (lazy imports inside functions count; those under ``if TYPE_CHECKING:``
do not, they never run), so a circle that only closes at run time is caught too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("drake", "baselines", "fedmosaic", "leaderboard")


def _modules(package: str) -> dict[str, Path]:
    out = {}
    for path in (ROOT / package).rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement except those under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for branch in node.orelse for n in _runtime_imports(ast.Module([branch], [])))
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _runtime_imports(node)


def _graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        for node in _runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                names = []
            for name in names:
                target = owner(name)
                # a package's __init__ is not an edge: importing drake.fl.x runs drake/fl/__init__ first anyway
                if target and target != mod and not mod.startswith(f"{target}.") and target in modules:
                    graph[mod].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles_in_drake() -> None:
    cycles = _cycles(_graph(_modules("drake")))
    assert not cycles, f"import circles (break each by moving the shared names to a lower module): {cycles}"


def test_the_cycle_finder_finds_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_private_names_of_another() -> None:
    bad = []
    for package in PACKAGES:
        for mod, path in _modules(package).items():
            for node in _runtime_imports(ast.parse(path.read_text())):
                if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module):
                    continue
                if node.module.split(".")[0] in PACKAGES and node.module != mod:
                    bad += [f"{mod}: from {node.module} import {a.name}" for a in node.names
                            if a.name.startswith("_") and not a.name.startswith("__")]  # fmt: skip
    assert not bad, "private names imported across modules (make them public where they live): " + "; ".join(bad)


def test_engines_and_data_do_not_import_the_runner_or_the_cli() -> None:
    graph = _graph(_modules("drake"))
    up = ("drake.runner", "drake.commands", "drake.cli")
    reach = sorted(f"{m} -> {t}" for m, targets in graph.items() if m.startswith(("drake.fl", "drake.data"))
                   for t in targets if t.startswith(up))  # fmt: skip
    assert not reach, f"drake/fl and drake/data sit below the runner and the CLI: {reach}"
