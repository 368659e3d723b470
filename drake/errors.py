"""Errors the CLI turns into one-line messages (exit code 2) instead of tracebacks."""

from __future__ import annotations

import contextlib
import difflib
import sysconfig
import traceback
from collections.abc import Iterable
from pathlib import Path


class DrakeError(Exception):
    """Base class for user-facing errors: the message says what, where and how to fix it."""


class SpecError(DrakeError):
    """A YAML spec (tasks.yaml, a scenario, a method config) is malformed."""


class UnknownNameError(DrakeError, KeyError):
    """A name (task, method, family, model, ...) is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(DrakeError):
    """Built data is missing, corrupted or inconsistent with its manifest."""


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return ' (did you mean X?)' for the closest candidate, or '' when nothing is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=3, cutoff=0.5)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


def where_raised(exc: BaseException) -> str:
    """``at path:line in function`` of the innermost frame of ``exc`` outside the standard library and installed
    packages (the user's or this project's code), for one-line error messages; path relative to the working
    directory when inside it."""
    frames = traceback.extract_tb(exc.__traceback__)
    stdlib = sysconfig.get_paths()["stdlib"]
    ours = [f for f in frames if not f.filename.startswith((stdlib, "<")) and "-packages" not in f.filename]
    frame = (ours or frames or [None])[-1]
    if frame is None:
        return ""
    path = Path(frame.filename)
    with contextlib.suppress(ValueError):
        path = path.resolve().relative_to(Path.cwd().resolve())
    return f"at {path}:{frame.lineno} in {frame.name}"
