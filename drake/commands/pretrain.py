"""``drake pretrain``: pre-train the tiny zoo members on the public split (skipped when cached)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from drake.commands import table


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "pretrain",
        help="re-run the zoo's recipe into the cache (the shipped weights are never replaced; --compare)",
    )
    p.add_argument(
        "--model", nargs="+", default=["all"], metavar="NAME", help="zoo members or 'all' (default)"
    )
    p.add_argument("--force", action="store_true", help="train again even when a cached folder exists")
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        metavar="N",
        help="members trained at once, one torch thread each (default: one per CPU core)",
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
    p.add_argument(
        "--compare",
        action="store_true",
        help="also print the fresh members' held-out accuracy beside the shipped (canonical) zoo's",
    )
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
    from drake.errors import SpecError
    from drake.models.folders import cached_path, is_cached, read_meta
    from drake.models.pretrain import pretrain_many
    from drake.models.zoo import ZOO, get_spec

    if args.jobs is not None and args.jobs < 1:
        raise SpecError(f"--jobs {args.jobs}: expected 1 or more")
    names = sorted(ZOO) if args.model == ["all"] else [get_spec(n).name for n in args.model]
    overrides = _parse_set(args.set)
    specs = [get_spec(n).with_overrides(**overrides) if overrides else get_spec(n) for n in names]
    cached = {s.name: is_cached(cached_path(s)) and not args.force for s in specs}
    paths = pretrain_many(
        specs, jobs=args.jobs, force=args.force, progress=not args.quiet, eval_every=args.eval_every
    )
    towers = {cached_path(s.tower): s.tower for s in specs if s.tower is not None}
    rows = []
    for spec in [*towers.values(), *specs]:
        name, path = spec.name, paths.get(spec.name) or cached_path(spec)
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
                "shared tower" if name not in cached else "cached" if cached[name] else "trained",
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
    if args.compare:
        print()
        print(compare_table([*towers.values(), *specs], paths))
    return 0


def compare_table(specs: list[Any], paths: dict[str, Any]) -> str:
    """Fresh (cache) against shipped held-out accuracy, member by member; the shipped side is read from the
    manifest, not recomputed."""
    from drake.models.folders import cached_path, read_meta
    from drake.models.zoo_manifest import file_sha256, member_entry, read_manifest

    version = read_manifest()["zoo_version"]
    rows = []
    for spec in specs:
        path = paths.get(spec.name) or cached_path(spec)
        fresh = (read_meta(path) or {}).get("heldout_accuracy", {}).get("overall")
        entry = member_entry(spec.name)
        shipped = (entry or {}).get("heldout_accuracy", {}).get("overall")
        diff = f"{fresh - shipped:+.3f}" if fresh is not None and shipped is not None else "-"
        same_recipe = "-" if entry is None else "yes" if entry.get("cache_key") == path.name.rsplit("-", 1)[-1] else "no"
        weights = path / "model.safetensors"
        same_bytes = "-" if entry is None or not weights.is_file() else "yes" if file_sha256(weights) == entry["sha256"] else "no"
        rows.append((spec.name, _acc(fresh), _acc(shipped), diff, same_recipe, same_bytes))
    head = ("model", "fresh held-out", f"shipped (zoo {version})", "fresh - shipped", "same recipe", "same bytes")
    return table(head, rows)


def _acc(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"
