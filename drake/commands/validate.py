"""``drake validate``: cross-check tasks.yaml and the scenarios before anything is built or trained.

Checks what the loaders alone cannot: every task's family is registered and importable and yields one
valid row with its params, every metric is known, answer kinds match metrics, scenarios name only known
tasks (and never train on their unseen tasks), every pool model is a zoo member or a path/hub id, and every
registered method imports, carries its registered name and builds its default config.
Each problem is one ``error:`` line on stderr; the exit code is 2 when there is any.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from drake.commands import table

KNOWN_METRICS = ("choice_accuracy", "token_f1")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("validate", help="check tasks.yaml, families, metrics and scenarios")
    p.add_argument("--tasks-file", "--tasks", dest="tasks", metavar="PATH",
                   help="tasks.yaml to check (default: the repository's)")  # fmt: skip
    p.add_argument(
        "--scenario", nargs="+", default=None, metavar="NAME", help="scenarios to check (default: all)"
    )
    p.add_argument("--no-samples", action="store_true", help="skip drawing one sample per task")
    return p


def _metrics() -> set[str]:
    from drake.metrics import METRICS

    return set(KNOWN_METRICS) | set(METRICS.names())


def _check_tasks(tasks: Any, draw: bool) -> list[str]:
    import drake.data.synth.families  # noqa: F401
    from drake.data.generation import synth_rows
    from drake.data.synth.base import FAMILIES
    from drake.errors import DrakeError, did_you_mean

    problems, metrics = [], _metrics()
    for spec in tasks.values():
        where = f"{tasks.path}: task {spec.name!r}"
        family = spec.sources["synth"].family
        if family not in FAMILIES:
            problems.append(f"{where}: unknown synth family {family!r}{did_you_mean(family, FAMILIES)}")
        else:
            try:
                FAMILIES.get(family)
                if draw:
                    synth_rows(spec, "train", 1, seed=0, image_size=32)
            except DrakeError as exc:
                problems.append(f"{where}: {exc}")
        if spec.metric not in metrics:
            problems.append(f"{where}: unknown metric {spec.metric!r}{did_you_mean(spec.metric, metrics)}")
        elif spec.answer == "open" and spec.metric == "choice_accuracy":
            problems.append(f"{where}: an open task cannot use choice_accuracy (use token_f1)")
    return problems


def _model_known(name: str) -> bool:
    from pathlib import Path

    from drake.models.zoo import ZOO

    return name in ZOO or "/" in name or Path(name).exists()


def _check_scenarios(names: list[str], tasks: Any) -> tuple[list[str], list[tuple[Any, ...]]]:
    from drake.errors import DrakeError, did_you_mean
    from drake.models.zoo import ZOO
    from drake.spec import check_scenario_tasks, load_scenario

    problems, rows = [], []
    for name in names:
        try:
            s = load_scenario(name)
            check_scenario_tasks(s, tasks)
        except DrakeError as exc:
            problems.append(str(exc))
            continue
        trained = set(s.tasks)
        for t in s.unseen:
            if t in trained:
                problems.append(f"{s.path}: unseen task {t!r} is also trained by a client")
        for pool, models in s.pools.items():
            for m in dict.fromkeys(models):
                if not _model_known(m):
                    problems.append(f"{s.path}: pools.{pool}: unknown model {m!r}{did_you_mean(m, ZOO)}")
            counts = {m: models.count(m) for m in dict.fromkeys(models)}
            mark = "*" if pool == s.pool else ""
            rows.append((s.name, pool + mark, ", ".join(f"{m} x{c}" for m, c in counts.items())))
    return problems, rows


def _check_methods() -> list[str]:
    """Every registered method imports, carries its registered name and builds its default config (the lazy
    registry imports a method only when it runs, so `drake list methods` alone would not notice)."""
    from drake.config import build_config
    from drake.errors import DrakeError
    from drake.method_registry import METHODS

    problems = []
    for name in METHODS.names():
        try:
            cls = METHODS.get(name)
            where = f"method {name!r} config ({cls.config_cls.__name__})"
            build_config(cls.config_cls, {}, where=where).check(where)
        except DrakeError as exc:
            problems.append(str(exc))
    return problems


def run(args: argparse.Namespace) -> int:
    from drake.method_registry import METHODS
    from drake.spec import list_scenarios, load_tasks

    tasks = load_tasks(args.tasks)
    problems = _check_tasks(tasks, draw=not args.no_samples)
    names = args.scenario if args.scenario is not None else list_scenarios()
    scenario_problems, pool_rows = _check_scenarios(names, tasks)
    problems += scenario_problems
    problems += _check_methods()
    if pool_rows:
        print(table(("scenario", "pool (*default)", "models"), pool_rows))
    families = {t.sources["synth"].family for t in tasks.values()}
    for p in problems:
        print(f"error: {' '.join(p.split())}", file=sys.stderr)
    summary = f"{len(tasks)} tasks, {len(families)} families, {len(names)} scenarios, {len(METHODS)} methods"
    if problems:
        print(f"{len(problems)} problem(s) in {summary}", file=sys.stderr)
        return 2
    print(f"ok: {summary}")
    return 0
