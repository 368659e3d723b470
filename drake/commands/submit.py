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
    p.add_argument("--check", action="store_true",
                   help="run every check and store nothing: say whether each file would be accepted (or is on the "
                        "board already), e.g. to verify an accepted file or a reproduction of it")  # fmt: skip
    return p


def run(args: argparse.Namespace) -> int:
    from drake.errors import DrakeError
    from drake.spec import load_tasks
    from leaderboard.submit import DEFAULT_BOARD, submit, verify

    tasks = load_tasks(args.tasks_file)
    board = args.board or DEFAULT_BOARD
    failed = 0
    for path in args.results:
        options = dict(tasks=tasks, data_dir=args.data_dir, min_seeds=args.min_seeds, unofficial=args.unofficial)
        try:
            done = verify(path, board, **options) if args.check else submit(path, board, **options)
        except DrakeError as exc:  # one line per rejected file; the others are still tried
            print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
            failed += 1
            continue
        data = (f"data sha256 checked against {done.manifest_dir}" if done.manifest_dir
                else "data sha256 not checked: no local build with the run's data settings (use --data-dir)")  # fmt: skip
        if not args.check:
            print(f"accepted {path} -> {done.path} ({data})")
        elif done.on_board:
            print(f"valid: {path} is on the board as {done.name} ({data})")
        elif done.differences is None:
            print(f"valid: {path} would be accepted as {done.name} ({data}; nothing stored: --check)")
        elif not done.differences:
            print(f"valid: {path} reproduces {done.name}: every score, loss, relevance weight and byte count of "
                  f"the seeds both hold is equal ({data})")
        else:
            shown = "; ".join(done.differences[:3]) + (f"; +{len(done.differences) - 3} more" if len(done.differences) > 3 else "")
            n = len(done.differences)
            print(f"valid, but {path} does NOT reproduce {done.name} ({n} {'number differs' if n == 1 else 'numbers differ'}: {shown})")
    return 2 if failed else 0
