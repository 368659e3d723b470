"""FedMosaic cost benchmark (not a timed test): wall ratio to Local and payload ratio to full-LoRA FedAvg.

Runs ``local`` and ``fedmosaic`` through the real engine on one scenario's clients, tasks and model pool
(same local steps, batches and seeds), alternating the two methods ``--repeats`` times, and prints in one run:

- FedMosaic / Local wall ratio of the training phase (median over repeats; the one-off A/B alignment and
  W_s loading happen in a warm-up run first and are reported separately). Goal <= 1.10, paper 1.09.
- PQ payload bytes / full-LoRA FedAvg bytes per client and round (goal <= 1/50), next to the gradient
  sketch and the LoRA part that FedMosaic also exchanges within an architecture.

    python benchmarks/fedmosaic_bench.py                             # drake-dynamic hetero pool, 2 rounds
    python benchmarks/fedmosaic_bench.py --scenario smoke --pool cross --steps 40 --repeats 3

Models are the zoo members' configs with random weights unless ``--pretrained`` (cost does not depend on
the weights). Timings depend on the machine's load: the load average is printed next to them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def scenario_file(name: str, pool: str | None, rounds: int, folder: Path, pretrained: bool) -> Path:
    """A static copy of scenario ``name``: ``rounds`` rounds, no unseen tasks, (untrained) model folders."""
    import yaml

    from drake.models.zoo import build_model
    from drake.spec import load_scenario, scenario_path

    raw = yaml.safe_load(scenario_path(name).read_text())
    spec = load_scenario(name, pool=pool)
    models = [c.model for c in sorted(spec.clients, key=lambda c: c.id)]
    if not pretrained:
        for m in dict.fromkeys(models):
            path = folder / m
            if not (path / "config.json").is_file():
                model, processor = build_model(m, seed=0)
                model.save_pretrained(path)
                processor.save_pretrained(path)
        models = [str(folder / m) for m in models]
    # static mode: every client's tasks pooled, so any number of rounds keeps its full task mix
    raw.pop("rounds_per_task", None)
    raw.update(name=f"{spec.name}-bench", mode="static", rounds=rounds, pools={"bench": models}, pool="bench",
               unseen=[], eval_rounds=[rounds])  # fmt: skip
    out = folder / f"{spec.name}-bench.yaml"
    out.write_text(yaml.safe_dump(raw))
    return out


def run(method: str, scenario: Path, out: Path, sets: list[str], scale: float) -> tuple[dict[str, Any], Any]:
    from drake.runner import add_run_arguments, make_engine, plan_from_args

    p = argparse.ArgumentParser()
    add_run_arguments(p)
    argv = ["--method", method, "--scenario", str(scenario), "--out", str(out), "--scale", str(scale), "--no-progress",
            "--engine", "sequential", "--set", "engine.self_limit=1", "--set", "engine.others_limit=1",
            "--set", "engine.eval_others=false"]
    for s in sets:
        argv += ["--set", s]
    plan = plan_from_args(p.parse_args(argv))
    engine, m = make_engine(plan, 0, None)
    raw = engine.run(m, plan.scenario, seed=0)
    return raw, engine


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="drake-dynamic", help="scenario name (drake list scenarios)")
    ap.add_argument("--pool", default=None, help="model pool (default: the scenario's)")
    ap.add_argument("--rounds", type=int, default=2, help="FL rounds per timed run")
    ap.add_argument("--steps", type=int, default=20, help="local steps per round (the harness default)")
    ap.add_argument("--batch-size", type=int, default=8, help="examples per step")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per method, alternating (the median ratio is reported)")
    ap.add_argument("--scale", type=float, default=0.1, help="DRAKE-synth size (rows per task x 300)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 = stable timings on a shared CPU)")
    ap.add_argument("--pretrained", action="store_true", help="use the pre-trained zoo members")
    ap.add_argument("--set", action="append", default=[], help="extra fedmosaic setting key=value")
    args = ap.parse_args()

    import torch

    from drake.fl.types import nbytes
    from drake.spec import load_scenario

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="fedmosaic-bench-"))
    scenario = scenario_file(args.scenario, args.pool, args.rounds, tmp, args.pretrained)
    from drake.config import build_config, parse_sets
    from drake.fl.method import MethodConfig
    from fedmosaic.method import FedMosaicConfig

    fm_config = build_config(FedMosaicConfig, parse_sets(args.set), where="fedmosaic")
    # Local runs at FedMosaic's rank, so the wall ratio measures the method, not a rank difference
    common = [f"local_steps={args.steps}", f"batch_size={args.batch_size}", f"lora_r={fm_config.lora_r}",
              f"lora_alpha={fm_config.lora_alpha}"]  # fmt: skip
    fm_sets = [*common, f"align_cache={tmp / 'align'}", *args.set]

    warm, _ = run("fedmosaic", scenario, tmp / "warm", fm_sets, args.scale)  # alignment + W_s load, not timed
    walls: dict[str, list[float]] = {"local": [], "fedmosaic": []}
    last: dict[str, Any] = {}
    for i in range(args.repeats):
        for method, sets in (("local", common), ("fedmosaic", fm_sets)):
            raw, engine = run(method, scenario, tmp / f"{method}{i}", sets, args.scale)
            walls[method].append(raw.wall["train"])
            last[method] = (raw, engine)

    loc_raw, loc_engine = last["local"]
    fm_raw, fm_engine = last["fedmosaic"]
    clients = sorted(loc_raw.comm["per_round"][0]["up"]) if loc_raw.comm["per_round"] else []
    spec_clients = {c.id: c.model for c in load_scenario(scenario).clients}
    fedavg_bytes = statistics.mean(nbytes(loc_engine.archs[spec_clients[c]].adapter.get_state("shared")) for c in clients)
    default_r = MethodConfig().lora_r  # LoRA bytes are linear in the rank
    fedavg_default = fedavg_bytes * default_r / fm_config.lora_r
    log = fm_raw.method_state["fedmosaic"]["rounds"][-1]
    pq_bytes, sketch, lora = log["pq_payload_bytes"], log["sketch_bytes"], log["lora_payload_bytes"]
    wall_ratio = statistics.median(walls["fedmosaic"]) / statistics.median(walls["local"])
    min_ratio = min(walls["fedmosaic"]) / min(walls["local"])
    sketch_share = sum(r["sketch_seconds"] for r in fm_raw.method_state["fedmosaic"]["rounds"]) / fm_raw.wall["train"]

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    archs = sorted({Path(m).name for m in spec_clients.values()})
    print(f"scenario {args.scenario} ({len(clients)} clients: {', '.join(archs)}), {args.rounds} rounds x "
          f"{args.steps} steps, batch {args.batch_size}, torch threads {args.threads}, load avg {load:.2f}")
    print(f"train wall (s)   local {', '.join(f'{w:.1f}' for w in walls['local'])} | "
          f"fedmosaic {', '.join(f'{w:.1f}' for w in walls['fedmosaic'])}  (W_s sketch share {sketch_share:.1%})")
    print(f"one-off A/B alignment + W_s load (first run, then cached): "
          f"{warm['wall']['train'] - statistics.median(walls['fedmosaic']):.1f} s")
    print(f"per client and round (rank {fm_config.lora_r}): PQ payload {pq_bytes:,.0f} B, full-LoRA FedAvg "
          f"{fedavg_bytes:,.0f} B ({fedavg_default:,.0f} B at the harness default rank {default_r}), FedMosaic "
          f"same-arch LoRA part {lora:,.0f} B, gradient sketch {sketch:,.0f} B")
    print(f"FedMosaic/Local wall ratio: {wall_ratio:.3f}   (median of {args.repeats}; ratio of minima {min_ratio:.3f}; "
          "goal <= 1.10, paper 1.09)")
    print(f"PQ payload / full-LoRA FedAvg bytes (same rank): {pq_bytes / fedavg_bytes:.4f} = "
          f"1/{fedavg_bytes / pq_bytes:.1f}   (goal <= 1/50; 1/{fedavg_default / pq_bytes:.1f} vs FedAvg's default rank)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
