"""Per-task calibration of DRAKE-synth with the tiny zoo models (issue [K].3).

For every task: a fresh LoRA adapter on one frozen pre-trained zoo model is fine-tuned on that task alone
(single client, fixed budget: ``--steps`` AdamW steps of ``--batch`` examples drawn from the train split)
and scored on the test split, once per training seed (``--seeds``: adapter init and batch order; the data
stays the same). The band we want: clearly learnable (>= chance + 10 points) but not solved (< 95%), judged
on the mean over seeds: one seed moves a task by up to ~10 points, enough to flip a band decision.
Writes ``benchmarks/results/calibration.json`` (read by the dataset card) and prints a table.

    python benchmarks/calibrate_tasks.py                      # all 47 tasks, tiny-llama-m, 100 x 8, 3 seeds
    python benchmarks/calibrate_tasks.py --tasks vsr_0 nlvr2_0 --steps 200
    python benchmarks/calibrate_tasks.py --jobs 2               # two tasks at a time, one thread each
    python benchmarks/calibrate_tasks.py --tasks irfl_0 --merge --why "irfl_0 redesigned"  # re-run rows in place
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drake.adapters.lora import apply_lora  # noqa: E402
from drake.data.build import ensure_built  # noqa: E402
from drake.data.card import BAND_HIGH, BAND_LOW, band_verdict  # noqa: E402
from drake.data.stream import epoch_batches  # noqa: E402
from drake.fl.assemble import set_threads  # noqa: E402
from drake.fl.client import ArchModel, ClientRuntime, ClientState  # noqa: E402
from drake.fl.method import MethodConfig  # noqa: E402
from drake.fl.types import ClientInfo  # noqa: E402
from drake.io import atomic_write_json  # noqa: E402
from drake.models.loading import load_model  # noqa: E402
from drake.runner import load_rows  # noqa: E402
from drake.seeds import derive_seed  # noqa: E402
from drake.spec import load_tasks  # noqa: E402


def chance(rows: list[dict]) -> float | None:
    """Expected accuracy of a uniform guess among the listed choices (None for open tasks)."""
    if not rows or not rows[0]["choices"]:
        return None
    return sum(1.0 / len(r["choices"]) for r in rows) / len(rows)


def adapted_model(args: argparse.Namespace) -> tuple[ArchModel, dict[str, torch.Tensor]]:
    """``args.model`` with a fresh LoRA adapter (``args.lora_r``, seeded from ``args.seed``) and its initial state."""
    loaded = load_model(args.model, device="cpu", progress=False)
    torch.manual_seed(derive_seed(args.seed, "adapter-init"))
    model, handle = apply_lora(loaded.model, MethodConfig(lora_r=args.lora_r, lr=args.lr).lora())
    return ArchModel(str(args.model), loaded, model, handle), handle.get_state("all")  # get_state copies


def runtime(arch: ArchModel, data: dict, names: Sequence[str], args: argparse.Namespace) -> ClientRuntime:
    """A one-client runtime over ``names`` that trains at ``args.lr`` in batches of ``args.batch``."""
    return ClientRuntime(
        ClientInfo(0, str(args.model), tuple(names)), arch, data, None, ClientState(), seed=args.seed,  # type: ignore[arg-type]
        round_idx=0, lr=args.lr, weight_decay=0.0, max_grad_norm=1.0, batch_size=args.batch,
    )  # fmt: skip


def base_weights(arch: ArchModel) -> dict[str, nn.Parameter]:
    """What ``--train full`` moves besides the adapter: the projector and the whole text model (the tower stays
    frozen, as in every member's pre-training)."""
    adapter = {id(p) for p in arch.adapter.parameters("all")}
    return {n: p for n, p in arch.model.named_parameters() if "vision_tower" not in n and id(p) not in adapter}


def tune_and_score(name: str, data: dict, arch: ArchModel, init: dict, args: argparse.Namespace) -> dict:
    """Reset the adapter to ``init``, fine-tune it on ``name`` alone (the budget in ``args``), score the test split.
    With ``args.train == "full"`` the base weights train too, and are put back afterwards."""
    t0 = time.perf_counter()
    torch.manual_seed(derive_seed(args.seed, "calibrate", name))  # a task's result is independent of the others
    arch.adapter.set_state(init)
    rt = runtime(arch, data, [name], args)
    zero = rt.evaluate(name, limit=args.limit)["score"] if args.zero_shot else None
    batches = epoch_batches(data[name].splits["train"], args.steps, args.batch, derive_seed(args.seed, name))
    base = base_weights(arch) if args.train == "full" else {}
    saved = {n: p.detach().clone() for n, p in base.items()}
    try:
        log = rt.train(args.steps, batches=batches, params=[*arch.adapter.parameters("all"), *base.values()])
        acc = rt.evaluate(name, limit=args.limit)["score"]
    finally:
        with torch.no_grad():
            for n, p in base.items():
                p.copy_(saved[n])
                p.requires_grad_(False)
    return {"accuracy": acc, "chance": chance(data[name].splits["test"]), "zero_shot": zero,
            "final_loss": log["loss"], "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip


def over_seeds(runs: list[dict]) -> dict:
    """One task's runs (one per seed) as one record: mean accuracy and loss, the per-seed accuracies and their
    standard deviation; zero-shot is the first run's (LoRA starts as a no-op, so it does not depend on the seed)."""
    accs = [r["accuracy"] for r in runs]
    return {"accuracy": statistics.fmean(accs), "accuracy_seeds": accs,
            "sd": statistics.stdev(accs) if len(accs) > 1 else 0.0, "chance": runs[0]["chance"],
            "zero_shot": runs[0]["zero_shot"], "final_loss": statistics.fmean(r["final_loss"] for r in runs),
            "seconds": round(sum(r["seconds"] for r in runs), 1)}  # fmt: skip


def calibrate(args: argparse.Namespace) -> dict:
    tasks = load_tasks()
    names = args.tasks or list(tasks)
    specs = [tasks[n] for n in names]
    data_dir = ensure_built(specs, args.data_dir, source="synth", scale=args.scale, image_size=32)
    data = load_rows(Path(data_dir), specs)
    seeded = seeded_models(args)
    out: dict = {}
    for name in names:
        out[name] = tune_over_seeds(name, data, seeded)
        print(row(name, out[name]), flush=True)
    return out


Seeded = list[tuple[argparse.Namespace, tuple[ArchModel, dict[str, torch.Tensor]]]]


def seeded_models(args: argparse.Namespace) -> Seeded:
    """One (args, adapted model) per training seed ``args.seed .. args.seed + args.seeds - 1``: each seed has its
    own adapter init; zero-shot is scored with the first only (LoRA starts as a no-op)."""
    seeded = [argparse.Namespace(**{**vars(args), "seed": seed, "zero_shot": args.zero_shot and seed == args.seed})
              for seed in seed_list(args)]  # fmt: skip
    return [(a, adapted_model(a)) for a in seeded]


TRAIN_MODES = ("adapter", "full")


def full_marker(args: argparse.Namespace) -> dict[str, str]:
    """``{"train": "full"}`` in a table's budget when the base weights trained (absent otherwise, as in the
    tables made before ``--train``, so they still merge)."""
    return {"train": args.train} if args.train != "adapter" else {}


def seed_count(text: str) -> int:
    """argparse type of ``--seeds`` (here and in learnability_probes.py): a whole number >= 1."""
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def seed_list(args: argparse.Namespace) -> list[int]:
    """The training seeds of a run: ``--seeds`` of them from ``--seed`` on."""
    return list(range(args.seed, args.seed + args.seeds))


def tune_over_seeds(name: str, data: dict, seeded: Seeded) -> dict:
    """``tune_and_score`` once per seed, as one record (``over_seeds``)."""
    return over_seeds([tune_and_score(name, data, arch, init, a) for a, (arch, init) in seeded])


def in_parallel(worker: Callable[[argparse.Namespace], dict], args: argparse.Namespace, names: list[str]) -> dict:
    """``worker`` over ``args.jobs`` spawned processes (one torch thread each), ``names`` dealt round-robin
    as ``args.tasks``; the results in the order of ``names``. ``worker`` must be importable by name."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    parts = [part for k in range(args.jobs) if (part := names[k :: args.jobs])]  # no empty part: [] means "all"
    with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(worker, argparse.Namespace(**{**vars(args), "tasks": part})) for part in parts]
        done = {k: v for f in futures for k, v in f.result().items()}
    return {n: done[n] for n in names}


def calibrate_parallel(args: argparse.Namespace) -> dict:
    """``calibrate`` over ``args.jobs`` processes; the data is built once, before the workers start."""
    tasks = load_tasks()
    names = args.tasks or list(tasks)
    ensure_built([tasks[n] for n in names], args.data_dir, source="synth", scale=args.scale, image_size=32)
    return in_parallel(_worker, args, names)


def _worker(args: argparse.Namespace) -> dict:
    set_threads(1)
    return calibrate(args)


def row(name: str, r: dict) -> str:
    ch = "open" if r["chance"] is None else f"{100 * r['chance']:.1f}"
    zs = "-" if r["zero_shot"] is None else f"{100 * r['zero_shot']:.1f}"
    sd = f" +-{100 * r['sd']:4.1f}" if len(r.get("accuracy_seeds", ())) > 1 else ""
    return (f"{name:22s} chance {ch:>5s}  zero-shot {zs:>5s}  tuned {100 * r['accuracy']:5.1f}{sd}  "
            f"loss {r['final_loss']:.3f}  {band_verdict(r)}  ({r['seconds']}s)")  # fmt: skip


class MergeError(ValueError):
    """A re-run that cannot be merged into an existing table (different model or budget, or no table)."""


def check_mergeable(old: dict, settings: dict) -> None:
    """Raise ``MergeError`` unless ``old`` is a table made with ``settings`` (model, budget, band). Every task
    is seeded on its own, so rows not re-run stand, but only when the model and budget (steps, batch, lr,
    rank, scale, seeds) are the same: otherwise the table would mix two protocols."""
    if not isinstance(old.get("tasks"), dict):
        raise MergeError("cannot merge: the table at --out has no 'tasks' mapping; is it a calibration table?")
    for key in ("model", "budget", "band"):
        if old.get(key) != settings[key]:
            raise MergeError(f"cannot merge: {key} differs (table {old.get(key)!r}, re-run {settings[key]!r}); "
                             f"re-run with the table's settings or write elsewhere with --out")  # fmt: skip


def merged(old: dict, new: dict, why: str | None) -> dict:
    """``old`` (a full table) with ``new``'s task rows replacing its rows and the re-run recorded under
    ``updated_by`` (``check_mergeable`` first)."""
    check_mergeable(old, new)
    update = {"command": new["command"], "tasks": sorted(new["tasks"])} | ({"why": why} if why else {})
    return {**old, "tasks": {**old["tasks"], **new["tasks"]}, "updated_by": [*(old.get("updated_by") or ()), update]}


def _without_why(argv: Sequence[str]) -> list[str]:
    """The command line less ``--why`` (kept beside the command in ``updated_by``, not inside it)."""
    out, rest = [], iter(argv)
    for a in rest:
        if a == "--why":
            next(rest, None)
        elif not a.startswith("--why="):
            out.append(a)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny-llama-m", help="zoo member, local folder or hub id")
    p.add_argument("--tasks", nargs="*", default=None, help="task names (default: all 47)")
    p.add_argument("--steps", type=int, default=100, help="AdamW steps (dynamic scenario: 5 rounds x 20 per task)")
    p.add_argument("--batch", type=int, default=8, help="examples per step")
    p.add_argument("--lr", type=float, default=MethodConfig.lr, help="AdamW learning rate (every method's default)")
    p.add_argument("--lora-r", type=int, default=MethodConfig.lora_r, help="LoRA rank")
    p.add_argument("--scale", type=float, default=1.0, help="multiplies the train / test split sizes")
    p.add_argument("--train", choices=TRAIN_MODES, default="adapter", help="what moves: the LoRA adapter (the "
                   "calibration), or the adapter plus projector and text model (is it the adapter or the model?)")
    p.add_argument("--limit", type=int, default=None, help="test items per task (default all)")
    p.add_argument("--seed", type=int, default=0, help="first training seed")
    p.add_argument("--seeds", type=seed_count, default=3, help="training seeds per task (seed, seed+1, ...); the band "
                   "is judged on their mean")
    p.add_argument("--zero-shot", action="store_true", help="also score the base model before tuning")
    p.add_argument("--data-dir", default=None, help="built DRAKE-synth folder (default: the cache)")
    p.add_argument("--threads", type=int, default=None, help="torch threads with --jobs 1 (default: 1 on 2 cores or fewer, else up to 8)")
    p.add_argument("--jobs", type=int, default=1, help="tasks calibrated side by side, one process and thread each")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/calibration.json"), help="the table (JSON)")
    p.add_argument("--merge", action="store_true", help="replace only the re-run tasks' rows in the table at --out "
                   "(same model and budget required) and record the re-run under updated_by")
    p.add_argument("--why", default=None, help="with --merge: why these tasks were re-run (shown in the JSON)")
    args = p.parse_args(argv)
    settings = {
        "model": args.model,
        "budget": {"steps": args.steps, "batch": args.batch, "lr": args.lr, "lora_r": args.lora_r, "scale": args.scale,
                   "seeds": seed_list(args), **full_marker(args)},
        "band": {"min_points_above_chance": BAND_LOW, "max_accuracy": BAND_HIGH},
    }  # fmt: skip
    old = None
    if args.merge:
        if not args.tasks or not args.out or not Path(args.out).is_file():
            p.error(f"--merge needs --tasks and an existing table at --out (got {args.out!r}); run the full table first")
        try:
            old = json.loads(Path(args.out).read_text())
            check_mergeable(old, settings)  # fail before the run, not after it
        except (ValueError, AttributeError) as e:  # MergeError, bad JSON, or JSON that is not a table
            p.exit(2, f"error: {e}\n")
    set_threads(args.threads)
    results = calibrate_parallel(args) if args.jobs > 1 else calibrate(args)
    command = shlex.join(["python", "benchmarks/calibrate_tasks.py", *_without_why(argv if argv is not None else sys.argv[1:])])
    record = {"command": command, **settings, "tasks": results}
    if old is not None:
        record = merged(old, record, args.why)
    if args.out:
        atomic_write_json(Path(args.out), record)
    bad = [t for t, r in record["tasks"].items() if band_verdict(r) != "ok"]
    print(f"{len(record['tasks']) - len(bad)}/{len(record['tasks'])} tasks in band; outside: {', '.join(bad) or 'none'}")


if __name__ == "__main__":
    main()
