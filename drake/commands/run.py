"""`drake run`: the same as `python eval.py` (run a method on a scenario, write a results file)."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from drake.run_options import add_run_arguments

    p = subparsers.add_parser("run", help="run a federated method on a scenario (same as eval.py)")
    add_run_arguments(p)
    return p


def run(args: argparse.Namespace) -> int:
    from drake.report import print_summary
    from drake.runner import check_method_and_scenario, run_from_args

    check_method_and_scenario(args.method, args.scenario)
    argv = sys.argv[2:] if len(sys.argv) > 1 and sys.argv[1] == "run" else sys.argv[1:]
    print_summary(run_from_args(args, argv))
    return 0
