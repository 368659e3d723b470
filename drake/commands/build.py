"""``drake build``: generate the tasks (plus the public/easy_vqa extras and scenario streams) as parquet configs.

With ``--source drake --from DIR`` the same configs are converted from the real SNUMPR/DRAKE release instead.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from drake.commands import positive_int, table


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("build", help="build the DRAKE data (parquet + README configs + manifest)")
    p.add_argument("--tasks", nargs="+", default=[], metavar="NAME", help="tasks to build (default: all)")
    p.add_argument(
        "--groups", nargs="+", default=[], metavar="GROUP", help="also build every task in these groups"
    )
    p.add_argument(
        "--scenario",
        nargs="+",
        default=[],
        metavar="NAME",
        help="add these scenarios' client streams (and build their tasks)",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="output dir (default: <data root>/data/drake-synth-s<scale>-px<size>-seed<seed>, or "
        "<data root>/data/drake-real for --source drake; data root: $DRAKE_HOME, else <checkout>/.drake, "
        "else ~/.cache/drake)",
    )
    p.add_argument("--scale", type=float, default=1.0, help="rows per split = 300/100 x scale (default 1)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument(
        "--image-size", type=int, default=32, metavar="PX", help="image side in pixels (default 32)"
    )
    p.add_argument(
        "--source", choices=("synth", "drake"), default="synth", help="synth (embedded) or drake (real)"
    )
    p.add_argument(
        "--from",
        dest="from_dir",
        metavar="DIR",
        help="folder the SNUMPR/DRAKE <Dataset>.tar files were downloaded and untarred in (--source drake)",
    )
    p.add_argument("--tasks-file", metavar="PATH", help="tasks.yaml to read (default: the repository's)")
    p.add_argument("--no-extras", action="store_true", help="skip the public and easy_vqa configs")
    p.add_argument("--workers", type=positive_int, default=None, help="worker processes (default: one per core)")
    p.add_argument("--force", action="store_true", help="rebuild even what is up to date")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _select(args: argparse.Namespace) -> tuple[list[Any], list[Any]]:
    """The task specs and scenarios the arguments ask for."""
    from drake.spec import load_scenario, load_tasks

    table_ = load_tasks(args.tasks_file)
    scenarios = [load_scenario(name, tasks=table_) for name in args.scenario]
    # no filter: every task; only --scenario: just the tasks its streams and unseen evaluation need
    specs = table_.select(args.tasks, args.groups) if (args.tasks or args.groups or not scenarios) else []
    for s in scenarios:
        specs += [table_[t] for t in (*s.tasks, *s.unseen) if t not in {x.name for x in specs}]
    return specs, scenarios


def _run_drake(args: argparse.Namespace) -> int:
    """Convert the real release (``--from DIR``) task by task; warnings go to stderr, the table to stdout."""
    from drake.data.sources.drake_release import HUB_REPO, convert_release, default_release_dir
    from drake.errors import DataError

    if not args.from_dir:
        raise DataError(
            "--source drake needs --from DIR, the folder holding the untarred release: download each "
            f"dataset with `huggingface-cli download {HUB_REPO} <Dataset>.tar --repo-type dataset --local-dir DIR` "
            "and untar it there (`tar -xf DIR/<Dataset>.tar -C DIR`)"
        )
    specs, scenarios = _select(args)
    out = args.out or default_release_dir()
    t0 = time.perf_counter()
    manifest = convert_release(
        specs, args.from_dir, out, scenarios=scenarios, seed=args.seed, force=args.force,
        progress=not args.quiet,
    )  # fmt: skip
    elapsed = time.perf_counter() - t0
    rows = []
    for spec in specs:
        entry = manifest.tasks[spec.name]
        if manifest.status.get(spec.name) == "built":
            for line in entry.get("warnings", []):
                print(f"warning: {line}", file=sys.stderr)
        files = entry["files"]
        source = f"{entry['dataset']}/{entry['subset']}"
        status = manifest.status.get(spec.name, "")
        rows.append((spec.name, source, spec.answer, files["train"]["rows"], files["test"]["rows"], status))
    for s in scenarios:
        files = manifest.scenarios[s.name]["files"]
        total = sum(f["rows"] for f in files.values())
        rows.append((s.name, "-", "stream", total, f"({len(files)} clients)", manifest.status[s.name]))
    print(table(("config", "source", "answer", "train", "test", "status"), rows))
    built = sum(1 for s in manifest.status.values() if s == "built")
    print(f"{built} converted, {len(manifest.status) - built} up to date in {elapsed:.1f}s -> {out}")
    return 0


def run(args: argparse.Namespace) -> int:
    from drake.data.build import build, default_data_dir
    from drake.errors import DataError

    if args.source == "drake":
        return _run_drake(args)
    if args.from_dir:
        raise DataError("--from DIR only applies to --source drake")
    specs, scenarios = _select(args)
    out = args.out or default_data_dir(args.scale, args.image_size, args.seed)
    t0 = time.perf_counter()
    manifest = build(
        specs,
        out,
        scale=args.scale,
        seed=args.seed,
        image_size=args.image_size,
        scenarios=scenarios,
        extras=not args.no_extras,
        progress=not args.quiet,
        workers=args.workers,
        force=args.force,
    )
    elapsed = time.perf_counter() - t0
    rows = []
    for spec in specs:
        files = manifest.tasks[spec.name]["files"]
        rows.append(
            (
                spec.name,
                spec.images,
                spec.answer,
                files["train"]["rows"],
                files["test"]["rows"],
                manifest.status.get(spec.name, ""),
            )
        )
    for name, entry in manifest.extras.items():
        if name in manifest.status:
            files = entry["files"]
            rows.append(
                (name, "-", "extra", files["train"]["rows"], files["test"]["rows"], manifest.status[name])
            )
    for s in scenarios:
        files = manifest.scenarios[s.name]["files"]
        total = sum(f["rows"] for f in files.values())
        rows.append((s.name, "-", "stream", total, f"({len(files)} clients)", manifest.status[s.name]))
    rows += [(n, "-", "extra", "-", "-", s) for n, s in manifest.status.items() if s.startswith("skipped")]
    print(table(("config", "images", "answer", "train", "test", "status"), rows))
    counts = {
        k: sum(1 for s in manifest.status.values() if s.startswith(k)) for k in ("built", "cached", "skipped")
    }
    print(
        f"{counts['built']} built, {counts['cached']} up to date, {counts['skipped']} skipped in {elapsed:.1f}s -> {out}"
    )
    return 0
