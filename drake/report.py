"""The final table printed after a run (read back from the written result file, so it shows what was saved)."""

from __future__ import annotations

from pathlib import Path

from drake.commands import table
from drake.results import load_result


def _fmt(stat: dict | None) -> str:
    if not stat or stat.get("mean") is None:
        return "-"
    return f"{100 * stat['mean']:.1f} ± {100 * (stat.get('std') or 0.0):.1f}"


def print_summary(path: str | Path) -> None:
    record = load_result(path)
    info, res = record["run_info"], record["results"]
    summary = res["summary"]
    seeds = res["per_seed"]
    up = sum(s["comm_bytes"]["total_up"] for s in seeds) / len(seeds)
    down = sum(s["comm_bytes"]["total_down"] for s in seeds) / len(seeds)
    wall = sum(s["wall_seconds"] for s in seeds) / len(seeds)
    unseen = summary.get("unseen") or {}  # absent in records written before the Unseen summary
    rows = [
        [
            info["method"]["name"],
            f"{info['scenario']['name']} ({info['scenario']['pool']})",
            _fmt(summary["self"]["a_last"]),
            _fmt(summary["self"]["a_auc"]),
            _fmt(summary["others"]["a_last"]),
            _fmt(summary["others"]["a_auc"]),
            _fmt(unseen.get("zero_shot")),
            _fmt(unseen.get("adapted")),
            f"{up / 2**20:.2f} / {down / 2**20:.2f}",
            f"{wall:.0f}",
            str(summary["n_seeds"]),
        ]
    ]
    headers = ["method", "scenario", "Self A_last", "Self A_AUC", "Others A_last", "Others A_AUC",
               "Unseen 0-shot", "Unseen adapted", "MiB up/down", "wall s", "seeds"]  # fmt: skip
    print(table(headers, rows))
    protocol = info.get("protocol")
    if protocol:
        model = "its model after its own local training" if protocol["scored"] == "post-local" else "the server's model for it"
        tasks = "all its tasks" if protocol["all_tasks"] else "the tasks it has started"
        print(f"Protocol {protocol['name']}{' (modified)' if protocol['modified'] else ''}: each client scored on {model}; "
              f"Self on {tasks} at rounds {', '.join(map(str, protocol['self_rounds']))}; Others at rounds "
              f"{', '.join(map(str, protocol['others_rounds']))}")  # fmt: skip
    steps = sorted({a["steps"] for s in seeds for f in s["final"].values() for a in (f.get("unseen_adapted") or {}).values()})
    if steps:
        print(f"Unseen adapted: each client's scored model fine-tuned {'/'.join(map(str, steps))} steps per unseen task "
              "(the protocol's unseen_steps), the client's own state untouched")  # fmt: skip
    diagnostics = (seeds[0].get("extra") or {}).get("diagnostics")
    if diagnostics:
        print(gate_summary(record, seeds[0], diagnostics))
    print(f"result: {path}")


def gate_summary(record: dict, seed: dict, diagnostics: list) -> str:
    """The gate table of one seed (FedMosaic, APFL, FedDPA; Others per branch alone for the other dual-adapter
    methods), with the scored model's Others A_last beside each branch alone."""
    from drake.plots import gate_names, gate_table, has_branches, has_gate
    from drake.results import seed_summaries

    headers, rows = gate_table(diagnostics)
    per_client = seed_summaries(record)[int(seed["seed"])]["per_client"]
    for row in rows:
        others = (per_client.get(row[0]) or {}).get("others")
        row.append(f"{100 * others['a_last']:.1f}" if others else "-")
    what, scored = gate_names(diagnostics)
    title = f"{what[0].upper()}{what[1:]} of seed {seed['seed']} at round {diagnostics[-1]['round']}"
    title += " (beta: 100 = global branch only):" if has_gate(diagnostics) else ":"
    hint = "" if has_branches(diagnostics) else (
        "\nOthers with each branch alone: --set engine.diagnostic_passes=true (two more Others passes)")
    return title + "\n" + table([*headers, f"Others: {scored}"], rows) + hint
