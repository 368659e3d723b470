"""``drake audit``: check DRAKE-synth for answer bias, answer leaks, train/test overlap and nondeterminism.

Generates the tasks in memory (as ``drake build`` would, nothing is written) and prints one row per task with
pass/FAIL per check, then the reason of every failure. Exit code 1 when any check fails.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from drake.commands import positive_int, table


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "audit", help="check the synth tasks: answer balance, no answer leak, disjoint splits, determinism"
    )
    p.add_argument("--tasks", nargs="+", default=[], metavar="NAME", help="tasks to audit (default: all)")
    p.add_argument(
        "--groups", nargs="+", default=[], metavar="GROUP", help="also audit every task in these groups"
    )
    p.add_argument("--scale", type=float, default=1.0, help="rows per split = 300/100 x scale (default 1)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument(
        "--image-size", type=int, default=32, metavar="PX", help="image side in pixels (default 32)"
    )
    p.add_argument("--tolerance", type=float, default=None, metavar="FRAC",
                   help="largest answer share off uniform (default 0.05)")  # fmt: skip
    p.add_argument(
        "--no-public", action="store_true", help="skip the check against the public pre-training split"
    )
    p.add_argument("--no-determinism", action="store_true", help="skip generating everything a second time")
    p.add_argument("--workers", type=positive_int, default=None, help="worker processes (default: one per core)")
    p.add_argument("--tasks-file", metavar="PATH", help="tasks.yaml to read (default: the repository's)")
    p.add_argument("--json", action="store_true", help="print the full report as JSON instead of a table")
    return p


def run(args: argparse.Namespace) -> int:
    from drake.data.audit import CHECKS, TOLERANCE, audit_tasks
    from drake.data.generation import split_sizes
    from drake.errors import DataError
    from drake.spec import load_tasks

    if args.image_size < 8:
        raise DataError(f"--image-size must be >= 8 pixels, got {args.image_size}")
    split_sizes(args.scale)  # rejects --scale <= 0 with one line before anything is generated
    if args.tolerance is not None and not 0 <= args.tolerance < 1:
        raise DataError(f"--tolerance {args.tolerance}: expected a fraction in [0, 1) (default {TOLERANCE})")
    specs = load_tasks(args.tasks_file).select(args.tasks, args.groups)
    report = audit_tasks(
        specs,
        scale=args.scale,
        seed=args.seed,
        image_size=args.image_size,
        public=not args.no_public,
        determinism=not args.no_determinism,
        tolerance=TOLERANCE if args.tolerance is None else args.tolerance,
        workers=args.workers,
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0 if report.ok else 1
    checks = [c for c in CHECKS if any(c in t.findings for t in report.tasks)]
    rows = [
        (
            t.task,
            "/".join(str(t.sizes.get(s, "-")) for s in ("train", "test")),
            *("pass" if t.findings[c].ok else "FAIL" for c in checks),
        )
        for t in report.tasks
    ]
    print(table(("task", "train/test", *checks), rows))
    failures = report.failures()
    for task, f in failures:
        print(f"FAIL {task} {f.check}: {f.detail}")
    print(
        f"{sum(t.ok for t in report.tasks)}/{len(report.tasks)} tasks pass every check "
        f"(scale {args.scale:g}, seed {args.seed}); {len(failures)} failures"
    )
    return 0 if report.ok else 1
