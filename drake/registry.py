"""One generic registry for every pluggable kind (task families, sources, methods, engines, metrics).

Entries may be lazy ``"module:attr"`` strings so that listing names never imports torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from drake.errors import DrakeError, UnknownNameError, did_you_mean, where_raised

T = TypeVar("T")

_VALID_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-")


@dataclass
class _Entry:
    target: Any  # the object, or a "module:attr" string until first use
    summary: str


class Registry(Generic[T]):
    """Name -> object map with lazy imports, name checks and "did you mean" errors."""

    def __init__(self, kind: str, check: Callable[[str, Any], None] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, _Entry] = {}
        self._check = check

    def register(self, name: str, target: Any = None, *, summary: str = "") -> Any:
        """Register ``target`` (object or ``"module:attr"``); without a target, act as a decorator."""
        if target is None:

            def deco(obj: T) -> T:
                self.register(name, obj, summary=summary)
                return obj

            return deco
        if not name or set(name) - _VALID_NAME_CHARS:
            raise DrakeError(f"invalid {self.kind} name {name!r}: use lower-case letters, digits, '_' or '-'")
        if name in self._entries:
            raise DrakeError(f"{self.kind} {name!r} is registered twice; pick a new name")
        if isinstance(target, str) and ":" not in target:
            raise DrakeError(f"lazy {self.kind} target {target!r} must look like 'package.module:attr'")
        if not isinstance(target, str) and self._check is not None:
            self._check(name, target)  # a lazy target is checked when first imported
        self._entries[name] = _Entry(target, summary)
        return target

    def get(self, name: str) -> T:
        """Return the object registered under ``name``, importing it on first use."""
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, self._entries)}; "
                f"known: {', '.join(sorted(self._entries)) or '(none)'}"
            )
        if isinstance(entry.target, str):
            module_name, attr = entry.target.split(":", 1)
            try:
                obj = getattr(importlib.import_module(module_name), attr)
            except DrakeError:
                raise
            except Exception as exc:  # a missing module, or an error in its code (say where: the user's file)
                what = "" if isinstance(exc, (ImportError, AttributeError)) else f"{type(exc).__name__} {where_raised(exc)}: "
                raise DrakeError(f"{self.kind} {name!r}: cannot import {entry.target!r} ({what}{exc})") from exc
            if self._check is not None:
                self._check(name, obj)
            entry.target = obj
        return entry.target

    def summary(self, name: str) -> str:
        """One line describing ``name``: the registered summary, else the object's first doc line."""
        entry = self._entries[name]
        if entry.summary:
            return entry.summary
        doc = getattr(self.get(name), "__doc__", None) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
