"""``manifest.json`` of a built directory: build params, and per config its key, files, rows and sha256.

The manifest is what makes a rebuild incremental (a config is fresh when its key is unchanged and its files
still match their sha256) and what readers check a config and split against before opening a file.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drake.data.schema import FORMAT_VERSION
from drake.io import atomic_write_json, sha256_file

MANIFEST = "manifest.json"
SECTIONS = ("tasks", "extras", "scenarios")


def _file_hash(path: str | None) -> str:
    return sha256_file(path) if path and os.path.isfile(path) else ""


def _entry_problem(section: str, name: str, entry: Any) -> str | None:
    files = entry.get("files") if isinstance(entry, dict) else None
    if not isinstance(files, dict):
        return f"{section} {name!r} has no 'files' object"
    for split, f in files.items():
        if not isinstance(f, dict) or not {"path", "sha256", "rows"} <= f.keys():
            return f"{section} {name!r}, split {split!r}: expected path, sha256 and rows"
    return None


def manifest_problem(data: Any) -> str | None:
    """What is wrong with the layout of a loaded ``manifest.json`` (None when every section maps each config to
    an entry whose ``files`` map each split to its path, sha256 and rows)."""
    if not isinstance(data, dict):
        return f"expected a JSON object, got {type(data).__name__}"
    for section in SECTIONS:
        configs = data.get(section, {})
        if not isinstance(configs, dict):
            return f"{section!r} is {type(configs).__name__}, expected an object of configs"
        for name, entry in configs.items():
            problem = _entry_problem(section, name, entry)
            if problem:
                return problem
    return None


@dataclass
class Manifest:
    """``manifest.json`` of a built directory plus what the last ``build`` call did to each config."""

    root: Path
    data: dict[str, Any]
    status: dict[str, str] = field(default_factory=dict)  # config -> built | cached | skipped: why

    @classmethod
    def read(cls, root: str | Path) -> Manifest:
        root = Path(root)
        path = root / MANIFEST
        data: dict[str, Any] = {}
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                data = None
            if not isinstance(data, dict):
                print(f"warning: {path} is unreadable; rebuilding what is asked", file=sys.stderr)
                data = {}
        if data.get("format_version") not in (None, FORMAT_VERSION):
            data = {}  # another layout: rebuild everything asked for
        for section in SECTIONS:  # a malformed entry is dropped (rebuilt when asked), the rest is kept
            configs = data.get(section)
            data[section] = configs if isinstance(configs, dict) else {}
            for name, entry in list(data[section].items()):
                problem = _entry_problem(section, name, entry)
                if problem:
                    print(f"warning: {path}: {problem}; that config counts as not built", file=sys.stderr)
                    del data[section][name]
        return cls(root, data)

    @property
    def tasks(self) -> dict[str, Any]:
        return self.data["tasks"]

    @property
    def extras(self) -> dict[str, Any]:
        return self.data["extras"]

    @property
    def scenarios(self) -> dict[str, Any]:
        return self.data["scenarios"]

    def configs(self) -> dict[str, Any]:
        """Every config name -> its entry (tasks, then extras, then scenarios)."""
        return {**self.tasks, **self.extras, **self.scenarios}

    def train_sizes(self) -> dict[str, int]:
        return {name: e["files"]["train"]["rows"] for name, e in self.tasks.items()}

    def fresh(self, entry: Mapping[str, Any] | None, key: str) -> bool:
        """True when ``entry`` was built with ``key`` and every file still has its recorded sha256."""
        if not entry or entry.get("key") != key:
            return False
        return all(_file_hash(str(self.root / f["path"])) == f["sha256"] for f in entry["files"].values())

    def write(self) -> None:
        """Write ``manifest.json`` atomically (the dataset card is written by ``drake.data.card.write_card``)."""
        atomic_write_json(self.root / MANIFEST, self.data)


def split_order(splits: Iterable[str]) -> list[str]:
    """train, test, then the rest in natural order (client_2 before client_10)."""

    def key(s: str) -> tuple[Any, ...]:
        return (s != "train", s != "test", *(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s)))

    return sorted(splits, key=key)
