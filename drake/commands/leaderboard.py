"""``drake leaderboard build``: render the leaderboard (md, csv, json, html + plots) from the accepted files."""

from __future__ import annotations

import argparse
from typing import Any

from drake.commands import add_board_arguments, existing_board


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("leaderboard", help="render the leaderboard from the accepted results")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = sub.add_parser(
        "build", help="verify the store and write leaderboard.md/.csv/.json, index.html and plots"
    )
    add_board_arguments(b)
    b.add_argument("--out", metavar="DIR", help="output directory (default: <board>/site)")
    b.add_argument("--readme", metavar="PATH", nargs="+",
                   help="also rewrite the generated results block of these files (README.md docs/results.md)")  # fmt: skip
    return p


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from drake.errors import DataError
    from drake.spec import load_tasks
    from leaderboard.build import build
    from leaderboard.readme import block_span

    board = existing_board(args.board)
    out = Path(args.out) if args.out else board / "site"
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out}: is a file; give a directory")
    for path in args.readme or ():
        if not Path(path).is_file():
            raise DataError(f"--readme {path}: file not found")
        block_span(Path(path).read_text(encoding="utf-8"), path)  # its markers, before anything is written
    tasks = load_tasks(args.tasks_file)
    written = build(board, out, tasks=tasks, min_seeds=args.min_seeds)
    plots = sum(1 for p in written if p.suffix == ".png")
    print(f"wrote {len(written) - plots} pages and {plots} plots -> {out} (open {out / 'index.html'})")
    if args.readme:
        from leaderboard.build import rank, verified_records
        from leaderboard.readme import sync_readme

        groups = rank(verified_records(board, tasks), args.min_seeds)
        for path in args.readme:
            changed = sync_readme(path, groups)
            print(f"{path}: results block {'rewritten' if changed else 'already up to date'}")
    return 0
