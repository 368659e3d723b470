"""One straight line from CLI arguments to a results file: specs -> data -> models -> method -> engine -> JSON.

``eval.py`` and ``drake run`` are thin wrappers over ``run_from_args``.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from drake.config import build_config, parse_sets, read_config_file, to_dict
from drake.errors import SpecError
from drake.fl.assemble import build_method, set_threads
from drake.fl.client import ArchModel, TaskRows
from drake.fl.engine import ENGINES
from drake.fl.method import Method, MethodConfig
from drake.fl.settings import EngineSettings
from drake.fl.types import RunResult
from drake.method_registry import METHODS
from drake.run_options import DEFAULT_METHOD, DEFAULT_SCENARIO, add_run_arguments, check_seeds  # noqa: F401  (re-exported)
from drake.spec import ScenarioSpec, TaskSpec, list_scenarios, load_scenario, load_tasks


def _split_overrides(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    values: dict[str, Any] = read_config_file(args.config) if args.config else {}
    engine = values.pop("engine", {}) or {}
    if not isinstance(engine, dict):
        raise SpecError(f"--config {args.config}: 'engine' must be a mapping of engine settings (e.g. engine: "
                        f"{{others_limit: 10}}), got {engine!r}")  # fmt: skip
    engine_values = dict(engine)
    for key, value in parse_sets(args.set).items():
        if key.startswith("engine."):
            engine_values[key.removeprefix("engine.")] = value
        else:
            values[key] = value
    return values, engine_values


def load_rows(data_dir: Path, task_specs: Sequence[Any]) -> dict[str, TaskRows]:
    """Every split of the given tasks in memory, images kept encoded until a row is read (``LazyRows``)."""
    from drake.data.read import read_split
    from drake.data.rows import LazyRows

    out = {}
    for spec in task_specs:
        splits = {}
        for split in ("train", "test"):
            splits[split] = LazyRows(read_split(data_dir, spec.name, split))
        out[spec.name] = TaskRows(spec.name, spec.answer, spec.metric, splits)
    return out


@dataclass
class RunPlan:
    """Everything resolved from the arguments, before any seed runs."""

    scenario: ScenarioSpec
    method_cls: type[Method]
    config: MethodConfig
    settings: EngineSettings
    engine: str
    task_specs: list[TaskSpec]
    data_dir: Path
    data: dict[str, TaskRows]
    data_params: dict[str, Any]
    resolved: dict[str, Any]
    config_hash: str
    device: str

    @property
    def stem(self) -> str:
        return f"{self.method_cls.name}--{self.scenario.name}-{self.scenario.pool}--{self.config_hash[:8]}"


def resolve_engine(name: str, clients: int, device: str) -> str:
    """``auto``: clients on worker processes when there are cores to spare and no GPU, else one at a time."""
    if name != "auto":
        ENGINES.get(name)  # unknown engine -> error with suggestions
        return name
    from drake.fl.process_engine import default_workers

    gpu = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return "processes" if not gpu and default_workers(clients) >= 2 else "sequential"


def check_run_args(args: argparse.Namespace) -> None:
    """The command-line values a run can refuse before it loads anything (one SpecError each)."""
    check_seeds(args.seeds)
    if not (math.isfinite(args.scale) and args.scale > 0):
        raise SpecError(f"--scale {args.scale}: expected a finite number > 0 (1.0: 300 train / 100 test rows per task)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SpecError(f"--out {out}: is a file; give a directory (created if missing)")
    device = str(args.device)
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise SpecError(f"--device {device!r}: expected auto, cpu or cuda (cuda:N)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}, but no GPU is visible"
        raise SpecError(f"--device {device}: torch {torch.__version__} is {build}; use --device cpu (or auto)")


def plan_from_args(args: argparse.Namespace) -> RunPlan:
    """Resolve specs, configs and data (building DRAKE-synth if needed); fail early on bad input."""
    from drake import results as R
    from drake.data.build import ensure_built

    check_run_args(args)
    tasks = load_tasks()
    scenario = load_scenario(args.scenario, pool=args.pool, tasks=tasks)
    method_cls = METHODS.get(args.method)
    engine = resolve_engine(args.engine, len(scenario.clients), args.device)
    values, engine_values = _split_overrides(args)
    source = f"; --config {args.config}" if args.config else ""
    where = f"method {args.method!r} config ({method_cls.config_cls.__name__}{source})"
    config = build_config(method_cls.config_cls, values, where=where)
    config.check(where)
    engine_values.setdefault("progress", not args.no_progress)
    if args.protocol:
        engine_values["protocol"] = args.protocol
    settings = build_config(EngineSettings, engine_values, where="engine settings")
    task_specs = [tasks[t] for t in (*scenario.tasks, *scenario.unseen)]
    data_params = {"source": scenario.source, "scale": args.scale, "image_size": args.image_size, "seed": 0}
    data_dir = Path(
        ensure_built(
            task_specs, args.data_dir, source=scenario.source, scale=args.scale, image_size=args.image_size,
            progress=settings.progress,
        )
    )
    check_models(scenario.architectures, progress=settings.progress)
    engine_dict = to_dict(settings)
    engine_dict.pop("progress")
    engine_dict.pop("workers")  # where the clients run, not what they compute: same numbers, same hash
    engine_dict.pop("diagnostics")  # numbers read beside the scores, never changing one
    engine_dict.pop("diagnostic_passes")
    resolved = {"method": method_cls.name, **to_dict(config), "engine_settings": engine_dict}
    return RunPlan(
        scenario, method_cls, config, settings, engine, task_specs, data_dir, load_rows(data_dir, task_specs),
        data_params, resolved, R.config_hash(resolved, scenario.fingerprint(), data_params), args.device,
    )  # fmt: skip


def check_models(architectures: Sequence[str], *, progress: bool) -> None:
    """Nothing is pre-trained before a run: zoo members load the shipped weights. Resolving every model now
    fails early, before data loads and seeds run, on a shipped file that is missing or changed (one line
    naming it) or a registered member without weights (run `drake pretrain`)."""
    from drake.models.loading import resolve

    for arch in architectures:
        resolve(arch, progress=progress)


def make_engine(plan: RunPlan, seed: int, run_dir: Path | None) -> tuple[Any, Method]:
    """A fresh method and engine for one seed: base models loaded, adapters attached with seeded init."""
    method, archs = build_method(
        plan.method_cls, plan.config, plan.scenario.architectures, seed=seed, device=plan.device,
        progress=plan.settings.progress, data_dir=plan.data_dir,
    )  # fmt: skip
    return ENGINES.get(plan.engine)(archs, plan.data, plan.settings, run_dir=run_dir), method


def run_from_args(args: argparse.Namespace, argv: Sequence[str] | None = None) -> Path:
    """Run every seed, write one result file (and plots) under ``args.out``; return its path."""
    from drake import results as R

    set_threads(args.threads)  # before the plan: the engine's worker count follows the thread count
    plan = plan_from_args(args)
    command = shlex.join(["python", "eval.py", *(argv if argv is not None else sys.argv[1:])])
    out_dir = Path(args.out)
    work = out_dir / f"{plan.stem}.work"  # one checkpoint folder per seed
    if args.resume and not work.is_dir():
        print(f"note: --resume: no checkpoint under {work}; starting afresh", file=sys.stderr)
    per_seed = []
    for seed in args.seeds:
        engine, method = make_engine(plan, seed, work / f"seed{seed}")
        t0 = time.perf_counter()
        raw = engine.run(method, plan.scenario, seed=seed, resume=args.resume)
        per_seed.append(seed_record(seed, plan.scenario, raw, wall_seconds=time.perf_counter() - t0))
    models = {name: model_meta(name, a) for name, a in engine.archs.items()}
    record = R.make_record(
        command=command, engine=plan.engine, method=plan.method_cls.name, method_config=plan.resolved,
        scenario=plan.scenario, data=plan.data_params, per_seed=per_seed, tasks=task_meta(plan.data_dir, plan.task_specs),
        models=models, protocol=engine.protocol.record(plan.scenario),
    )  # fmt: skip
    path = R.write_result(out_dir / f"{plan.stem}.json", record)
    write_plots(record, out_dir / plan.stem)
    return path


def model_meta(name: str, arch: ArchModel) -> dict[str, Any]:
    """What a result records of one architecture's base model: a shipped zoo member by its name (its folder
    differs per install) with the zoo's version and file hash, anything else by its path."""
    zoo = arch.loaded.zoo
    shipped = bool(zoo and zoo.get("shipped"))
    out: dict[str, Any] = {"path": name if shipped else (arch.loaded.path or name), "weights_sha256": arch.weights_sha256}
    if zoo:
        out["zoo"] = dict(zoo)
    return out


def seed_record(seed: int, scenario: Any, raw: RunResult, *, wall_seconds: float) -> dict[str, Any]:
    """The engine's result for one seed -> one ``results.per_seed`` entry (schema 1.0)."""
    own = {c.id: c.tasks for c in scenario.clients}
    rounds, relevance, diagnostics = [], [], []
    for h in raw.history:
        train = {
            str(cid): {"loss": m.get("loss"), "steps": int(m.get("steps", 0)), "examples": int(m.get("examples", 0))}
            for cid, m in h["train"].items()
        }
        rounds.append({"round": h["round"], "eval": {str(c): v for c, v in h.get("eval", {}).items()}, "train": train})
        if "relevance" in h:
            relevance.append({"round": h["round"], "clients": sorted(own), "matrix": h["relevance"]})
        if h.get("diagnostics"):
            diagnostics.append({"round": h["round"], "clients": {str(c): d for c, d in h["diagnostics"].items()}})
    last_eval = next((h["eval"] for h in reversed(raw.history) if h.get("eval")), {})
    final: dict[str, Any] = {}
    for cid, scores in last_eval.items():
        entry = {"own": {}, "others": {}}
        for task, score in scores.items():
            kind = "own" if task in own[cid] else "others"
            entry[kind][task] = {"metric": raw.metrics[task], "score": score, "n": raw.n_eval[kind].get(task, 0)}
        final[str(cid)] = entry
    for cid, scores in raw.unseen.items():
        final.setdefault(str(cid), {})["unseen"] = {
            t: {"metric": raw.metrics[t], "score": v, "n": raw.n_eval["unseen"].get(t, 0)} for t, v in scores.items()
        }
    for cid, adapted in raw.unseen_adapted.items():
        zero_shot = raw.unseen.get(cid, {})
        final.setdefault(str(cid), {})["unseen_adapted"] = {
            t: {"metric": raw.metrics[t], "score": a["score"], "n": raw.n_eval["unseen"].get(t, 0),
                "steps": int(a["steps"]),  # the curve starts at the zero-shot score (step 0), as FedMosaic plots it
                "curve": {str(k): v for k, v in sorted({**({0: zero_shot[t]} if t in zero_shot else {}),
                                                         **a["curve"]}.items())},
                **({"loss": {str(k): float(v) for k, v in sorted(a["loss"].items())}} if "loss" in a else {})}
            for t, a in adapted.items()
        }  # fmt: skip
    comm = raw.comm
    examples = sum(m.get("examples", 0) for h in raw.history for m in h["train"].values())
    wall = {**raw.wall, "train_s_per_example": raw.wall["train"] / examples if examples else None}
    compute = raw.compute
    out = {
        "seed": seed, "status": "success", "error": None, "final": final, "rounds": rounds,
        "comm_bytes": {
            "total_up": int(comm["total_up"]), "total_down": int(comm["total_down"]),
            "per_round": [{"round": r["round"], "up": int(sum(r["up"].values())), "down": int(sum(r["down"].values()))}
                          for r in comm["per_round"]],
        },
        "wall_seconds": float(wall_seconds),
        "extra": {"wall_by_phase": wall, "comm_by_client": comm["per_round"],
                  "compute_ratio_to_local": compute.get("ratio_to_local", 1.0),
                  "compute_ratio_clients_to_local": compute.get("clients_ratio_to_local", 1.0),
                  "compute_cost_per_example": compute.get("cost_per_example", 1.0)},
    }  # fmt: skip
    if relevance:
        out["relevance"] = relevance
    if diagnostics:
        out["extra"]["diagnostics"] = _json_safe(diagnostics)  # the method's, per Others round (FedMosaic: its gate)
    if raw.grad_accum:
        out["extra"]["grad_accum"] = dict(raw.grad_accum)  # per architecture, set by engine.micro_batch
    method_log = _json_safe({k: v for k, v in raw.method_state.items() if k != "relevance"})
    if method_log:
        out["extra"]["method"] = method_log  # e.g. FedMosaic's per-round byte split (PQ vs sketch)
    return out


def _json_safe(obj: Any) -> Any:
    """Keep what JSON can hold (numbers, strings, lists, dicts); drop tensors and other state."""
    if isinstance(obj, dict):
        kept = {str(k): _json_safe(v) for k, v in obj.items()}
        return {k: v for k, v in kept.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        items = [_json_safe(v) for v in obj]
        return None if any(v is None for v in items) else items
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, (int, float)):
        return obj if math.isfinite(obj) else None
    return None


def task_meta(data_dir: Path, task_specs: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """Task fingerprints and the built files' sha256 (from the build manifest)."""
    import json

    manifest = json.loads((data_dir / "manifest.json").read_text())
    out = {}
    for spec in task_specs:
        files = manifest["tasks"][spec.name]["files"]
        out[spec.name] = {"fingerprint": spec.fingerprint(), "data_sha256": {f["path"]: f["sha256"] for f in files.values()}}
    return out


def write_plots(record: dict[str, Any], stem: Path) -> None:
    from drake.plots import gate_names, plot_client_bars, plot_gate, plot_learning_curves, plot_relevance

    plot_learning_curves([record], stem.with_name(stem.name + "-curves.png"))
    plot_client_bars(record, stem.with_name(stem.name + "-clients.png"))
    first = record["results"]["per_seed"][0]
    rel = first.get("relevance")
    if rel:
        plot_relevance(rel[-1]["matrix"], stem.with_name(stem.name + "-relevance.png"), clients=rel[-1]["clients"])
    diagnostics = (first.get("extra") or {}).get("diagnostics")
    if diagnostics:
        from drake.results import seed_summaries

        per_client = seed_summaries(record)[int(first["seed"])]["per_client"]
        learned = {c: v["others"]["a_last"] for c, v in per_client.items() if v.get("others")}
        plot_gate(diagnostics, stem.with_name(stem.name + "-gate.png"), learned=learned,
                  title=f"{record['run_info']['method']['name']}: {gate_names(diagnostics)[0]} (seed {first['seed']})")  # fmt: skip


def check_method_and_scenario(method: str, scenario: str) -> None:
    """Fail fast (before any heavy import) on unknown names."""
    METHODS.get(method)
    if scenario not in list_scenarios() and not scenario.endswith((".yaml", ".yml")):
        raise SpecError(f"unknown scenario {scenario!r}; known: {', '.join(list_scenarios())}")
