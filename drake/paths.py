"""Where DRAKE reads what it ships and writes what it caches, in a checkout and in an installed package.

What ships is package data inside ``drake/`` (tasks.yaml, scenarios/, the vocabulary, the zoo weights), so a
wheel carries it and nothing is read from the current directory. What is made on a machine (data builds,
re-trained zoo members, FedMosaic alignments) goes under one data root, ``drake_home()``:

- ``$DRAKE_HOME`` when set;
- ``<checkout>/.drake`` when the package runs from a source checkout (editable install or ``python eval.py``);
- else ``$XDG_CACHE_HOME/drake`` (default ``~/.cache/drake``): an installed package never writes into
  site-packages.
"""

from __future__ import annotations

import os
from pathlib import Path

#: the ``drake`` package folder: package data lives here, in a checkout and in site-packages alike
PACKAGE_DIR = Path(__file__).resolve().parent
#: the folder holding the package: a checkout's root, or site-packages for an installed wheel
REPO_ROOT = PACKAGE_DIR.parent


def in_checkout(root: Path | None = None) -> bool:
    """True when ``root`` (default: the folder above the package) is a DRAKE source checkout."""
    project = (root or REPO_ROOT) / "pyproject.toml"
    try:
        return project.is_file() and 'name = "drake-bench"' in project.read_text()
    except OSError:
        return False


def drake_home(root: Path | None = None) -> Path:
    """The data root: ``$DRAKE_HOME``, else ``<checkout>/.drake``, else ``$XDG_CACHE_HOME/drake``."""
    env = os.environ.get("DRAKE_HOME")
    if env:
        return Path(env).expanduser()
    root = root or REPO_ROOT
    if in_checkout(root):
        return root / ".drake"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "drake"
