"""Measured task affinity of DRAKE-synth: does fine-tuning on task i help task j? (issue [K].1)

The dynamic scenario puts related tasks on nearby clients (0-2 fashion/edit, 3-5 concepts, 6-9 QA). This
script checks that the designed relatedness is real for a tiny zoo model: for every task i, a fresh LoRA
adapter (the same seeded init for every row) is fine-tuned on i alone (``--steps`` AdamW steps of
``--batch`` train examples) and scored on the test split of every task j. The gain
``gain[i][j] = score_after_i[j] - base[j]`` (points) is relative to the untuned adapter (LoRA's B is zero,
so the base is the zero-shot model). Related pairs should show positive off-diagonal gain; the summary
compares the mean off-diagonal gain within a client group with the mean across groups.

Two finer measures come from the same fine-tunes, because accuracy on 100 items moves in steps of 1 point with
a standard error of ~5: ``prob_gain`` (points of the mean probability the model puts on the right choice, a
softmax over its choice scores: it moves before the argmax flips) and ``update_cosine`` (cosine between the
weight updates ``B @ A`` that tasks i and j leave on the base model: whether the tasks pull the same
directions, the signal FedMosaic's RELA weighs clients by).

A fourth, ``transfer`` (intermediate-task transfer), asks what a client gets from a related client's adapter:
``--then-steps`` steps on j starting from the adapter tuned on i, against the same steps on j from the fresh
adapter. The zero-shot gain above also has to carry j's answer format, which a tiny model only learns on j
itself; the short tune on j teaches the format to both sides, so what is left is what i taught.

Writes ``benchmarks/results/task_affinity.json`` and the heatmaps ``task_affinity.png`` (accuracy gain),
``task_affinity_prob.png``, ``task_affinity_update.png`` and ``task_affinity_transfer.png`` next to it.

    python benchmarks/task_affinity.py                                 # 12 tasks, tiny-llama-m, 100 x 8
    python benchmarks/task_affinity.py --tasks vsr_0 irfl_3 iconqa_1 --steps 50 --limit 50
"""

from __future__ import annotations

import argparse
import io
import math
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from calibrate_tasks import adapted_model, runtime  # noqa: E402

from drake.data.build import ensure_built  # noqa: E402
from drake.data.stream import epoch_batches  # noqa: E402
from drake.errors import SpecError  # noqa: E402
from drake.fl.assemble import set_threads  # noqa: E402
from drake.fl.client import ArchModel, ClientRuntime  # noqa: E402
from drake.fl.method import MethodConfig  # noqa: E402
from drake.io import atomic_write_bytes, atomic_write_json  # noqa: E402
from drake.models.scoring import choice_scores  # noqa: E402
from drake.runner import load_rows  # noqa: E402
from drake.seeds import derive_seed  # noqa: E402
from drake.spec import load_scenario, load_tasks  # noqa: E402

SCENARIO = "drake-dynamic"
#: client id ranges of drake-dynamic -> the group name used in the summary and the heatmap
CLIENT_GROUPS = (("fashion/edit", range(0, 3)), ("concepts", range(3, 6)), ("QA", range(6, 10)))
OTHER = "other"  # a task no drake-dynamic client holds (e.g. an unseen task)
#: 4 choice tasks per group, all in the calibration band (benchmarks/results/calibration.json, tiny-llama-m,
#: 100 x 8, mean of 3 seeds), two of one family in each group (designed relatedness)
DEFAULT_TASKS = (
    "fashion200k_2", "fashion200k_1", "cirr_0", "fashioniq_0",
    "irfl_1", "irfl_2", "irfl_0", "bongard_ow_1",
    "coinstruct_0", "coinstruct_1", "wcvqa_0", "seedbench2_1",
)  # fmt: skip
DPI = 100
TUNED_AXES = ("evaluated on (j)", "fine-tuned on (i)")  # heatmap x / y labels of the matrices scored after tuning


def task_groups(names: Sequence[str], scenario: str = SCENARIO) -> dict[str, str]:
    """Each task's client group in ``scenario`` (the first client that holds it), else ``OTHER``."""
    spec = load_scenario(scenario)
    by_client = {c: g for g, ids in CLIENT_GROUPS for c in ids}
    out: dict[str, str] = {}
    for client in spec.clients:
        for t in client.tasks:
            out.setdefault(t, by_client.get(client.id, OTHER))
    return {n: out.get(n, OTHER) for n in names}


def order_by_group(names: Sequence[str], groups: Mapping[str, str]) -> list[str]:
    """``names`` sorted by group (CLIENT_GROUPS order, OTHER last), keeping the given order inside a group."""
    rank = {g: k for k, (g, _) in enumerate(CLIENT_GROUPS)}
    return sorted(dict.fromkeys(names), key=lambda n: rank.get(groups[n], len(rank)))


def choice_metrics(rt: ClientRuntime, task: str, limit: int | None) -> tuple[float, float]:
    """(accuracy, mean probability of the right choice), both in points, over ``limit`` test rows of ``task``.

    One scoring pass, the same one ``ClientRuntime.evaluate`` makes (argmax, first choice on ties); the
    probability is a softmax over the row's choice scores."""
    rows = list(rt.data[task].splits["test"][:limit] if limit else rt.data[task].splits["test"])
    rt.model.eval()
    scores = choice_scores(rt.arch.loaded, rows, model=rt.model, batch_size=rt.eval_batch_size,
                           length_norm=rt.length_norm)  # fmt: skip
    hits, probs = [], []
    for row, sc in zip(rows, scores):
        right = row["choices"].index(row["answer"])
        hits.append(float(max(range(len(sc)), key=sc.__getitem__) == right))
        probs.append(torch.softmax(torch.tensor(sc, dtype=torch.float64), 0)[right].item())
    return 100 * math.fsum(hits) / len(rows), 100 * math.fsum(probs) / len(rows)


def weight_update(state: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The LoRA weight update ``B @ A`` of every adapted layer, flattened into one vector (LoRA's B starts at
    zero, so this is what fine-tuning changed; LoRA's scale is the same for every task and left out)."""
    parts = [
        (state[k.replace("lora_A", "lora_B")].double() @ state[k].double()).flatten()
        for k in sorted(state)
        if "lora_A" in k
    ]
    if not parts:
        raise SpecError("task_affinity: the adapter has no lora_A/lora_B weights to compare")
    return torch.cat(parts)


def cosine_matrix(vectors: Sequence[torch.Tensor]) -> list[list[float]]:
    """Pairwise cosine similarity (0 for a zero vector)."""
    unit = [v / n if (n := v.norm()) > 0 else v for v in vectors]
    return [[float(a @ b) for b in unit] for a in unit]


def measure(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """Base scores, gain matrices (points; row i = tuned on names[i], column j = scored on names[j]) and the
    cosine between the tasks' weight updates."""
    tasks = load_tasks()
    specs = [tasks[n] for n in names]
    open_tasks = [s.name for s in specs if s.answer != "choice"]
    if open_tasks:
        raise SpecError(f"task_affinity: {', '.join(open_tasks)} are open-answer tasks; pass choice tasks only")
    data_dir = ensure_built(specs, args.data_dir, source="synth", scale=args.scale, image_size=32)
    data = load_rows(Path(data_dir), specs)
    arch, init = adapted_model(args)
    handle = arch.adapter

    def scores(rt: ClientRuntime) -> tuple[list[float], list[float]]:
        acc, prob = zip(*(choice_metrics(rt, j, args.limit) for j in names))
        return list(acc), list(prob)

    t0 = time.perf_counter()
    handle.set_state(init)
    base, base_prob = scores(runtime(arch, data, names, args))
    print(f"{'base':22s} " + " ".join(f"{s:6.1f}" for s in base), flush=True)
    gain, prob_gain, updates, loss, tuned = [], [], [], {}, []
    seconds: dict[str, Any] = {"base": round(time.perf_counter() - t0, 1)}
    for i in names:
        t0 = time.perf_counter()
        handle.set_state(init)
        rt = runtime(arch, data, names, args)
        batches = epoch_batches(data[i].splits["train"], args.steps, args.batch, derive_seed(args.seed, i))
        t1 = time.perf_counter()
        loss[i] = rt.train(args.steps, batches=batches)["loss"]
        t2 = time.perf_counter()
        tuned.append(handle.get_state("all"))  # a copy: the next row resets the adapter
        updates.append(weight_update(tuned[-1]))
        acc, prob = scores(rt)
        gain.append([after - b for after, b in zip(acc, base)])
        prob_gain.append([after - b for after, b in zip(prob, base_prob)])
        seconds[i] = {"train": round(t2 - t1, 1), "eval": round(time.perf_counter() - t2, 1)}
        print(f"{i:22s} " + " ".join(f"{g:+6.1f}" for g in gain[-1]) + f"  ({round(time.perf_counter() - t0, 1)}s)",
              flush=True)  # fmt: skip
    out = {"base": dict(zip(names, base)), "base_prob": dict(zip(names, base_prob)), "gain": gain,
           "prob_gain": prob_gain, "update_cosine": cosine_matrix(updates), "final_loss": loss}  # fmt: skip
    if args.then_steps:
        t0 = time.perf_counter()
        out["transfer"], out["then_base"] = head_start(args, data, arch, names, init, tuned)
        seconds["transfer"] = round(time.perf_counter() - t0, 1)
    handle.set_state(init)
    return {**out, "seconds": seconds}


def head_start(
    args: argparse.Namespace, data: dict, arch: ArchModel, names: Sequence[str], init: dict, tuned: Sequence[dict]
) -> tuple[list[list[float]], dict[str, float]]:
    """Intermediate-task transfer: ``--then-steps`` steps on j starting from the adapter tuned on i, against
    the same steps on j from the fresh adapter (same batches, same seed). Returns ``transfer[i][j]`` (points)
    and the from-scratch scores. This is a client that starts from a related client's adapter and trains one
    short local round, as in FL; the short target budget teaches j's answer format, so what i gives shows."""

    def short_tune(start: dict, j: str) -> float:
        arch.adapter.set_state(start)
        rt = runtime(arch, data, [j], args)
        rt.train(args.then_steps, batches=epoch_batches(data[j].splits["train"], args.then_steps, args.batch,
                                                        derive_seed(args.seed, "then", j)))  # fmt: skip
        return choice_metrics(rt, j, args.limit)[0]

    scratch = {j: short_tune(init, j) for j in names}
    print(f"{'then-steps base':22s} " + " ".join(f"{scratch[j]:6.1f}" for j in names), flush=True)
    transfer = []
    for i, state in zip(names, tuned):
        transfer.append([short_tune(state, j) - scratch[j] for j in names])
        print(f"{i + ' ->':22s} " + " ".join(f"{g:+6.1f}" for g in transfer[-1]), flush=True)
    return transfer, scratch


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:+.2f}"


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def summarize(
    gain: Sequence[Sequence[float]], names: Sequence[str], groups: Mapping[str, str]
) -> dict[str, Any]:
    """Mean gain on the diagonal, off the diagonal within a group and across groups, and per group block."""
    n = len(names)
    off = [(i, j) for i in range(n) for j in range(n) if i != j]
    within = [gain[i][j] for i, j in off if groups[names[i]] == groups[names[j]]]
    across = [gain[i][j] for i, j in off if groups[names[i]] != groups[names[j]]]
    order = list(dict.fromkeys(groups[t] for t in names))
    blocks = {
        gi: {gj: _mean([gain[i][j] for i, j in off if groups[names[i]] == gi and groups[names[j]] == gj])
             for gj in order}
        for gi in order
    }  # fmt: skip
    w, a = _mean(within), _mean(across)
    return {
        "diagonal": _mean([gain[i][i] for i in range(n)]),
        "within_group": w,
        "across_groups": a,
        "within_minus_across": None if w is None or a is None else w - a,
        "pairs": {"within_group": len(within), "across_groups": len(across)},
        "blocks": blocks,
    }


def plot_affinity(
    gain: Sequence[Sequence[float]],
    names: Sequence[str],
    groups: Mapping[str, str],
    path: str | Path,
    *,
    title: str = "task affinity",
    label: str = "gain over base (points)",
    axes: tuple[str, str] = TUNED_AXES,
) -> Path:
    """Heatmap of ``gain`` (rows: tuned on, columns: scored on) with a 0-centred diverging colormap, lines
    between consecutive groups and every value written in its cell; a reproducible PNG, written atomically.
    The colour scale spans the off-diagonal values (the diagonal, far larger, saturates; its numbers show)."""
    n = len(names)
    if len(gain) != n or any(len(r) != n for r in gain):
        raise ValueError(f"gain must be {n} x {n} for {n} task names")
    off = [gain[i][j] for i in range(n) for j in range(n) if i != j or n == 1]
    top = max((abs(v) for v in off if math.isfinite(v)), default=0.0) or 1.0
    size = max(4.0, 1.6 + 0.55 * n)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(gain, cmap="RdBu_r", vmin=-top, vmax=top, aspect="equal")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=label)
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    for i in range(n):
        for j in range(n):
            v = gain[i][j]
            ax.text(j, i, f"{v:+.1f}" if top > 1.5 else f"{v:+.2f}", ha="center", va="center", fontsize=7,
                    color="white" if abs(v) > 0.6 * top else "black", fontweight="bold" if i == j else "normal")  # fmt: skip
    starts = [k for k in range(n) if k == 0 or groups[names[k]] != groups[names[k - 1]]]
    for k in starts[1:]:
        ax.axhline(k - 0.5, color="black", linewidth=1.5)
        ax.axvline(k - 0.5, color="black", linewidth=1.5)
    for k, end in zip(starts, [*starts[1:], n]):
        ax.text(
            (k + end - 1) / 2, -0.7, groups[names[k]], ha="center", va="bottom", fontsize=9, fontweight="bold"
        )
    ax.set_title(title, fontsize=10, pad=24)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny-llama-m", help="zoo name or model folder")
    p.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS), help="tasks of the matrix (default: four tasks from each of three groups)")
    p.add_argument("--steps", type=int, default=100, help="AdamW steps per fine-tune (as calibrate_tasks.py)")
    p.add_argument("--batch", type=int, default=8, help="examples per step")
    p.add_argument("--then-steps", type=int, default=20,
                   help="steps on task j after the adapter of task i (the transfer matrix; 0: skip it; default 20, "
                        "one FL round)")  # fmt: skip
    p.add_argument("--lr", type=float, default=MethodConfig.lr, help="AdamW learning rate")
    p.add_argument("--lora-r", type=int, default=MethodConfig.lora_r, help="LoRA rank")
    p.add_argument("--scale", type=float, default=1.0, help="multiplies the split sizes")
    p.add_argument("--limit", type=int, default=100, help="test items per task (0: all)")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--data-dir", default=None, help="built DRAKE-synth folder (default: the cache)")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/task_affinity.json"),
                   help="JSON path; the heatmap goes next to it (same name, .png)")  # fmt: skip
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Measure, summarize, write JSON + PNG (unless ``--out ''``); return the record."""
    argv = list(argv if argv is not None else sys.argv[1:])
    args = parse_args(argv)
    set_threads(args.threads)
    groups = task_groups(args.tasks)
    names = order_by_group(args.tasks, groups)
    t0 = time.perf_counter()
    m = measure(args, names)
    matrices = {k: m[k] for k in ("gain", "prob_gain", "update_cosine", "transfer") if k in m}
    summaries = {k: summarize(v, names, groups) for k, v in matrices.items()}
    summary = summaries["gain"]
    budget = {"steps": args.steps, "then_steps": args.then_steps, "batch": args.batch, "lr": args.lr,
              "lora_r": args.lora_r, "scale": args.scale, "limit": args.limit, "seed": args.seed}  # fmt: skip
    record = {
        "command": shlex.join(["python", "benchmarks/task_affinity.py", *argv]),
        "model": str(args.model),
        "budget": budget,
        "scenario": SCENARIO,
        "tasks": names,
        "groups": {n: groups[n] for n in names},
        "base": m["base"],
        "base_prob": m["base_prob"],
        **({"then_base": m["then_base"]} if "then_base" in m else {}),
        **matrices,
        "axes": {
            "gain": "gain[i][j]: accuracy points on tasks[j] after fine-tuning on tasks[i] only, minus base[tasks[j]]",
            "prob_gain": "prob_gain[i][j]: the same for the mean probability (points) of the right choice",
            "update_cosine": "update_cosine[i][j]: cosine between the LoRA weight updates B @ A of tasks i and j",
            "transfer": "transfer[i][j]: accuracy points on tasks[j] after then_steps steps on j from the adapter "
                        "tuned on tasks[i], minus then_base[tasks[j]] (the same steps from the fresh adapter)",
        },
        "summary": summary,
        "summaries": summaries,
        "final_loss": m["final_loss"],
        "seconds": {**m["seconds"], "total": round(time.perf_counter() - t0, 1)},
    }
    for key, sm in summaries.items():
        print(f"{key:14s} diagonal {_fmt(sm['diagonal'])}  within group {_fmt(sm['within_group'])}  "
              f"across groups {_fmt(sm['across_groups'])}  (mean off-diagonal)")  # fmt: skip
    if args.out:
        out = Path(args.out)
        atomic_write_json(out, record)
        budget_line = f"after {args.steps} steps x {args.batch}, {args.limit or 'all'} test items"
        panels = {
            "gain": (out.with_suffix(".png"), "accuracy gain over base (points)", "accuracy gain in points", TUNED_AXES),
            "prob_gain": (out.with_name(out.stem + "_prob.png"), "gain in P(right choice) (points)",
                          "gain in probability of the right choice, points", TUNED_AXES),
            "update_cosine": (out.with_name(out.stem + "_update.png"), "cosine of weight updates",
                              "cosine between the tasks' LoRA weight updates", ("task j", "task i")),
            "transfer": (out.with_name(out.stem + "_transfer.png"), "head start on j (points)",
                         f"head start from task i's adapter, after {args.then_steps} steps on j",
                         ("then tuned and evaluated on (j)", "first fine-tuned on (i)")),
        }  # fmt: skip
        panels = {k: v for k, v in panels.items() if k in matrices}
        for key, (path, label, what, axes) in panels.items():
            sm = summaries[key]
            title = (f"Task affinity ({args.model}): {what}, {budget_line}\nwithin group "
                     f"{_fmt(sm['within_group'])}, across {_fmt(sm['across_groups'])}, diagonal {_fmt(sm['diagonal'])}")  # fmt: skip
            plot_affinity(matrices[key], names, groups, path, title=title, label=label, axes=axes)
        print(f"wrote {out} and its heatmaps ({', '.join(p[0].name for p in panels.values())})")
    return record


if __name__ == "__main__":
    from drake.cli import guarded

    sys.exit(guarded(lambda: main() and None))  # a user error is one "error:" line, not a traceback
