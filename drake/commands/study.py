"""``drake study``: every method x scenario x seed of the DRAKE-synth study, resumable, onto the leaderboard."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from drake.study import SCENARIOS

    p = subparsers.add_parser(
        "study", help="run the whole study (every method, both scenarios and the rank table, 3 seeds), resumable, onto the leaderboard"
    )
    p.add_argument("--methods", nargs="+", metavar="NAME",
                   help="only these entries of the plan (methods, or ablations such as fedmosaic+no-rela)")  # fmt: skip
    p.add_argument("--scenarios", nargs="+", metavar="NAME", default=list(SCENARIOS),
                   help=f"scenarios (default: {' '.join(SCENARIOS)})")  # fmt: skip
    p.add_argument("--seeds", nargs="+", type=int,
                   help="seeds of every run (default 0 1 2; with --sensitivity 0)")  # fmt: skip
    p.add_argument("--out", metavar="DIR", help="where runs write (default runs/study; with --sensitivity runs/sensitivity)")
    p.add_argument("--board", metavar="DIR", help="leaderboard directory (default: the repository's leaderboard/)")
    p.add_argument("--no-submit", action="store_true", help="run only; do not submit or rebuild the board")
    p.add_argument("--plan", action="store_true", help="print the plan (and what is done) and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("FedMosaic's sensitivity sweep (the paper's tau, EMA decay, rank, noise, lambda)")
    g.add_argument("--sensitivity", action="store_true",
                   help="run the sweep instead (drake-dynamic, one parameter at a time; results are copied to "
                        "leaderboard/sensitivity/, not submitted)")  # fmt: skip
    g.add_argument("--params", nargs="+", metavar="NAME", help="only these parameters of the sweep")
    g.add_argument("--report", metavar="FILE",
                   help="with --sensitivity: write the table into FILE's generated block and the plot beside it "
                        "(from leaderboard/sensitivity/ and the study's FedMosaic entry); --plan --report only "
                        "writes")  # fmt: skip
    return p


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from drake.errors import SpecError
    from drake.run_options import check_seeds
    from drake.study import SCENARIOS, SEEDS, default_plan, run_study
    from leaderboard.submit import DEFAULT_BOARD

    check_seeds(args.seeds or ())
    if args.sensitivity:
        if args.scenarios != list(SCENARIOS):
            raise SpecError("study: --scenarios does not apply to --sensitivity (the sweep runs on drake-dynamic)")
        if args.report and Path(args.report).is_dir():
            raise SpecError(f"--report {args.report}: is a directory; give the Markdown file to write the table into")
        return _sensitivity(args)
    if args.report or args.params:
        raise SpecError("study: --report and --params belong to --sensitivity")
    seeds = args.seeds or list(SEEDS)
    plan = default_plan(args.methods, args.scenarios)
    out = Path(args.out or "runs/study")
    board = None if args.no_submit else Path(args.board) if args.board else DEFAULT_BOARD
    if args.plan:
        _print_plan(plan, seeds, out, board)
        return 0
    return _outcome(run_study(plan, seeds, out, board=board, progress=not args.no_progress), out)


def _outcome(log: list[dict[str, Any]], out: Any) -> int:
    """0 when every run ran (or had run) and landed; else one line naming the others, and 1."""
    bad = [e["run"] for e in log if e["status"] == "failed" or str(e.get("board", "")).startswith("rejected")]
    if bad:
        print(f"error: {len(bad)} of {len(log)} runs failed or were rejected: {', '.join(bad)} "
              f"(why: {out}/study.jsonl and each run's error.txt)")  # fmt: skip
        return 1
    return 0


def _print_plan(plan: Any, seeds: list[int], out: Any, board: Any = None, kept: Any = None) -> None:
    from drake.commands import table
    from drake.study import has_result, result_path, seed_seconds

    per_seed = seed_seconds([p for p in (board and board / "results", kept) if p is not None])

    def status(run: Any) -> str:
        path = result_path(run, seeds, out)
        if path.is_file():
            return "done"
        if board is not None and has_result(board / "results", path.name, seeds):
            return "on the board"
        return "kept" if kept is not None and has_result(kept, path.name, seeds) else "to run"

    rows, todo, unknown = [], 0.0, 0
    for r in plan:
        state = status(r)
        seed = per_seed.get((r.method, r.scenario)) or per_seed.get((r.method, None), 0.0)
        guess = seed * len(seeds) if state == "to run" else 0.0
        todo, unknown = todo + guess, unknown + (state == "to run" and not guess)
        rows.append((r.key, r.method, r.config or " ".join(r.sets) or "-", state, _duration(guess) if guess else "-"))
    print(table(("entry", "method", "config", "status", "estimate"), rows) + f"\n{len(rows)} runs of seeds {seeds}")
    if todo:
        more = f" plus {unknown} runs of methods with no recorded time" if unknown else ""
        print(f"to run: about {_duration(todo)}{more} (each run: the median seed wall time of its method's results "
              "on the board, on its scenario where there are some, times the seeds; measured on the machines that "
              "made them)")
    if board is not None and not (board / "results").is_dir():
        print(f"note: board {board} has no results/ yet: nothing counts as on the board (the study's first submit "
              "creates it)")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


def _sensitivity(args: argparse.Namespace) -> int:
    """Run (or report) FedMosaic's sensitivity sweep."""
    from pathlib import Path

    from drake import sensitivity as S
    from drake.study import run_study

    seeds = args.seeds or list(S.SEEDS)
    plan = S.sensitivity_plan(args.params)
    out = Path(args.out or "runs/sensitivity")
    if args.plan:
        _print_plan(plan, seeds, out, kept=S.KEPT)
    else:
        if _outcome(run_study(plan, seeds, out, board=None, kept=S.KEPT, progress=not args.no_progress), out):
            return 1
    if args.report:
        print(S.write_report(Path(args.report), seeds))
    return 0
