"""``drake study``: every method x scenario x seed of the DRAKE-synth study, resumable, onto the leaderboard."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from drake.study import SCENARIOS, SEEDS

    p = subparsers.add_parser(
        "study", help="run the whole study (every method, both scenarios, 3 seeds), resumable, onto the leaderboard"
    )
    p.add_argument("--methods", nargs="+", metavar="NAME",
                   help="only these entries of the plan (methods, or ablations such as fedmosaic+no-rela)")  # fmt: skip
    p.add_argument("--scenarios", nargs="+", metavar="NAME", default=list(SCENARIOS),
                   help=f"scenarios (default: {' '.join(SCENARIOS)})")  # fmt: skip
    p.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS), help="seeds of every run (default 0 1 2)")
    p.add_argument("--out", default="runs/study", metavar="DIR", help="where runs write (default runs/study)")
    p.add_argument("--board", metavar="DIR", help="leaderboard directory (default: the repository's leaderboard/)")
    p.add_argument("--no-submit", action="store_true", help="run only; do not submit or rebuild the board")
    p.add_argument("--plan", action="store_true", help="print the plan (and what is done) and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from drake.commands import table
    from drake.study import default_plan, result_path, run_study
    from leaderboard.submit import DEFAULT_BOARD

    plan = default_plan(args.methods, args.scenarios)
    out = Path(args.out)
    if args.plan:
        rows = [(r.key, r.method, r.config or "-", "done" if result_path(r, args.seeds, out).is_file() else "to run")
                for r in plan]  # fmt: skip
        print(table(("entry", "method", "config", "status"), rows) + f"\n{len(rows)} runs of seeds {args.seeds}")
        return 0
    board = None if args.no_submit else Path(args.board) if args.board else DEFAULT_BOARD
    run_study(plan, args.seeds, out, board=board, progress=not args.no_progress)
    return 0
