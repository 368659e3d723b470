"""``drake submit RESULT.json ...``: verify results and add them to the leaderboard store (never edited after)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from drake.commands import add_board_arguments


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("submit", help="verify result files and add them to the leaderboard store")
    p.add_argument(
        "results", nargs="+", metavar="RESULT.json", help="result files written by eval.py / drake run"
    )
    add_board_arguments(p)
    p.add_argument("--data-dir", metavar="DIR",
                   help="built data to check the recorded data sha256 against (default: the default build for the "
                        "result's data settings, when it exists)")  # fmt: skip
    p.add_argument(
        "--unofficial", action="store_true", help="accept fewer seeds; the entry is shown as unofficial"
    )
    return p


def run(args: argparse.Namespace) -> int:
    from drake.errors import DrakeError
    from drake.spec import load_tasks
    from leaderboard.submit import DEFAULT_BOARD, submit

    tasks = load_tasks(args.tasks_file)
    board = args.board or DEFAULT_BOARD
    failed = 0
    for path in args.results:
        try:
            accepted = submit(path, board, tasks=tasks, data_dir=args.data_dir, min_seeds=args.min_seeds,
                              unofficial=args.unofficial)  # fmt: skip
        except DrakeError as exc:  # one line per rejected file; the others are still tried
            print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
            failed += 1
            continue
        data = (f"data sha256 checked against {accepted.manifest_dir}" if accepted.manifest_dir
                else "data sha256 not checked: no local build with the run's data settings (use --data-dir)")  # fmt: skip
        print(f"accepted {path} -> {accepted.path} ({data})")
    return 2 if failed else 0
