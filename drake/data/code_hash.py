"""The generator-code part of a config's build key: editing a generator rebuilds exactly the configs using it.

The hash covers the source file defining a generator and every ``drake.data`` module it imports, found by
parsing (never importing) the files, so a config's key changes with the code that draws its rows.
"""

from __future__ import annotations

import ast
import functools
import inspect
from pathlib import Path
from typing import Any

from drake.io import sha256_file
from drake.spec import REPO_ROOT, fingerprint


def _module_path(name: str) -> Path | None:
    """The source file of a ``drake.data`` module (package ``__init__`` files are left out on purpose:
    registry lines change whenever a family is added, without changing any existing family's rows)."""
    if not name.startswith("drake.data"):
        return None
    path = REPO_ROOT.joinpath(*name.split(".")).with_suffix(".py")
    return path if path.is_file() else None


def _imported_modules(path: Path) -> set[str]:
    """``drake.data`` modules a source file imports (absolute or relative), found without importing it."""
    stat = path.stat()
    return _imported_modules_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=512)
def _imported_modules_cached(path: str, _mtime_ns: int, _size: int) -> frozenset[str]:
    file = Path(path)
    package = (
        ".".join(file.relative_to(REPO_ROOT).with_suffix("").parts[:-1])
        if file.is_relative_to(REPO_ROOT)
        else ""
    )
    names: set[str] = set()
    for node in ast.walk(ast.parse(file.read_bytes())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return frozenset(n for n in names if n.startswith("drake.data"))


def code_hash(obj: Any) -> str:
    """sha256 over the source file defining ``obj`` and every ``drake.data`` module it imports, transitively:
    editing a generator (or a helper it draws with) rebuilds exactly the configs that use it."""
    try:
        start = inspect.getsourcefile(inspect.unwrap(obj))
    except TypeError:
        return ""
    if not start:
        return ""
    todo, seen = [Path(start)], {}
    while todo:
        path = todo.pop()
        key = (
            str(path.resolve().relative_to(REPO_ROOT))
            if path.resolve().is_relative_to(REPO_ROOT)
            else path.name
        )
        if key in seen:
            continue
        seen[key] = sha256_file(path)
        todo += [p for p in map(_module_path, _imported_modules(path)) if p is not None]
    return fingerprint(seen)
