"""Versioned run records (schema 1.0): build, validate, write atomically, load, recompute summaries.

A record is plain JSON (``run_info`` / ``results`` / ``meta_info``, see ``drake/schema/result-1.0.schema.json``).
Validation goes beyond the schema: no NaN/inf anywhere, seeds match ``per_seed``, the scenario fingerprint
and ``config_hash`` match their inputs, and ``results.summary`` equals what ``drake.metrics`` recomputes
from the per-seed rounds, so a hand-edited number is caught by both `drake run` and the leaderboard.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from drake.errors import DataError, DrakeError
from drake.io import atomic_write_text
from drake.metrics import a_auc, summarize, summarize_run, summarize_seeds
from drake.spec import REPO_ROOT, fingerprint

SCHEMA_VERSION = "1.0"
SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / f"result-{SCHEMA_VERSION}.schema.json"
PACKAGES = ("drake-bench", "torch", "transformers", "peft", "datasets", "tokenizers", "safetensors", "numpy", "flwr")
_TOLERANCE = 1e-9


# ------------------------------------------------------------------------------------------- identity


def config_hash(method_config: Mapping[str, Any], scenario_fingerprint: str, data: Mapping[str, Any]) -> str:
    """16-hex sha256 prefix of (method config, scenario fingerprint, data settings).

    Run seeds are left out on purpose: records with the same recipe and different seed sets share a hash,
    so the leaderboard can compare or merge them. ``data`` (source, scale, image size, data seed) is in.
    """
    return fingerprint({"method": method_config, "scenario": scenario_fingerprint, "data": data})[:16]


def result_filename(record: Mapping[str, Any]) -> str:
    """``<method>--<scenario>-<pool>--<config_hash[:8]>.json``: one file per recipe."""
    info = record["run_info"]
    scen = info["scenario"]
    pool = f"-{scen['pool']}" if scen.get("pool") else ""
    return f"{info['method']['name']}--{scen['name']}{pool}--{info['config_hash'][:8]}.json"


# ---------------------------------------------------------------------------------------- environment


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    """HEAD of the checkout this code runs from (read-only ``git rev-parse``), None outside git."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


#: what can change the numbers of a run: code, configs, the vocabulary (the zoo's weights are pinned by hash)
CODE_PATHS = ("*.py", "*.yaml", "*.yml", "*.txt", "*.toml")


def _git_dirty() -> bool | None:
    """Whether the checkout's code differs from ``git_commit`` (edited or new files of ``CODE_PATHS``, git's
    ignore rules applied), None outside git: a run from uncommitted code cannot be reproduced from its commit."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", *(f":(top){p}" for p in CODE_PATHS)],
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=False)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


@lru_cache(maxsize=1)
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_info() -> dict[str, Any]:
    """Versions, git commit and hardware: ``{"drake_version", "git_commit", "git_dirty", "packages", "hardware",
    "platform"}``.

    Versions come from package metadata, so nothing heavy is imported; torch is asked about threads and the
    GPU only when the run already imported it.
    """
    packages = {name: _version(name) for name in PACKAGES}
    packages["python"] = platform.python_version()
    torch = sys.modules.get("torch")
    threads, gpu = os.cpu_count(), None
    if torch is not None:
        threads = torch.get_num_threads()
        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    return {
        "drake_version": packages["drake-bench"] or "0+unknown",
        "git_commit": _git_commit(),
        "git_dirty": _git_dirty(),
        "packages": packages,
        "hardware": {"cpu": _cpu_name(), "gpu": gpu, "threads": threads},
        "platform": platform.platform(),
    }


# ------------------------------------------------------------------------------------ building records


def make_record(
    *,
    command: str,
    engine: str,
    method: str,
    method_config: Mapping[str, Any],
    scenario: Any,
    data: Mapping[str, Any],
    per_seed: Sequence[Mapping[str, Any]],
    tasks: Mapping[str, Mapping[str, Any]],
    env: Mapping[str, Any] | None = None,
    created_at: str | None = None,
    models: Mapping[str, Mapping[str, str]] | None = None,
    protocol: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble a schema-1.0 record; ``config_hash`` and ``results.summary`` are computed here.

    ``scenario`` is a ``ScenarioSpec`` (or a mapping ``{name, pool, fingerprint, spec}``); ``per_seed`` the
    engine's per-seed entries; ``tasks`` ``{task: {fingerprint, data_sha256}}``; ``models`` ``{architecture:
    {path, weights_sha256}}`` (which base weights ran: a zoo name stays the same when its recipe changes);
    ``protocol`` the evaluation protocol's record (``drake.protocol.Protocol.record``).
    Not validated here: ``write_result`` validates.
    """
    env = dict(env) if env is not None else environment_info()
    if isinstance(scenario, Mapping):
        scen = dict(scenario)
    else:
        scen = {"name": scenario.name, "pool": scenario.pool, "fingerprint": scenario.fingerprint(),
                "spec": scenario.to_dict()}
    record = {
        "schema_version": SCHEMA_VERSION,
        "run_info": {
            "created_at": created_at or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "drake_version": env["drake_version"],
            "git_commit": env["git_commit"],
            **({"git_dirty": env["git_dirty"]} if env.get("git_dirty") is not None else {}),
            "engine": engine,
            "command": command,
            "method": {"name": method, "config": dict(method_config)},
            "scenario": scen,
            "seeds": [int(s["seed"]) for s in per_seed],
            "config_hash": config_hash(method_config, scen["fingerprint"], data),
            "data": dict(data),
            **({"protocol": dict(protocol)} if protocol else {}),
        },
        "results": {"summary": {}, "per_seed": list(per_seed)},
        "meta_info": {"tasks": dict(tasks), "packages": dict(env["packages"]), "hardware": dict(env["hardware"])},
    }
    if models:
        record["meta_info"]["models"] = {name: dict(m) for name, m in models.items()}
    record = json.loads(json.dumps(record))  # tuples -> lists, int keys -> str: the form that is written
    record["results"]["summary"] = recompute_summary(record, unseen=has_unseen(record))
    return record


# ------------------------------------------------------------------------------------------ summaries


def own_tasks(record: Mapping[str, Any]) -> dict[int, list[str]]:
    """``{client id: its tasks}`` from the scenario spec stored in the record."""
    clients = record["run_info"]["scenario"]["spec"].get("clients") or []
    return {int(c["id"]): list(c["tasks"]) for c in clients}


def eval_rounds(record: Mapping[str, Any]) -> tuple[list[int] | None, list[int] | None]:
    """(Self rounds, Others rounds) that A_last and A_AUC count: the recorded protocol's, else (a record
    from before protocols were recorded) the scenario's ``eval_rounds`` for both; None means every
    evaluated round."""
    protocol = record["run_info"].get("protocol")
    if protocol:
        return [int(r) for r in protocol["self_rounds"]], [int(r) for r in protocol["others_rounds"]]
    rounds = record["run_info"]["scenario"]["spec"].get("eval_rounds")
    rounds = [int(r) for r in rounds] if rounds else None
    return rounds, rounds


def per_round_scores(seed_result: Mapping[str, Any]) -> dict[int, dict[int, dict[str, float]]]:
    """``{round: {client: {task: score}}}`` of one seed, for rounds that were evaluated."""
    return {
        int(r["round"]): {int(c): dict(tasks) for c, tasks in r["eval"].items()}
        for r in seed_result.get("rounds", [])
        if r.get("eval")
    }


def seed_summaries(record: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """``{seed: drake.metrics.summarize_run(...)}`` for every successful seed."""
    own, (self_rounds, others_rounds) = own_tasks(record), eval_rounds(record)
    out = {}
    for s in record["results"]["per_seed"]:
        if s["status"] == "success":
            try:
                out[int(s["seed"])] = summarize_run(per_round_scores(s), own, self_rounds, others_rounds)
            except DataError as exc:
                raise DataError(f"seed {s['seed']}: {exc}") from None
    return out


def recompute_summary(record: Mapping[str, Any], *, unseen: bool | None = None) -> dict[str, Any]:
    """``results.summary`` recomputed from per-seed rounds with drake.metrics (failed seeds excluded).

    ``unseen`` adds the Unseen summary (``unseen_summary``); by default it is added when the stored summary
    has one, so records written before the Unseen summary existed still validate unchanged.
    """
    out = summarize_seeds(list(seed_summaries(record).values()))
    if unseen is None:
        unseen = "unseen" in (record.get("results", {}).get("summary") or {})
    if unseen:
        out["unseen"] = unseen_summary(record)
    return out


UNSEEN_STATS = ("zero_shot", "adapted", "adapted_auc")


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def unseen_seed_summary(seed_result: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """One seed's Unseen numbers: ``{"zero_shot"|"adapted"|"adapted_auc": drake.metrics.summarize(...)}``
    over clients, each client's value being its mean over the unseen tasks (zero-shot score, score after
    the adaptation steps, mean of the adaptation curve from step 0: FedMosaic's final accuracy and AUC)."""
    per_client: dict[str, dict[str, float]] = {k: {} for k in UNSEEN_STATS}
    for client, entry in (seed_result.get("final") or {}).items():
        zero = [float(v["score"]) for _, v in sorted((entry.get("unseen") or {}).items())]
        adapted = [v for _, v in sorted((entry.get("unseen_adapted") or {}).items())]
        if zero:
            per_client["zero_shot"][client] = _mean(zero)
        if adapted:
            per_client["adapted"][client] = _mean([float(v["score"]) for v in adapted])
            per_client["adapted_auc"][client] = _mean([a_auc(v["curve"]) for v in adapted])
    return {k: summarize(v) for k, v in per_client.items()}


def unseen_summary(record: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``results.summary.unseen``: mean/std over successful seeds of the per-seed client means, cells shaped
    like Self/Others (``{"mean", "std", "n" (seeds), "worst_client"}``)."""
    seeds = [unseen_seed_summary(s) for s in record["results"]["per_seed"] if s["status"] == "success"]
    out: dict[str, dict[str, Any]] = {}
    for key in UNSEEN_STATS:
        cells = [s[key] for s in seeds if s[key]["n"]]
        agg = summarize([c["mean"] for c in cells])
        worst = [c["worst"] for c in cells]
        out[key] = {"mean": agg["mean"], "std": agg["std"], "n": agg["n"], "worst_client": _mean(worst) if worst else None}
    return out


def has_unseen(record: Mapping[str, Any]) -> bool:
    """Whether any successful seed scored a client on an unseen task."""
    return any(
        entry.get("unseen") or entry.get("unseen_adapted")
        for s in record["results"]["per_seed"]
        if s["status"] == "success"
        for entry in (s.get("final") or {}).values()
    )


# ----------------------------------------------------------------------------------------- validation
#: what can be wrong with a record, in the order checked: the leaderboard rejects under these names too
PROBLEM_KINDS = ("schema_version", "non_finite", "schema", "out_of_range", "tampered", "inconsistent")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a record: a kind of ``PROBLEM_KINDS`` and a one-line ``"path: what"`` message."""

    kind: str
    message: str


@lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    return jsonschema.Draft202012Validator(schema)


def _path(parts: Sequence[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(root)"


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _non_finite(obj: Any, parts: tuple[Any, ...] = ()) -> Iterator[str]:
    if isinstance(obj, float) and not math.isfinite(obj):
        yield f"{_path(parts)}: {obj} is not allowed (NaN/inf is never a valid score or count; record null or fail the seed)"
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _non_finite(v, (*parts, str(k)))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _non_finite(v, (*parts, i))


ABSENT = object()


def summary_differences(
    recomputed: Any, stored: Any, parts: tuple[Any, ...] = ()
) -> Iterator[tuple[tuple[Any, ...], Any, Any]]:
    """``(path, recomputed, stored)`` wherever a stored summary differs from its recomputation (numbers within
    1e-9); a side missing a key holds ``ABSENT``."""
    if isinstance(recomputed, Mapping) and isinstance(stored, Mapping):
        for k in sorted(set(recomputed) | set(stored), key=str):
            a, b = recomputed.get(k, ABSENT), stored.get(k, ABSENT)
            if a is ABSENT or b is ABSENT:
                yield (*parts, k), a, b
            else:
                yield from summary_differences(a, b, (*parts, k))
    elif is_number(recomputed) and is_number(stored):
        if not math.isclose(recomputed, stored, rel_tol=_TOLERANCE, abs_tol=_TOLERANCE):
            yield parts, recomputed, stored
    elif recomputed != stored:
        yield parts, recomputed, stored


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def structure_problems(record: Mapping[str, Any]) -> list[Problem]:
    """The schema version, then NaN/inf, then the JSON schema (range violations are ``out_of_range``): a
    record with any of these cannot be read further."""
    version = record.get("schema_version")
    if version != SCHEMA_VERSION:
        got = f"{version!r}" if isinstance(version, str) or version is None else f"the {type(version).__name__} {version!r}"
        return [Problem("schema_version", f"schema_version {got} is not supported (expected the string "
                        f"{SCHEMA_VERSION!r}); re-run the entry with the current eval.py")]  # fmt: skip
    bad = [Problem("non_finite", p) for p in _non_finite(record)]
    if bad:
        return bad
    ranges = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
    errors = sorted(_validator().iter_errors(record), key=lambda e: (_path(list(e.absolute_path)), e.message))
    return [Problem("out_of_range" if e.validator in ranges else "schema",
                    f"{_path(list(e.absolute_path))}: {_short(e.message)}") for e in errors]  # fmt: skip


def content_problems(record: Mapping[str, Any]) -> list[Problem]:
    """For a structurally valid record: numbers that do not follow from the record's own inputs (the summary
    from the per-seed data, the scenario fingerprint from its spec, the config hash: ``tampered``), and when
    those hold, what does not fit together (seeds, relevance shapes, timestamps: ``inconsistent``)."""
    info, per_seed = record["run_info"], record["results"]["per_seed"]
    out = []
    try:
        recomputed = recompute_summary(record)
    except DrakeError as exc:
        out.append(Problem("inconsistent", f"results.per_seed: cannot recompute the summary ({exc})"))
    else:
        for path, new, old in summary_differences(recomputed, record["results"]["summary"], ("results", "summary")):
            if new is ABSENT or old is ABSENT:
                what = f"{_path(path)} is {'missing' if old is ABSENT else 'not a recomputed field'}"
            elif is_number(new) and is_number(old):
                what = f"{_path(path)} = {old:.10g} but the per-seed data give {new:.10g}"
            else:
                what = f"{_path(path)} = {old!r} but the per-seed data give {new!r}"
            out.append(Problem("tampered", what))
    if not out:  # the rounds hold: does ``final`` still copy them?
        out += [Problem("tampered", what) for what in final_differences(per_seed)]
    scen = info["scenario"]
    if fingerprint(scen["spec"]) != scen["fingerprint"]:
        out.append(Problem("tampered", "run_info.scenario.fingerprint: does not match the stored scenario spec "
                           "(spec edited after the run?)"))  # fmt: skip
    expected = config_hash(info["method"]["config"], scen["fingerprint"], info["data"])
    if info["config_hash"] != expected:
        out.append(Problem("tampered", f"run_info.config_hash: {info['config_hash']} != {expected} recomputed "
                           "from the method config, scenario and data settings"))  # fmt: skip
    if out:
        return out
    try:
        _dt.datetime.fromisoformat(info["created_at"])
    except ValueError:
        out.append(Problem("inconsistent", f"run_info.created_at: {info['created_at']!r} is not an ISO 8601 time"))
    seeds = [s["seed"] for s in per_seed]
    if len(set(seeds)) != len(seeds):
        out.append(Problem("inconsistent", f"results.per_seed: duplicate seeds {seeds}"))
    if sorted(seeds) != sorted(info["seeds"]):
        out.append(Problem("inconsistent", f"results.per_seed: seeds {seeds} do not match run_info.seeds {info['seeds']}"))
    for i, s in enumerate(per_seed):
        for j, rel in enumerate(s.get("relevance", [])):
            n = len(rel["clients"])
            if len(rel["matrix"]) != n or any(len(row) != n for row in rel["matrix"]):
                out.append(Problem("inconsistent", f"results.per_seed[{i}].relevance[{j}].matrix: must be {n} x {n} "
                                   "(one row per client)"))  # fmt: skip
    return out


def final_differences(per_seed: Sequence[Mapping[str, Any]]) -> Iterator[str]:
    """Where a seed's ``final`` Self/Others scores differ from its last evaluated round, which they copy (the
    summary is recomputed from the rounds, so an edit of ``final`` alone would otherwise go unseen)."""
    for i, s in enumerate(per_seed):
        if s["status"] != "success":
            continue
        last = next((r["eval"] for r in reversed(s.get("rounds") or []) if r.get("eval")), {})
        for client, entry in (s.get("final") or {}).items():
            for kind in ("own", "others"):
                for task, cell in (entry.get(kind) or {}).items():
                    expected = (last.get(client) or {}).get(task)
                    if expected is None or not math.isclose(cell["score"], expected, rel_tol=_TOLERANCE, abs_tol=_TOLERANCE):
                        yield (f"results.per_seed[{i}].final.{client}.{kind}.{task}.score = {cell['score']:.10g} but the "
                               f"last evaluated round gives {'nothing' if expected is None else f'{expected:.10g}'}")  # fmt: skip


def check_result(record: Mapping[str, Any]) -> list[Problem]:
    """Every problem of a parsed record (``structure_problems``, then ``content_problems``); empty = valid.
    ``drake run`` checks each record before writing it and the leaderboard before accepting one."""
    return structure_problems(record) or content_problems(record)


def validate_result(obj: Any) -> list[str]:
    """``check_result``'s messages for an object about to be written (or just read); empty means valid."""
    try:
        doc = json.loads(json.dumps(obj))  # validate exactly what would be written (int keys become str)
    except (TypeError, ValueError) as exc:
        return [*_non_finite(obj), f"(root): not JSON-serialisable ({exc})"]
    return [p.message for p in check_result(doc)]


def _first(problems: list[str]) -> str:
    more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{problems[0]}{more}"


def write_result(path: str | Path, record: Mapping[str, Any]) -> Path:
    """Validate, then write atomically; an invalid record raises DataError and leaves ``path`` untouched."""
    problems = validate_result(record)
    if problems:
        raise DataError(f"{path}: invalid result record: {_first(problems)}; fix the record or the engine")
    doc = json.loads(json.dumps(record))
    return atomic_write_text(path, json.dumps(doc, indent=2, sort_keys=True, allow_nan=False) + "\n")


def load_result(path: str | Path, *, validate: bool = True) -> dict[str, Any]:
    """Read a record; missing file, bad JSON or (with ``validate``) an invalid record raise DataError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: result file not found; check the path or run eval.py first") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read result file ({exc})") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON ({exc.msg})") from None
    if validate:
        problems = validate_result(record)
        if problems:
            raise DataError(f"{path}: invalid result record: {_first(problems)}")
    return record
