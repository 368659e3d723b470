"""Subcommands of the ``drake`` CLI (one module each; see drake/cli.py) and their shared helpers."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain aligned text table (no dependency, readable in logs and CI output)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def positive_int(text: str) -> int:
    """An argparse type: a whole number of 1 or more (a bad one is argparse's one-line usage error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {value}")
    return value


def existing_board(board: str | None) -> Path:
    """``--board`` (default: the repository's) after checking it holds a results/ folder to read."""
    from drake.errors import DataError
    from leaderboard.submit import DEFAULT_BOARD

    path = Path(board) if board else DEFAULT_BOARD
    if not (path / "results").is_dir():
        raise DataError(f"--board {path}: no results/ folder of accepted files there; give a leaderboard directory "
                        "(`drake submit --board DIR` creates one)")  # fmt: skip
    return path


def add_board_arguments(p: argparse.ArgumentParser, *, tasks_file: bool = True) -> None:
    """The options every leaderboard command shares (submit, leaderboard build, push)."""
    p.add_argument("--board", metavar="DIR", help="leaderboard directory holding results/ (default: the repository's)")
    p.add_argument("--min-seeds", type=positive_int, default=3, metavar="N",
                   help="successful seeds an official entry needs (default 3)")  # fmt: skip
    if tasks_file:
        p.add_argument("--tasks-file", metavar="PATH",
                       help="tasks.yaml to check fingerprints against (default: the repository's)")  # fmt: skip
