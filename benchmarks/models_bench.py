"""Benchmark of the tiny model zoo (not a timed test): one process per member, so peak RSS is per member.

Per member: parameters (vision / projector / text), layers x hidden, train-step time and tokens/s (batch of
public samples, forward + backward + AdamW), evaluation answers/s (multiple-choice scoring and greedy
generation), and, from the pre-training record, steps, minutes and held-out accuracy per question type.

    python benchmarks/models_bench.py                      # members already pre-trained (or random init)
    python benchmarks/models_bench.py --pretrain           # pre-train missing members first (the cache)
    python benchmarks/models_bench.py --pretrain --home /tmp/zoo --jobs 4 --set tiny-llama-m:steps=1200

Numbers depend on the load of the machine: the load average is printed next to them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _overrides(items: list[str], name: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        target, _, kv = item.partition(":")
        if target not in (name, "all"):
            continue
        key, _, value = kv.partition("=")
        out[key] = json.loads(value) if value[:1].isdigit() or value[:1] in "-[{" else value
    return out


def worker(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from drake.models.batching import collate
    from drake.models.folders import cached_path, is_cached, read_meta
    from drake.models.pretrain import draw_rows, eval_rows, pretrain
    from drake.models.scoring import choice_scores, generate_answers
    from drake.models.tokenizer import default_vocab, make_tokenizer
    from drake.models.zoo import build_model, count_parameters, get_spec

    torch.set_num_threads(args.threads)
    spec = get_spec(args.worker).with_overrides(**_overrides(args.set, args.worker))
    home = Path(args.home) if args.home else None
    vocab = default_vocab()
    path = cached_path(spec, vocab, home)
    if args.pretrain and not is_cached(path):
        pretrain(
            spec,
            home=home,  # at the recipe's one thread (RECIPE_THREADS): --threads is for the timings only
            progress=not args.quiet,
            eval_every=args.eval_every,
            log=lambda m: print(m, file=sys.stderr, flush=True),
        )
    meta = read_meta(path) if is_cached(path) else None
    if meta is not None:
        from drake.models.loading import load_model

        loaded = load_model(path, device="cpu")
        model, processor = loaded.model, loaded.processor
    else:
        model, processor = build_model(spec, make_tokenizer(vocab), seed=0)
    params = count_parameters(model)

    # train-step time on fresh public batches (same shapes as pre-training)
    rows = draw_rows("train", 64 * (args.timing_steps + 3), 1, spec.image_size)
    for name, p in model.named_parameters():  # as in pre-training: a member with a tower donor freezes it
        p.requires_grad_(spec.tower is None or "vision_tower" not in name)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4)
    model.train()
    times, tokens = [], 0
    for i in range(args.timing_steps + 3):
        batch = collate(processor, rows[64 * i : 64 * (i + 1)])
        t = time.perf_counter()
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 3:
            times.append(time.perf_counter() - t)
            tokens += int(batch["attention_mask"].sum())
    model.eval()
    step_s = sum(times) / len(times)

    held = eval_rows(args.eval_items, 7, spec.image_size)
    t = time.perf_counter()
    choice_scores(processor, held, model=model, batch_size=64)
    mc_rate = len(held) / (time.perf_counter() - t)
    open_rows = [dict(r, choices=None) for r in held[:64]]
    t = time.perf_counter()
    generate_answers(processor, open_rows, model=model, batch_size=32, max_new_tokens=8)
    gen_rate = len(open_rows) / (time.perf_counter() - t)
    return {
        "name": spec.name,
        "params": params,
        "layers": spec.text_layers,
        "hidden": spec.text_hidden,
        "vision": f"{spec.vision} h{spec.vision_hidden} L{spec.vision_layers}",
        "step_s": round(step_s, 4),
        "tokens_per_s": round(tokens / sum(times)),
        "mc_answers_per_s": round(mc_rate, 1),
        "gen_answers_per_s": round(gen_rate, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "pretrain": None
        if meta is None
        else {
            "steps": meta["spec"]["recipe"]["steps"],
            "minutes": round(meta["train_seconds"] / 60, 2),
            "seconds_per_step": meta["seconds_per_step"],
            "load_average": meta.get("load_average"),
            "accuracy": meta["heldout_accuracy"],
            "curve": meta.get("curve"),
        },
        "threads": args.threads,
        "load_average": round(os.getloadavg()[0], 2),
    }


def _table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| member | params | vision | text L x h | step s | tokens/s | MC answers/s | gen answers/s | peak RSS MB "
        "| pre-train steps | minutes | held-out acc |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        p = r["pretrain"] or {}
        acc = p.get("accuracy", {}).get("overall")
        lines.append(
            f"| {r['name']} | {r['params']['total'] / 1e6:.2f}M | {r['vision']} | {r['layers']} x {r['hidden']} "
            f"| {r['step_s']:.3f} | {r['tokens_per_s']} | {r['mc_answers_per_s']} | {r['gen_answers_per_s']} "
            f"| {r['peak_rss_mb']} | {p.get('steps', '-')} | {p.get('minutes', '-')} "
            f"| {'-' if acc is None else f'{acc:.3f}'} |"
        )
    qtypes = sorted(
        {q for r in results for q in (r["pretrain"] or {}).get("accuracy", {})} - {"overall", "chance"}
    )
    if qtypes:
        lines += [
            "",
            "| member | " + " | ".join(qtypes) + " | overall | chance |",
            "|---|" + "---|" * (len(qtypes) + 2),
        ]
        for r in results:
            acc = (r["pretrain"] or {}).get("accuracy")
            if acc:
                cells = [f"{acc.get(q, float('nan')):.2f}" for q in (*qtypes, "overall", "chance")]
                lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="all", help="comma-separated zoo names or 'all'")
    ap.add_argument("--pretrain", action="store_true", help="pre-train members that are not cached yet")
    ap.add_argument("--home", default=None, help="cache root (default: $DRAKE_HOME/models or .drake/models)")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch threads of the timings")
    ap.add_argument("--jobs", type=int, default=1, help="members run in parallel (one process each)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE",
        help="override a spec/recipe field of one member (or all:KEY=VALUE)",
    )
    ap.add_argument("--timing-steps", type=int, default=10, help="timed train steps per member")
    ap.add_argument("--eval-items", type=int, default=300, help="held-out public items scored per member")
    ap.add_argument("--eval-every", type=int, default=0, help="record a held-out curve while pre-training")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--quiet", action="store_true", help="no progress output")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return 0

    from drake.models.zoo import ZOO

    names = sorted(ZOO) if args.models == "all" else args.models.split(",")
    base = [
        sys.executable,
        __file__,
        "--threads",
        str(args.threads),
        "--timing-steps",
        str(args.timing_steps),
        "--eval-items",
        str(args.eval_items),
        "--eval-every",
        str(args.eval_every),
    ]
    base += ["--home", args.home] if args.home else []
    base += ["--pretrain"] if args.pretrain else []
    base += ["--quiet"] if args.quiet else []
    for s in args.set:
        base += ["--set", s]
    t0 = time.perf_counter()
    results, pending = [], list(names)
    running: list[tuple[str, subprocess.Popen]] = []
    while pending or running:
        while pending and len(running) < args.jobs:
            name = pending.pop(0)
            running.append(
                (name, subprocess.Popen([*base, "--worker", name], stdout=subprocess.PIPE, text=True))
            )
        name, proc = running.pop(0)
        out, _ = proc.communicate()
        found = [line[7:] for line in out.splitlines() if line.startswith("RESULT ")]
        if proc.returncode or not found:
            print(f"{name}: worker failed (exit {proc.returncode})", file=sys.stderr)
            return 1
        results.append(json.loads(found[-1]))
    results.sort(key=lambda r: names.index(r["name"]))
    print(f"# models_bench: {' '.join(sys.argv[1:]) or '(defaults)'}")
    print(
        f"# threads per member {args.threads}, jobs {args.jobs}, cpus {os.cpu_count()}, "
        f"load average {os.getloadavg()[0]:.2f}, wall {time.perf_counter() - t0:.0f} s"
    )
    print(_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
