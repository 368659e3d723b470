"""``drake pretrain``: pre-train the tiny zoo members on the public split (skipped when cached)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from drake.commands import table


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("pretrain", help="pre-train the tiny zoo models on the public split (cached)")
    p.add_argument(
        "--model", nargs="+", default=["all"], metavar="NAME", help="zoo members or 'all' (default)"
    )
    p.add_argument("--force", action="store_true", help="train again even when a cached folder exists")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: min(2, cores), the setting the recipes are budgeted for)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec or recipe field, e.g. --set text_hidden=512 --set steps=3000 "
        "(the result gets its own cache folder)",
    )
    p.add_argument(
        "--eval-every", type=int, default=0, metavar="N", help="also log held-out accuracy every N steps"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _parse_set(items: list[str]) -> dict[str, Any]:
    from drake.errors import SpecError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError(f"--set {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def run(args: argparse.Namespace) -> int:
    from drake.models.pretrain import cached_path, is_cached, pretrain, read_meta
    from drake.models.zoo import ZOO, get_spec

    names = sorted(ZOO) if args.model == ["all"] else [get_spec(n).name for n in args.model]
    overrides = _parse_set(args.set)
    threads = args.threads or min(2, os.cpu_count() or 1)
    rows = []
    for name in names:
        spec = get_spec(name).with_overrides(**overrides) if overrides else get_spec(name)
        cached = is_cached(cached_path(spec)) and not args.force
        path = pretrain(
            spec, force=args.force, threads=threads, progress=not args.quiet, eval_every=args.eval_every
        )
        meta = read_meta(path) or {}
        acc = meta.get("heldout_accuracy", {})
        rows.append(
            (
                name,
                f"{meta.get('parameters', {}).get('total', 0) / 1e6:.2f}M",
                f"{spec.text_layers} x {spec.text_hidden}",
                spec.recipe.steps,
                f"{meta.get('train_seconds', 0) / 60:.1f}",
                f"{acc.get('overall', float('nan')):.3f}",
                f"{acc.get('chance', float('nan')):.2f}",
                "cached" if cached else "trained",
                path,
            )
        )
    print(
        table(
            (
                "model",
                "params",
                "layers x hidden",
                "steps",
                "minutes",
                "held-out acc",
                "chance",
                "status",
                "folder",
            ),
            rows,
        )
    )
    return 0
