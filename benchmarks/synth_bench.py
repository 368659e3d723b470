"""DRAKE-synth generation speed (a script, not a timed test): CPU milliseconds per sample, task by task.

Every task of ``tasks.yaml`` with a synth source is built sample by sample through its family, as the
dataset builder does. The first sample is timed on its own (cold: first file reads, e.g. easy-VQA's PNGs,
and family caches); the next ``--n`` are the warm rate, in CPU time and in wall time (the gap is waiting on
disk: easy-VQA images are read per sample). Goal: every task under 6 ms of CPU a warm sample, so a full
build (a few thousand rows a task) stays a matter of seconds per task. This replaces a timed test that
failed CI on a slow disk (mantis_cc_0: 18 ms wall a sample there, 0.5 ms CPU here).

    python benchmarks/synth_bench.py            # all tasks, 200 warm samples each
    python benchmarks/synth_bench.py --n 50 --task mantis_cc_0 --task vsr_0
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import drake.data.synth.families  # noqa: E402,F401  (registers the families)
from drake.data.synth.base import FAMILIES, SampleContext  # noqa: E402
from drake.spec import TaskSpec, load_tasks  # noqa: E402

GOAL_MS = 6.0


def sample(spec: TaskSpec, index: int, split: str, size: int) -> None:
    """One sample of ``spec``'s synth family, as the dataset builder makes it."""
    src = spec.sources["synth"]
    FAMILIES.get(src.family)(SampleContext(spec.name, split, index, 0, size, spec.images), **src.params)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="warm samples timed per task (default 200)")
    ap.add_argument("--task", action="append", default=[], help="only this task (repeatable; default: all)")
    ap.add_argument("--size", type=int, default=32, help="image side in pixels (default 32, as the default run)")
    a = ap.parse_args()
    specs = {name: spec for name, spec in load_tasks().items() if "synth" in spec.sources}
    unknown = [t for t in a.task if t not in specs]
    if unknown:
        print(f"error: no synth task named {', '.join(unknown)}; see tasks.yaml", file=sys.stderr)
        return 2
    names = a.task or sorted(specs)
    print(f"DRAKE-synth generation: {len(names)} tasks, {a.n} warm samples each, {a.size} px, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'task':22s} {'cold ms':>8s} {'warm ms':>8s} {'wall ms':>8s} {'/ goal':>7s}")
    worst = 0.0
    for name in names:
        t = time.process_time()
        sample(specs[name], 0, "bench-cold", a.size)
        cold = (time.process_time() - t) * 1000
        t, w = time.process_time(), time.perf_counter()
        for i in range(a.n):
            sample(specs[name], i, "bench", a.size)
        warm = (time.process_time() - t) / a.n * 1000
        wall = (time.perf_counter() - w) / a.n * 1000
        worst = max(worst, warm / GOAL_MS)
        print(f"{name:22s} {cold:8.2f} {warm:8.2f} {wall:8.2f} {warm / GOAL_MS:7.2f}")
    print(f"worst warm ms / {GOAL_MS:g} ms goal: {worst:.2f} -> {'OK' if worst <= 1 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
