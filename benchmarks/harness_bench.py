"""Harness benchmark (a script, not a test): overhead, memory and evaluation speed, as ratios from one run.

(a) overhead  CPU time of the harness's client training (FedAvg's ``client_update`` -> ``ClientRuntime.train``:
              data stream, collate, forward/backward, clipping, AdamW, state in/out) over a bare loop doing the
              same optimizer steps on the same batches, collated beforehand. Goal <= 1.05.
(b) memory    peak RSS of SequentialEngine on the workload of reference/flower_measured.md (10 clients,
              5 rounds, FedAvg of LoRA r=8 on q/v/o, 20 steps of batch 16, each client's 100 test items
              scored every round) over Flower's 1671 MB there. Goal < 1/3. Run twice: on drake-dynamic's
              first tasks (1-6 images a row) and on ten one-image tasks; a plain loop (no engine) on the same
              workload is measured next to each, to separate the harness from the workload.
(c) clients   peak RSS with 100 clients over 10 clients (the same 10 tasks, 10 clients per round, a couple
              of rounds with few steps, every client evaluated). Goal <= 1.3.
(d) eval      multiple-choice answers per CPU second of the scorer before the shared-prompt change (every
              (row, choice) pair encoded and run on its own: ``score_pairs``) and now (``choice_scores``), task
              by task as the engine scores, with a peft LoRA adapter (FedAvg & co.), FedMosaic's PQ-LoRA
              (its sample gate averages the prompt only, so it shares the prompt too) and FedDPA's per-row
              mix (it reads each row's prompt); the picks must not differ beyond float-rounding ties.
(e) engines   wall time of one run of (b)'s first workload with ``--engine processes`` (one worker per core)
              over ``--engine sequential`` (the same process count as (b): one torch thread); the two runs'
              records must be identical. Goal: faster on 2+ cores (the default engine on CPU machines).

Every measurement runs in its own subprocess, so each peak RSS is clean. Times are CPU seconds of the one
torch thread (wall seconds are printed too): on a machine shared with other jobs they are far steadier.
Models are the zoo configs with random weights (cost does not depend on the weights); data is DRAKE-synth
(built once, cached).

    python benchmarks/harness_bench.py            # the full workloads (~20 min on 2 shared cores)
    python benchmarks/harness_bench.py --quick    # fewer rounds, steps and rows (~6 min)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FLOWER_RSS_MB = 1671.0  # reference/flower_measured.md: run_simulation, 1 worker x 2 threads
PLAIN_LOOP_RSS_MB = 540.0  # the same reference's plain in-process loop
MODEL = "tiny-llama-m"  # 1.4M parameters: the zoo member nearest the reference's 1.2M model
# the first task of each drake-dynamic client: 10 choice tasks with 1 to 6 images per row
TASKS = ("fashion200k_0", "vsr_0", "seedbench2_2", "vizwiz_0", "irfl_1", "bongard_hoi_2", "wcvqa_0", "tqa_0",
         "coinstruct_0", "iconqa_0")  # fmt: skip
# 10 one-image tasks: shorter sequences, closer to the reference's 42 ms training steps
ONE_IMAGE = ("vsr_0", "vizwiz_0", "irfl_0", "coinstruct_0", "tqa_0", "dvqa_0", "seedbench2_0", "iconqa_0",
             "wcvqa_0", "wcvqa_1")  # fmt: skip
MARK = "@@result "
#: (d)'s models: a method's adapters, labelled by what the scorer has to respect
EVAL_METHODS = {"fedavg": "peft LoRA", "fedmosaic": "PQ-LoRA", "feddpa": "FedDPA row mix"}


# ------------------------------------------------------------------------------------------ set-up


def model_folder(work: Path) -> Path:
    """``MODEL`` with random weights, saved once as a normal model folder."""
    from drake.models.zoo import build_model

    path = work / MODEL
    if not (path / "config.json").is_file():
        model, processor = build_model(MODEL, seed=0)
        model.save_pretrained(path)
        processor.save_pretrained(path)
    return path


def write_scenario(
    path: Path,
    model: Path,
    *,
    clients: int,
    rounds: int,
    per_round: int,
    eval_rounds: list[int],
    tasks: tuple[str, ...] = TASKS,
) -> Path:
    """A static scenario: client i trains on ``tasks[i % len(tasks)]`` with ``model``; ``per_round`` clients
    take part in each round."""
    import yaml

    doc = {
        "name": path.stem, "description": "harness benchmark", "mode": "static", "rounds": rounds,
        "source": "synth", "pool": "bench", "pools": {"bench": [str(model)] * clients},
        "clients": [{"id": i, "tasks": [tasks[i % len(tasks)]]} for i in range(clients)],
        "unseen": [], "eval_rounds": eval_rounds, "participation": per_round / clients,
    }  # fmt: skip
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def plan_for(scenario: Path, out: Path, sets: list[str], scale: float, engine: str = "sequential") -> Any:
    from drake.runner import add_run_arguments, plan_from_args

    p = argparse.ArgumentParser()
    add_run_arguments(p)
    argv = ["--method", "fedavg", "--scenario", str(scenario), "--out", str(out), "--scale", str(scale),
            "--no-progress", "--engine", engine]  # fmt: skip
    for s in sets:
        argv += ["--set", s]
    return plan_from_args(p.parse_args(argv))


def clock() -> tuple[float, float]:
    """(wall, CPU) seconds; with one torch thread the CPU time of the process is the work done, and is far
    less sensitive than the wall time to other processes on a shared machine."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = clock()
    return wall - start[0], cpu - start[1]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# ----------------------------------------------------------------------------------------- workers


def work_overhead(a: dict[str, Any]) -> dict[str, Any]:
    """(a): harness vs bare loop, same clients, batches, parameters and optimizer settings."""
    import torch

    from drake.data.stream import ClientStream
    from drake.fl.client import ClientRuntime, ClientState
    from drake.fl.types import ClientInfo, Payload, RoundContext
    from drake.models.batching import collate
    from drake.runner import make_engine
    from drake.seeds import derive_seed

    work = Path(a["work"])
    scen = write_scenario(work / "overhead.yaml", Path(a["model"]), clients=len(TASKS), rounds=1, per_round=len(TASKS),
                          eval_rounds=[1])  # fmt: skip
    sets = [f"local_steps={a['steps']}", f"batch_size={a['batch']}", "lora_targets=q_proj,v_proj,o_proj"]
    plan = plan_for(scen, work / "overhead", sets, a["scale"])
    engine, method = make_engine(plan, 0, None)
    cfg, scenario = method.config, plan.scenario
    arch = next(iter(engine.archs.values()))
    init = arch.adapter.get_state("all")
    params = arch.adapter.parameters("all")
    sizes = {t: len(rows.splits["train"]) for t, rows in engine.data.items()}
    infos = {c.id: ClientInfo(c.id, c.model, c.tasks) for c in scenario.clients}
    ctx = RoundContext(0, scenario, 0, tuple(infos), infos)

    def stream(c: Any) -> ClientStream:
        return ClientStream(c, scenario, sizes, derive_seed(0, "stream", c.id), cfg.batch_size)

    def harness(c: Any) -> tuple[float, float]:
        rt = ClientRuntime(infos[c.id], arch, engine.data, stream(c), ClientState(adapter=dict(init)), seed=0,
                           round_idx=0, lr=cfg.lr, weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
                           batch_size=cfg.batch_size, grad_accum=cfg.grad_accum)  # fmt: skip
        t0 = clock()
        arch.adapter.set_state(init)  # what the engine's swap-in does
        method.client_update(ctx, rt, Payload(dict(init)))
        return since(t0)

    def bare(c: Any) -> tuple[float, float]:
        refs = stream(c).batches(0, cfg.local_steps)
        batches = [
            collate(arch.loaded, [engine.data[t].splits["train"][i] for t, i in b], with_answer=True)
            for b in refs
        ]
        arch.adapter.set_state(init)
        t0 = clock()
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        arch.model.train()
        for inputs in batches:
            arch.model(**inputs).loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
        arch.model.eval()
        return since(t0)

    harness(scenario.clients[0])  # warm-up (first-call allocations, lazy imports)
    bare(scenario.clients[0])
    totals: dict[str, list[list[float]]] = {"harness": [], "bare": []}  # per repeat: [wall, cpu]
    for rep in range(a["repeats"]):
        for key in totals:
            totals[key].append([0.0, 0.0])
        for c in scenario.clients:  # alternate the order so drifting load hits both alike
            for key in ("bare", "harness") if rep % 2 else ("harness", "bare"):
                wall, cpu = harness(c) if key == "harness" else bare(c)
                totals[key][-1][0] += wall
                totals[key][-1][1] += cpu
    return {**totals, "steps": cfg.local_steps, "batch": cfg.batch_size, "clients": len(scenario.clients)}


def work_engine(a: dict[str, Any]) -> dict[str, Any]:
    """(b) and (c): one engine run; its peak RSS (the process's high-water mark) and phase walls."""
    import drake.data.build  # noqa: F401  (imported before the first reading, like the runner's imports)
    import drake.data.read  # noqa: F401
    from drake.runner import make_engine

    work = Path(a["work"])
    n, tasks = a["clients"], tuple(a["tasks"])
    scen = write_scenario(work / f"engine{n}-{len(set(tasks))}.yaml", Path(a["model"]), clients=n, rounds=a["rounds"],
                          per_round=a["per_round"], eval_rounds=a["eval_rounds"], tasks=tasks)  # fmt: skip
    sets = [f"local_steps={a['steps']}", f"batch_size={a['batch']}", "lora_targets=q_proj,v_proj,o_proj",
            "engine.eval_others=false", f"engine.self_limit={a['self_limit']}"]  # fmt: skip
    before = peak_rss_mb()
    name = a.get("engine", "sequential")
    plan = plan_for(scen, work / f"{scen.stem}-{name}", sets, a["scale"], name)
    engine, method = make_engine(plan, 0, None)
    t0 = time.perf_counter()
    raw = engine.run(method, plan.scenario, seed=0)
    numbers = json.dumps([raw.history, raw.comm, raw.unseen], sort_keys=True, default=str)
    return {"rss_mb": peak_rss_mb(), "rss_after_imports_mb": before, "wall": time.perf_counter() - t0,
            "phases": raw.wall, "rows_in_memory": sum(len(s) for t in engine.data.values() for s in t.splits.values()),
            "numbers": hashlib.sha256(numbers.encode()).hexdigest()[:16]}  # fmt: skip


def work_plain(a: dict[str, Any]) -> dict[str, Any]:
    """(b), for scale: the same workload as a plain loop (no engine, streams, states or runtime): one client
    per task trains on random batches from the global LoRA, the server averages, every client is scored."""
    import random

    import torch

    from drake.adapters.lora import LoraSettings, apply_lora
    from drake.data.build import ensure_built
    from drake.models.batching import collate
    from drake.models.loading import load_model
    from drake.models.scoring import choice_scores
    from drake.runner import load_rows
    from drake.spec import load_tasks

    before = peak_rss_mb()
    tasks = tuple(a["tasks"])
    specs = [load_tasks()[t] for t in tasks]
    data = load_rows(Path(ensure_built(specs, scale=a["scale"], progress=False)), specs)
    loaded = load_model(a["model"], device="cpu", progress=False)
    model, handle = apply_lora(
        loaded.model, LoraSettings(r=8, alpha=16, dropout=0.0, target_modules=("q_proj", "v_proj", "o_proj"))
    )
    params, global_state = handle.parameters("all"), handle.get_state("all")
    rng = random.Random(0)
    t0 = time.perf_counter()
    for rnd in range(a["rounds"]):
        states = []
        for task in tasks:
            handle.set_state(global_state)
            opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.0)
            model.train()
            for _ in range(a["steps"]):
                batch = collate(loaded, rng.sample(data[task].splits["train"], a["batch"]), with_answer=True)
                model(**batch).loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
            model.eval()
            states.append(handle.get_state("all"))
        global_state = {k: sum(s[k] for s in states) / len(states) for k in global_state}
        if rnd + 1 in a["eval_rounds"]:
            handle.set_state(global_state)
            for task in tasks:
                choice_scores(loaded, data[task].splits["test"][: a["self_limit"]], model=model)
    return {"rss_mb": peak_rss_mb(), "rss_after_imports_mb": before, "wall": time.perf_counter() - t0}


def work_eval(a: dict[str, Any]) -> dict[str, Any]:
    """(d): answers/s of the pair-by-pair scorer and of ``choice_scores`` on the same rows and models."""
    import torch

    from baselines.feddpa import inference_mix, prefix_lookup
    from drake.data.build import ensure_built
    from drake.method_registry import METHODS
    from drake.models.batching import encode_prompts, expand_choices
    from drake.models.loading import load_model
    from drake.models.scoring import choice_scores, score_pairs, shares_prompt
    from drake.runner import load_rows
    from drake.spec import load_tasks

    tasks = load_tasks()
    specs = [tasks[t] for t in TASKS]
    data = load_rows(Path(ensure_built(specs, scale=a["scale"], progress=False)), specs)
    per_task = [
        data[t].splits["test"][: a["rows_per_task"]] for t in TASKS
    ]  # scored task by task, as the engine does
    rows = [r for task_rows in per_task for r in task_rows]

    def before(loaded: Any, model: Any) -> list[list[float]]:  # the scorer before this change
        out: list[list[float]] = []
        for task_rows in per_task:
            for start in range(0, len(task_rows), 64):
                chunk = task_rows[start : start + 64]
                flat_rows, flat_choices, owner = expand_choices(chunk)
                flat = score_pairs(loaded, flat_rows, flat_choices, model=model)
                out += [[s for i, s in zip(owner, flat) if i == r] for r in range(len(chunk))]
        return out

    def now(loaded: Any, model: Any) -> list[list[float]]:
        return [s for task_rows in per_task for s in choice_scores(loaded, task_rows, model=model)]

    results = {}
    for method in EVAL_METHODS:
        loaded = load_model(a["model"], device="cpu", progress=False)
        torch.manual_seed(0)
        model, handle = METHODS.get(method)().attach(loaded.model, MODEL)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():  # non-zero adapters (a fresh LoRA's B is zero)
            for p in handle.parameters("all"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
        if method == "feddpa":  # its instance-wise mix: one random global weight per prompt, as at inference
            ids, _ = encode_prompts(rows, loaded.processor)
            table = {tuple(x): float(w) for x, w in zip(ids, torch.rand(len(ids), generator=gen))}
            model.row_mix = lambda input_ids, mask, table=table: inference_mix(prefix_lookup(table, input_ids, mask))
        model.eval()
        times: dict[str, list[tuple[float, float]]] = {"before": [], "now": []}  # (wall, cpu) per repeat
        scores: dict[str, list[list[float]]] = {}
        for _ in range(a["repeats"]):
            for name in ("before", "now"):
                t0 = clock()
                scores[name] = before(loaded, model) if name == "before" else now(loaded, model)
                times[name].append(since(t0))
        flips = sum(
            1 for o, n in zip(scores["before"], scores["now"])
            if sorted(o)[-1] - sorted(o)[-2] > 1e-4 and o.index(max(o)) != n.index(max(n))
        )  # fmt: skip
        diff = max(abs(x - y) for o, n in zip(scores["before"], scores["now"]) for x, y in zip(o, n))
        results[method] = {"before": min(times["before"], key=lambda t: t[1]), "now": min(times["now"], key=lambda t: t[1]),
                           "rows": len(rows),
                           "pairs": sum(len(r["choices"]) for r in rows), "flips": flips, "max_diff": diff,
                           "shared": shares_prompt(model)}  # fmt: skip
    return results


def work_prepare(a: dict[str, Any]) -> dict[str, Any]:
    from drake.data.build import ensure_built
    from drake.spec import load_tasks

    tasks = load_tasks()
    ensure_built([tasks[t] for t in dict.fromkeys(TASKS + ONE_IMAGE)], scale=a["scale"], progress=False)
    return {"model": str(model_folder(Path(a["work"])))}


WORKERS = {"prepare": work_prepare, "overhead": work_overhead, "engine": work_engine, "plain": work_plain,
           "eval": work_eval}  # fmt: skip


def worker_main(kind: str, args_json: str, threads: int) -> int:
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(threads)
    out = WORKERS[kind](json.loads(args_json))
    print(MARK + json.dumps(out), flush=True)
    return 0


# -------------------------------------------------------------------------------------------- parent


def spawn(kind: str, threads: int, **kwargs: Any) -> dict[str, Any]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=str(ROOT))  # fmt: skip
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--args",
        json.dumps(kwargs),
        "--threads",
        str(threads),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"worker {kind} failed (exit {proc.returncode})")
    out = json.loads(lines[-1][len(MARK) :])
    print(f"  [{kind}{'' if 'clients' not in kwargs else ' ' + str(kwargs['clients'])}] done in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip
    return out


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rounds, steps, repeats and rows")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads per worker (the harness default on 2 cores)"
    )
    ap.add_argument("--only", nargs="+", choices=("a", "b", "c", "d", "e"), default=["a", "b", "c", "d", "e"])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--args", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker_main(args.worker, args.args, args.threads)

    q = args.quick
    work = Path(tempfile.mkdtemp(prefix="harness-bench-"))
    t_start = time.perf_counter()
    scale = 1.0  # 100 test items per task, as in the reference workload (the data is built once and cached)
    print(f"harness benchmark ({'quick' if q else 'full'}): {MODEL} (random weights), DRAKE-synth scale {scale}, "
          f"torch threads {args.threads}, {os.cpu_count()} cores, work dir {work}", flush=True)  # fmt: skip
    model = spawn("prepare", args.threads, work=str(work), scale=scale)["model"]
    common = {"work": str(work), "model": model, "scale": scale}
    rows: list[tuple[str, str, str, str]] = []
    notes: list[str] = []

    if "a" in args.only:
        r = spawn("overhead", args.threads, **common, steps=6 if q else 20, batch=16, repeats=2 if q else 3)
        cpu = [h[1] / b[1] for h, b in zip(r["harness"], r["bare"])]
        wall = [h[0] / b[0] for h, b in zip(r["harness"], r["bare"])]
        ratio = statistics.median(cpu)
        rows.append(
            ("(a) harness / bare train time (CPU)", f"{ratio:.3f}x", "<= 1.05x", verdict(ratio <= 1.05))
        )
        notes.append(f"(a) {r['clients']} clients x {r['steps']} steps of batch {r['batch']} per repeat; CPU s harness "
                     f"{', '.join(f'{h[1]:.1f}' for h in r['harness'])} | bare {', '.join(f'{b[1]:.1f}' for b in r['bare'])}"
                     f" -> ratios {', '.join(f'{x:.3f}' for x in cpu)}; wall ratios {', '.join(f'{x:.3f}' for x in wall)}")  # fmt: skip

    if "b" in args.only:
        kw = {**common, "rounds": 2 if q else 5, "steps": 6 if q else 20, "batch": 16, "self_limit": 100,
              "eval_rounds": [1, 2] if q else [1, 2, 3, 4, 5]}  # fmt: skip
        for tasks, label in (
            (TASKS, "drake-dynamic's first tasks, 1-6 images"),
            (ONE_IMAGE, "one-image tasks"),
        ):
            r = spawn("engine", args.threads, **kw, clients=10, per_round=10, tasks=tasks)
            plain = spawn("plain", args.threads, **kw, tasks=tasks)
            share = r["rss_mb"] / FLOWER_RSS_MB
            rows.append((f"(b) engine peak RSS / Flower's ({label})", f"{r['rss_mb']:.0f} / {FLOWER_RSS_MB:.0f} MB = "
                         f"{share:.3f}", "< 0.333", verdict(share < 1 / 3)))  # fmt: skip
            ph = r["phases"]
            notes.append(f"(b) {label}: engine {r['rss_mb']:.0f} MB peak, a plain loop on the same workload "
                         f"{plain['rss_mb']:.0f} MB (engine/plain {r['rss_mb'] / plain['rss_mb']:.2f}); both "
                         f"{r['rss_after_imports_mb']:.0f} / {plain['rss_after_imports_mb']:.0f} MB after imports; "
                         f"{r['rows_in_memory']} decoded rows in memory; engine run {r['wall']:.0f} s (train "
                         f"{ph['train']:.0f}, eval {ph['eval']:.0f}); the reference's plain loop: "
                         f"{PLAIN_LOOP_RSS_MB:.0f} MB and 42 s of training for the full workload")  # fmt: skip

    if "c" in args.only:
        kw = {**common, "per_round": 10, "rounds": 2, "steps": 2 if q else 5, "batch": 8, "self_limit": 5 if q else 10,
              "eval_rounds": [2], "tasks": TASKS}  # fmt: skip
        small, big = (
            spawn("engine", args.threads, clients=10, **kw),
            spawn("engine", args.threads, clients=100, **kw),
        )
        ratio = big["rss_mb"] / small["rss_mb"]
        rows.append(("(c) peak RSS 100 / 10 clients", f"{big['rss_mb']:.0f} / {small['rss_mb']:.0f} MB = {ratio:.3f}x",
                     "<= 1.3x", verdict(ratio <= 1.3)))  # fmt: skip
        notes.append(f"(c) 10 clients per round, 2 rounds of {kw['steps']} steps, every client evaluated on "
                     f"{kw['self_limit']} items at the end; run {small['wall']:.0f} s vs {big['wall']:.0f} s")  # fmt: skip

    if "d" in args.only:
        r = spawn("eval", args.threads, **common, rows_per_task=8 if q else 25, repeats=2 if q else 3)
        for method, label in EVAL_METHODS.items():
            m = r[method]
            before, now = m["rows"] / m["before"][1], m["rows"] / m["now"][1]
            path = "shared prompt" if m["shared"] else "pairwise"
            rows.append((f"(d) eval answers/CPU-s, {label} ({path})", f"{before:.1f} -> {now:.1f} = {now / before:.2f}x",
                         "same picks", verdict(m["flips"] == 0)))  # fmt: skip
            notes.append(f"(d) {label}: {m['rows']} rows / {m['pairs']} (row, choice) pairs from {len(TASKS)} tasks; "
                         f"CPU {m['before'][1]:.1f} s -> {m['now'][1]:.1f} s (wall {m['before'][0]:.1f} -> "
                         f"{m['now'][0]:.1f} s); picks differing beyond ties: {m['flips']}; "
                         f"max |score diff| {m['max_diff']:.1e}")  # fmt: skip

    if "e" in args.only:
        kw = {**common, "rounds": 2 if q else 3, "steps": 6 if q else 20, "batch": 16, "self_limit": 100,
              "eval_rounds": [2] if q else [1, 3], "clients": 10, "per_round": 10, "tasks": TASKS}  # fmt: skip
        seq = spawn("engine", args.threads, **kw, engine="sequential")
        par = spawn("engine", args.threads, **kw, engine="processes")
        ratio = seq["wall"] / par["wall"]
        same = seq["numbers"] == par["numbers"]
        rows.append(("(e) wall sequential / processes engine", f"{seq['wall']:.0f} / {par['wall']:.0f} s = {ratio:.2f}x",
                     "> 1x, same numbers", verdict(ratio > 1 and same)))  # fmt: skip
        notes.append(f"(e) {kw['clients']} clients, {kw['rounds']} rounds of {kw['steps']} steps, {os.cpu_count()} cores; "
                     f"train {seq['phases']['train']:.0f} -> {par['phases']['train']:.0f} s, eval "
                     f"{seq['phases']['eval']:.0f} -> {par['phases']['eval']:.0f} s; records identical: {same}")  # fmt: skip

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nload average {load:.2f}; total {time.perf_counter() - t_start:.0f} s")
    for n in notes:
        print(n)
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    head = ("check", "measured", "goal", "result")
    print("\n" + " | ".join(h.ljust(w[i]) for i, h in enumerate(head)))
    print("-+-".join("-" * x for x in w))
    for r in rows:
        print(" | ".join(c.ljust(w[i]) for i, c in enumerate(r)))
    return 0 if all(r[3] == "PASS" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
