"""The DRAKE-synth study: every method (and FedMosaic's ablations) x scenarios x seeds, resumable, each finished
run submitted to the leaderboard and the board rebuilt.

A run is one result file over all seeds (``eval.py --seeds 0 1 2``) under ``<out>/<entry>/``. A run whose
result file exists, or whose recipe (same config hash, all the seeds) is on the board already, is skipped; a
killed run continues from its last finished round (``--resume``). A run that fails (its config, a crash) is
logged with one line, its traceback in ``<out>/<entry>/error.txt``, and the study goes on. The study
log ``<out>/study.jsonl`` has one line per finished run (wall time, result, whether the board took it).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drake.errors import SpecError

#: the scenarios of the study, dynamic first (its table lands first); the last is the rank table's
SCENARIOS = ("drake-dynamic", "drake-static", "hetrank")
#: the rank-heterogeneous table: HetLoRA and FlexLoRA in their own setting (four clients at LoRA ranks 4-32)
#: beside rank-uniform references; drake-dynamic/-static give no client a rank, so there they all train r = 32
RANK_TABLE = {"hetrank": ("local", "fedavg", "fedmosaic", "hetlora", "flexlora")}
SEEDS = (0, 1, 2)
#: the methods of the protocol comparison first (docs/results.md: FedMosaic vs FedAvg, then the floor and the
#: personalized baselines)
FIRST = ("fedavg", "fedmosaic", "local", "ditto", "feddpa", "fedprox")
#: then the seed systems and the cross-architecture baselines, then the rest of the registry
NEXT = ("fedms", "fedamole", "mosaic", "feddf", "fedmkt", "takfl", "hetlora", "flexlora")
#: FedMosaic's ablations as named configs (drake/configs/), with the pool each needs: last in each scenario, so
#: that every method's row lands before them (on drake-dynamic they ran before NEXT, with the plan of the time)
ABLATIONS = {"no-rela": None, "no-pq": None, "no-align": None, "scalar-gate": None, "homo": "homo"}
#: the protocol shift itself (docs/results.md, "what the protocol changed"): FedAvg's training scored on the
#: server's average instead of each client's post-local model; on drake-dynamic only, after its ablations
SHIFTS = {"fedavg+server-global": ("fedavg", "drake-dynamic", ("engine.protocol=server-global",))}


@dataclass(frozen=True)
class StudyRun:
    """One entry of the study: a method (or a named variant of it) on one scenario and pool."""

    name: str  # e.g. "fedmosaic", "fedmosaic+no-rela"
    method: str
    scenario: str
    pool: str = "hetero"
    config: str | None = None  # a named config of drake/configs/
    sets: tuple[str, ...] = ()  # ``--set key=value`` overrides (the sensitivity sweep's points)

    @property
    def key(self) -> str:
        return f"{self.name}--{self.scenario}-{self.pool}"

    def argv(self, seeds: Sequence[int], out: Path) -> list[str]:
        args = ["--method", self.method, "--scenario", self.scenario, "--pool", self.pool,
                "--seeds", *map(str, seeds), "--out", str(out / self.key)]  # fmt: skip
        args += ["--config", self.config] if self.config else []
        return args + [arg for kv in self.sets for arg in ("--set", kv)]


def default_plan(methods: Sequence[str] | None = None, scenarios: Sequence[str] | None = None) -> list[StudyRun]:
    """Every registered method and ablation on every study scenario (the rank table's methods on its scenario);
    ``methods`` / ``scenarios`` narrow it (names as in the plan: ``fedmosaic+no-rela`` for an ablation)."""
    from drake.method_registry import METHODS
    from drake.spec import load_scenario

    registered = METHODS.names()
    names = [m for m in FIRST + NEXT if m in registered]
    names += [m for m in registered if m not in FIRST + NEXT] + [f"fedmosaic+{a}" for a in ABLATIONS]
    names += [n for n, (method, _, _) in SHIFTS.items() if method in registered]
    if methods:
        unknown = sorted(set(methods) - set(names))
        if unknown:
            raise SpecError(f"study: unknown method {', '.join(unknown)}; the plan has: {', '.join(names)}")
        names = [n for n in names if n in methods]
    chosen = list(scenarios or SCENARIOS)
    plan = []
    for scenario in chosen:
        default_pool = load_scenario(scenario).pool  # hetero for the study's scenarios, homo for hetrank
        table = RANK_TABLE.get(scenario) if not methods else None  # --methods overrides the rank table's list
        for name in names if table is None else [n for n in names if n in table]:
            if name in SHIFTS:
                method, where, sets = SHIFTS[name]
                if scenario == where:
                    plan.append(StudyRun(name, method, scenario, default_pool, sets=sets))
                continue
            method, _, ablation = name.partition("+")
            pool = (ABLATIONS[ablation] if ablation else None) or default_pool
            plan.append(StudyRun(name, method, scenario, pool, f"fedmosaic-{ablation}" if ablation else None))
    return plan


def _args(run: StudyRun, seeds: Sequence[int], out: Path, extra: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    from drake.run_options import add_run_arguments

    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    # the study's analysis reads the diagnostics that cost passes of their own (FedMosaic's Others per branch)
    argv = [*run.argv(seeds, out), *extra, "--no-progress", "--set", "engine.diagnostic_passes=true"]
    return parser.parse_args(argv), argv


def result_path(run: StudyRun, seeds: Sequence[int], out: Path, extra: Sequence[str] = ()) -> Path:
    """Where ``run``'s result file is (or will be) written: resolves the plan as eval.py does."""
    from drake.runner import plan_from_args

    args, _ = _args(run, seeds, out, extra)
    return Path(args.out) / f"{plan_from_args(args).stem}.json"


def run_study(
    plan: Sequence[StudyRun],
    seeds: Sequence[int],
    out: Path,
    *,
    board: Path | None,
    kept: Path | None = None,
    extra: Sequence[str] = (),
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run (or skip) every entry, submitting each result to ``board`` and rebuilding it; returns the log.
    ``kept``: instead of a board, a folder that gets a copy of each result (runs already there are skipped).
    ``extra``: more eval.py arguments for every run (e.g. a smaller budget with ``--set``)."""
    from tqdm.auto import tqdm

    from drake.runner import run_from_args

    out.mkdir(parents=True, exist_ok=True)
    done: list[dict[str, Any]] = []
    bar = tqdm(total=len(plan), disable=not progress, desc="study", unit="run")
    for run in plan:
        bar.set_postfix_str(run.key)
        entry: dict[str, Any] = {"run": run.key, "seeds": list(seeds)}
        t0 = time.perf_counter()
        try:  # one run's fault (its config, a crash) must not stop an unattended study: log it, go on
            path = result_path(run, seeds, out, extra)
            entry["result"] = str(path)
            if path.is_file():
                entry["status"] = "done before"
            elif board is not None and has_result(board / "results", path.name, seeds):
                entry["status"] = "on the board"
            elif kept is not None and has_result(kept, path.name, seeds):
                entry["status"] = "kept before"
            else:
                run_from_args(*_args(run, seeds, out, [*extra, "--resume"]))
                entry.update(status="ran", wall_s=round(time.perf_counter() - t0, 1))
                if kept is not None:
                    _keep(path, kept)
        except Exception as exc:
            entry.update(status="failed", error=_failure(exc, out / run.key / "error.txt"),
                         wall_s=round(time.perf_counter() - t0, 1))  # fmt: skip
        if board is not None and entry["status"] in ("ran", "done before"):
            entry["board"] = _submit(Path(entry["result"]), board)
        done.append(entry)
        _append(out / "study.jsonl", entry)
        log(f"{run.key}: {entry['status']}" + (f" in {entry['wall_s']:.0f} s" if "wall_s" in entry else "")
            + (f"; board: {entry['board']}" if "board" in entry else "")
            + (f"; {entry['error']}" if "error" in entry else ""))  # fmt: skip
        if entry.get("wall_s") is None:
            bar.total -= 1  # skipped in no time: counting it would make the ETA too short
            bar.refresh()
        else:
            bar.update(1)
    bar.close()
    return done


def _failure(exc: BaseException, where: Path) -> str:
    """One line for the log; the traceback goes to ``where`` (next to the run's files)."""
    import traceback

    from drake.io import atomic_write_text

    atomic_write_text(where, "".join(traceback.format_exception(exc)))
    detail = " ".join(str(exc).split())[:300]
    return f"{type(exc).__name__}: {detail} (traceback: {where})"


def has_result(folder: Path, name: str, seeds: Sequence[int]) -> bool:
    """Whether ``folder`` holds this recipe's result (same file name: method, scenario, config hash) with all
    of ``seeds``: a run landed by an earlier session (or machine) is not run again."""
    landed = folder / name
    if not landed.is_file():
        return False
    recorded = json.loads(landed.read_text(encoding="utf-8"))["run_info"].get("seeds") or []
    return set(seeds) <= {int(s) for s in recorded}


def seed_seconds(folders: Sequence[Path]) -> dict[tuple[str, str | None], float]:
    """Median wall time of one seed per (method, scenario), and per (method, None) over all its scenarios, from
    the result files in ``folders``: what ``--plan`` estimates a run from (the recorded machines' times, not
    necessarily this one's). A resumed seed's ``wall_seconds`` covers only the rounds after the resume, so its
    phase times (carried across the resume) count when they add up to more."""
    import statistics

    walls: dict[tuple[str, str | None], list[float]] = {}
    for folder in folders:
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
                method, scenario = record["run_info"]["method"]["name"], record["run_info"]["scenario"]["name"]
                seconds = [_seed_wall(s) for s in record["results"]["per_seed"]]
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # not a result file: the estimate just has one sample fewer
            for key in ((method, scenario), (method, None)):
                walls.setdefault(key, []).extend(w for w in seconds if w > 0)
    return {key: statistics.median(w) for key, w in walls.items() if w}


def _seed_wall(seed: dict[str, Any]) -> float:
    phases = (seed.get("extra") or {}).get("wall_by_phase") or {}
    return max(float(seed.get("wall_seconds") or 0), sum(v for k, v in phases.items() if k != "train_s_per_example"))


def _keep(result: Path, folder: Path) -> None:
    """Copy a finished result into ``folder`` (validated first), atomically."""
    from drake.io import atomic_write_text
    from drake.results import load_result

    load_result(result)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / result.name, result.read_text(encoding="utf-8"))


def _submit(path: Path, board: Path) -> str:
    """Submit ``path`` and rebuild the board; an entry already there is not an error."""
    from leaderboard.build import build
    from leaderboard.submit import SubmissionRejected, submit

    try:
        status = f"accepted as {submit(path, board).path.name}"
    except SubmissionRejected as exc:
        if {r.kind for r in exc.rejections} != {"duplicate"}:
            return "rejected: " + "; ".join(map(str, exc.rejections))[:300]
        status = "already on the board"
    build(board)
    return status


def _append(path: Path, entry: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({**entry, "at": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
