"""``drake leaderboard build``: render the leaderboard (md, csv, json, html + plots) from the accepted files."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("leaderboard", help="render the leaderboard from the accepted results")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = sub.add_parser(
        "build", help="verify the store and write leaderboard.md/.csv/.json, index.html and plots"
    )
    b.add_argument(
        "--board", metavar="DIR", help="leaderboard directory holding results/ (default: the repository's)"
    )
    b.add_argument("--out", metavar="DIR", help="output directory (default: <board>/site)")
    b.add_argument(
        "--min-seeds",
        type=int,
        default=3,
        metavar="N",
        help="successful seeds of an official entry (default 3)",
    )
    b.add_argument(
        "--tasks-file",
        metavar="PATH",
        help="tasks.yaml to check fingerprints against (default: the repository's)",
    )
    return p


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from drake.spec import load_tasks
    from leaderboard.build import build
    from leaderboard.submit import DEFAULT_BOARD

    board = Path(args.board) if args.board else DEFAULT_BOARD
    out = Path(args.out) if args.out else board / "site"
    written = build(board, out, tasks=load_tasks(args.tasks_file), min_seeds=args.min_seeds)
    plots = sum(1 for p in written if p.suffix == ".png")
    print(f"wrote {len(written) - plots} pages and {plots} plots -> {out} (open {out / 'index.html'})")
    return 0
