#!/usr/bin/env python
"""Run a federated method on a DRAKE scenario and write a results file (same as `drake run`).

    python eval.py --method fedavg --scenario drake-dynamic --seeds 0 1 2 --out runs/

Steps, top to bottom: parse arguments -> load tasks.yaml and the scenario -> build DRAKE-synth if missing ->
load one frozen base model per architecture -> run the method with the engine for each seed -> write a
versioned JSON result plus plots -> print a summary table.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from drake.cli import OneLineErrorParser, add_debug_argument, guarded, run_phase, wants_debug
    from drake.run_options import add_run_arguments

    parser = OneLineErrorParser(prog="eval.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    add_debug_argument(parser)  # an unexpected error: the full traceback, not one line
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed as one line)
        return exc.code if isinstance(exc.code, int) else 2

    def _run() -> int:
        from drake.report import print_summary
        from drake.runner import check_method_and_scenario, run_from_args

        check_method_and_scenario(args.method, args.scenario)
        path = run_from_args(args, argv if argv is not None else sys.argv[1:])
        print_summary(path)
        return 0

    return guarded(_run, phase=run_phase(args.method, args.scenario), debug=wants_debug(args))


if __name__ == "__main__":
    sys.exit(main())
