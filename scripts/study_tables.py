#!/usr/bin/env python
"""The evidence tables of docs/results.md, printed from the accepted result files (leaderboard/results).

    python scripts/study_tables.py --scenario drake-dynamic --methods fedavg fedmosaic
    python scripts/study_tables.py --files leaderboard/sensitivity/*.json   # the FedMosaic sweep's points
    python scripts/study_tables.py --across drake-dynamic drake-static      # every method on both scenarios

Per method: Self/Others A_last per client (mean over seeds), and for FedMosaic the gate (beta on own vs other
clients' prompts at the last Others round, Others with each branch alone) and the relevance it put on clients
of the same related-task group (the scenario file's comment: clients 0-2, 3-5, 6-9) vs the others and how fast
its weights move when the clients switch tasks; the training
loss at each task's end; and Self at the last round on each client's current task vs its earlier ones.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from drake.commands import table
from drake.plots import task_switches
from drake.results import load_result, seed_summaries
from drake.spec import REPO_ROOT
from leaderboard.build import method_label

GROUPS = ((0, 1, 2), (3, 4, 5), (6, 7, 8, 9))  # drake-dynamic/static: related tasks on nearby clients


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else math.nan


def records(board: Path, scenario: str, methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted((board / "results").glob("*.json")):
        record = load_result(path)
        info = record["run_info"]
        name = method_label(info)  # an ablation as fedmosaic+no-rela
        if info["scenario"]["name"] == scenario and name in methods and (info.get("protocol") or {}).get("name") == "official":
            out[f"{name} ({path.name})"] = record
    return out


def label(record: dict[str, Any], path: Path) -> str:
    """A result file's method label, with the FedMosaic settings it moved from their defaults (a sweep point)."""
    from drake.sensitivity import defaults

    info = record["run_info"]
    config = info["method"]["config"]
    moved = [f"{k}={config[k]:g}" for k, v in defaults().items() if info["method"]["name"] == "fedmosaic" and config.get(k) != v]
    return f"{method_label(info)}{'+' + ','.join(moved) if moved else ''} ({path.name})"


def per_client(record: dict[str, Any]) -> list[list[str]]:
    summaries = list(seed_summaries(record).values())
    clients = sorted({c for s in summaries for c in s["per_client"]}, key=int)
    rows = []
    for c in clients:
        cells = [c]
        for target in ("self", "others"):
            vals = [s["per_client"][c][target]["a_last"] for s in summaries if (s["per_client"].get(c) or {}).get(target)]
            cells.append(f"{100 * _mean(vals):.1f}")
        rows.append(cells)
    return rows


def gate(record: dict[str, Any]) -> list[list[str]]:
    seeds = [s for s in record["results"]["per_seed"] if (s.get("extra") or {}).get("diagnostics")]
    if not seeds:
        return []
    clients = sorted(seeds[0]["extra"]["diagnostics"][-1]["clients"], key=int)
    rows = []
    for c in clients:
        last = [s["extra"]["diagnostics"][-1]["clients"][c] for s in seeds]
        own = _mean([d["beta_own"] for d in last if d.get("beta_own") is not None])
        oth = _mean([d["beta_others"] for d in last if d.get("beta_others") is not None])
        glob = _mean([d["others_by_branch"]["global"] for d in last if d.get("others_by_branch")])
        loc = _mean([d["others_by_branch"]["local"] for d in last if d.get("others_by_branch")])
        rows.append([c, *("-" if math.isnan(v) else f"{100 * v:.1f}" for v in (own, oth, glob, loc))])
    return rows


def relevance(record: dict[str, Any]) -> str | None:
    """Mean relevance weight on clients of the same group vs other groups, last round, over seeds."""
    same, other = [], []
    for s in record["results"]["per_seed"]:
        rel = s.get("relevance")
        if not rel:
            continue
        ids, matrix = rel[-1]["clients"], rel[-1]["matrix"]
        group = {c: g for g, members in enumerate(GROUPS) for c in members}
        for i, ci in enumerate(ids):
            for j, cj in enumerate(ids):
                if i != j:
                    (same if group.get(ci) == group.get(cj) else other).append(matrix[i][j])
    if not same:
        return None
    return f"relevance weight per client pair at the last round: same group {_mean(same):.3f}, other groups {_mean(other):.3f}"


def relevance_tracking(record: dict[str, Any]) -> str | None:
    """How far a client's relevance weights move from one round to the next (L1, mean over clients, rounds and
    seeds), at the first round of a new task vs the other rounds: how fast RELA follows a task switch."""
    logged = [s["relevance"] for s in record["results"]["per_seed"] if s.get("relevance")]
    switches = set(task_switches(record)) if logged else set()
    at_switch, between = [], []
    for rel in logged:
        for a, b in zip(rel, rel[1:]):
            change = _mean([math.fsum(abs(x - y) for x, y in zip(ra, rb)) for ra, rb in zip(a["matrix"], b["matrix"])])
            (at_switch if b["round"] - 1 in switches else between).append(change)  # b: first round of a new task
    if not at_switch:
        return None
    return (f"relevance weights' change from the round before (L1 per client): at task switches {_mean(at_switch):.3f}, "
            f"other rounds {_mean(between):.3f}")  # fmt: skip


def task_end_losses(record: dict[str, Any]) -> str | None:
    """Training loss (mean over clients, then seeds) at the last round of each task; every 5th round of a
    static scenario."""
    seeds = [s for s in record["results"]["per_seed"] if s.get("status") == "success" and s.get("rounds")]
    if not seeds:
        return None
    by_round = [{int(rd["round"]): rd.get("train") or {} for rd in s["rounds"]} for s in seeds]
    last = max(by_round[0])
    switches = task_switches(record)
    ends = [*switches, last] if switches else list(range(5, last + 1, 5))
    cells = []
    for r in ends:
        per_seed = [_mean([c["loss"] for c in rounds[r].values()]) for rounds in by_round if rounds.get(r)]
        cells.append(f"round {r} {_mean(per_seed):.2f}")
    return "training loss at the end of each task (mean over clients, then seeds): " + ", ".join(cells)


def current_vs_earlier(record: dict[str, Any]) -> str | None:
    """Self at the last round on each client's current task vs its earlier tasks (mean over clients' tasks,
    then seeds): whether a method forgets; dynamic scenarios only (the clients' stages in the stored spec)."""
    spec = record["run_info"]["scenario"].get("spec") or {}
    stages = {str(c["id"]): [t for st in c.get("stages") or () for t in st["tasks"][:1]] for c in spec.get("clients") or ()}
    if spec.get("mode") != "dynamic" or not stages:
        return None
    current, earlier = [], []
    for s in record["results"]["per_seed"]:
        last = next((e for e in reversed(s.get("rounds") or []) if e.get("eval")), None)
        if last is None:
            continue
        cur = [last["eval"][c][tasks[-1]] for c, tasks in stages.items() if c in last["eval"]]
        old = [last["eval"][c][t] for c, tasks in stages.items() if c in last["eval"] for t in tasks[:-1]]
        current.append(_mean(cur))
        earlier.append(_mean(old))
    if not current:
        return None
    return (f"Self at the last round: current task {100 * _mean(current):.1f}, "
            f"earlier own tasks {100 * _mean(earlier):.1f} (mean over seeds)")  # fmt: skip


def across(board: Path, scenarios: Sequence[str]) -> list[list[str]]:
    """Self and Others A_last (mean ± std over seeds, %) of every method on each of ``scenarios`` (official
    protocol), with the change from the first scenario to the others: methods on all of them only."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for path in sorted((board / "results").glob("*.json")):
        record = load_result(path)
        info = record["run_info"]
        if info["scenario"]["name"] in scenarios and (info.get("protocol") or {}).get("name") == "official":
            found.setdefault(method_label(info), {})[info["scenario"]["name"]] = record["results"]["summary"]
    rows = []
    for name, by in sorted(found.items(), key=lambda kv: -kv[1].get(scenarios[0], {}).get("self", {}).get("a_last", {}).get("mean", 0)):
        if set(by) != set(scenarios):
            continue
        cells = [name]
        for target in ("self", "others"):
            base = by[scenarios[0]][target]["a_last"]
            cells.append(f"{100 * base['mean']:.1f} ± {100 * base['std']:.1f}")
            for other in scenarios[1:]:
                stat = by[other][target]["a_last"]
                cells += [f"{100 * stat['mean']:.1f} ± {100 * stat['std']:.1f}", f"{100 * (stat['mean'] - base['mean']):+.1f}"]
        rows.append(cells)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default="drake-dynamic", help="scenario name (default drake-dynamic)")
    p.add_argument("--methods", nargs="+", default=["fedavg", "fedmosaic"], help="methods to show")
    p.add_argument("--board", default=str(REPO_ROOT / "leaderboard"), help="leaderboard directory")
    p.add_argument("--files", nargs="+", type=Path, help="these result files instead of the board's (e.g. the sweep's)")
    p.add_argument("--seeds", nargs="+", type=int, help="only these seeds (e.g. 0, beside the sweep's one-seed points)")
    p.add_argument("--across", nargs="+", metavar="SCENARIO",
                   help="instead: Self/Others A_last of every method on these scenarios side by side "
                        "(e.g. drake-dynamic drake-static)")  # fmt: skip
    args = p.parse_args(argv)
    if args.across:
        first, rest = args.across[0], args.across[1:]
        heads = ["method"]
        for target in ("Self", "Others"):
            heads += [f"{target} {first}", *(h for s in rest for h in (f"{target} {s}", "change"))]
        print(table(heads, across(Path(args.board), args.across)))
        return 0
    if args.files:
        chosen = {label(record, path): record for path, record in ((p, load_result(p)) for p in args.files)}
    else:
        chosen = records(Path(args.board), args.scenario, args.methods)
    for record in chosen.values():
        if args.seeds:
            record["results"]["per_seed"] = [s for s in record["results"]["per_seed"] if s["seed"] in args.seeds]
    for name, record in chosen.items():
        print(f"\n## {name}: per client, A_last (%), mean over {len(seed_summaries(record))} seeds")
        print(table(("client", "Self", "Others"), per_client(record)))
        rows = gate(record)
        if rows:
            print("\nGate at the last Others round (beta x 100: 100 = global branch only), Others (%) per branch:")
            print(table(("client", "beta own", "beta others", "Others global only", "Others local only"), rows))
        for line in (relevance(record), relevance_tracking(record), task_end_losses(record), current_vs_earlier(record)):
            if line:
                print("\n" + line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
