"""``drake list tasks|methods|scenarios|families|models``: what is registered, without importing torch."""

from __future__ import annotations

import argparse
from typing import Any

from drake.commands import table

WHAT = ("tasks", "methods", "scenarios", "families", "models")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("list", help="list tasks, methods, scenarios, synth families or models")
    p.add_argument("what", choices=WHAT, help="what to list")
    p.add_argument("--tasks-file", metavar="PATH", help="tasks.yaml to read (default: the repository's)")
    p.add_argument("--groups", nargs="+", default=(), metavar="GROUP", help="only tasks in these groups")
    p.add_argument("--path", nargs="+", default=(), metavar="DIR",
                   help="models: also describe these model folders (save_pretrained output)")  # fmt: skip
    return p


def _tasks(args: argparse.Namespace) -> str:
    from drake.spec import load_tasks

    specs = load_tasks(args.tasks_file).select(groups=args.groups)
    rows = [(t.name, t.title, t.images, t.answer, t.metric, ",".join(t.groups)) for t in specs]
    return table(("name", "title", "images", "answer", "metric", "groups"), rows) + f"\n{len(rows)} tasks"


def _methods(args: argparse.Namespace) -> str:
    from drake.errors import DrakeError
    from drake.method_registry import METHODS

    rows = []
    for name in METHODS.names():
        try:
            summary = METHODS.summary(name)
        except DrakeError as exc:  # listing must not die on one broken method: show why instead
            summary = f"(cannot import: {exc})"
        rows.append((name, summary))
    return table(("method", "summary"), rows) + f"\n{len(rows)} methods"


def _scenarios(args: argparse.Namespace) -> str:
    from drake.spec import list_scenarios, load_scenario

    rows = []
    for name in list_scenarios():
        s = load_scenario(name)
        rows.append(
            (
                s.name,
                s.mode,
                s.rounds,
                len(s.clients),
                len(s.tasks),
                f"{s.pool} of {','.join(s.pools)}",
                s.description,
            )
        )
    header = ("scenario", "mode", "rounds", "clients", "tasks", "pool", "description")
    return table(header, rows) + f"\n{len(rows)} scenarios"


def _families(args: argparse.Namespace) -> str:
    import drake.data.synth.families  # noqa: F401  (registry lines only)
    from drake.data.synth.base import FAMILIES
    from drake.spec import load_tasks

    users: dict[str, list[str]] = {}
    for t in load_tasks(args.tasks_file).values():
        users.setdefault(t.sources["synth"].family or "", []).append(t.name)
    rows = [(n, FAMILIES.summary(n), ",".join(users.get(n, [])) or "-") for n in FAMILIES.names()]
    return table(("family", "summary", "tasks"), rows) + f"\n{len(rows)} families"


def _models(args: argparse.Namespace) -> str:
    from drake.models.catalog import describe_models

    rows = describe_models(extra=args.path)
    header = ("model", "kind", "params", "text", "layers x hidden", "held-out acc", "weights", "where")
    return table(header, [tuple(r.values()) for r in rows]) + f"\n{len(rows)} models"


def run(args: argparse.Namespace) -> int:
    listers = {"tasks": _tasks, "methods": _methods, "scenarios": _scenarios, "families": _families,
               "models": _models}  # fmt: skip
    print(listers[args.what](args))
    return 0
