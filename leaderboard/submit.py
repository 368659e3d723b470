"""Accept a result into the leaderboard store only when every number in it can be verified.

``check_record`` says why a record cannot be accepted, one ``Rejection`` per problem, in a fixed order of
classes: unreadable, schema_version, non_finite, unsafe_name, schema / out_of_range, tampered / inconsistent,
protocol (none recorded), zoo (a zoo member whose weights are not the canonical zoo's), seeds, fingerprint,
data_hash, duplicate (same method, config hash and a shared seed). ``submit`` runs it and
writes the record into ``<board>/results/`` atomically without ever replacing a file (hard link of a fsynced
temp file), under an exclusive lock on the store directory, so concurrent or killed submits never leave a
partial or edited file behind.

Records come from strangers (a pull-request bot may run ``drake submit``), so every name that becomes part of
a stored file name or of a rendered page (method, scenario, pool, the clients' architectures) must be a plain
``NAME_PATTERN`` name, checked before anything is written and again by ``leaderboard build``; the stored path
must resolve inside the store (``store_path``), and the build refuses any file in the store that submit did
not write (``check_store``).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drake.errors import DataError, DrakeError
from drake.io import write_new_bytes
from drake.results import (
    Problem,
    content_problems,
    result_filename,
    structure_problems,
    summary_differences,
)
from drake.spec import REPO_ROOT, TaskTable, fingerprint, load_tasks

DEFAULT_BOARD = REPO_ROOT / "leaderboard"
MIN_SEEDS = 3
RESULTS = "results"
KINDS = (
    "unreadable", "schema_version", "non_finite", "unsafe_name", "schema", "out_of_range", "tampered",
    "inconsistent", "protocol", "zoo", "seeds", "fingerprint", "data_hash", "duplicate",
)  # fmt: skip


# A name that becomes part of a file name or a page: letters, digits, '.', '_', '-'; no '..', no separator, no
# markup, at most 64 characters, starting with a letter or digit. drake/schema/result-1.0.schema.json carries
# the same pattern for the method, scenario and pool names (checked here too: jsonschema's ``$`` would let a
# trailing newline through, ``re.fullmatch`` does not).
NAME_PATTERN = r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# An architecture as the board shows it: such a name, or a hub id with one ``owner/`` before it.
ARCHITECTURE_PATTERN = r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._-]{0,63}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$"
# A stored file: ``results.result_filename`` of safe names (a plain name, at most 255 bytes).
FILE_PATTERN = r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._-]{0,249}\.json$"
# The temp file of a submit killed before its link (``drake.io``): the build ignores it, the next submit removes it.
TEMP_PATTERN = r"^\.[A-Za-z0-9][A-Za-z0-9._-]*\.json\.[A-Za-z0-9_]+\.tmp$"
KEEP_FILES = (".gitkeep",)  # lets git keep an empty store


@dataclass(frozen=True)
class Rejection:
    """One reason a record cannot be accepted: a class from ``KINDS`` and a one-line message."""

    kind: str
    message: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.message}"


class SubmissionRejected(DrakeError):
    """A submitted result failed verification; ``rejections`` holds every reason found."""

    def __init__(self, path: str | Path, rejections: Sequence[Rejection]) -> None:
        self.path, self.rejections = Path(path), list(rejections)
        more = f" (+{len(rejections) - 1} more: {', '.join(sorted({r.kind for r in rejections[1:]}))})"
        super().__init__(f"rejected {path}: {rejections[0]}{more if len(rejections) > 1 else ''}")


def results_dir(board: str | Path) -> Path:
    return Path(board) / RESULTS


# ------------------------------------------------------------------------------------------ reading


def read_record(path: str | Path) -> tuple[dict[str, Any] | None, Rejection | None]:
    """The parsed record, or why it cannot be read (missing, not UTF-8, not JSON, not an object)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, Rejection("unreadable", f"{path}: file not found")
    except (OSError, UnicodeDecodeError) as exc:
        return None, Rejection("unreadable", f"{path}: cannot read ({exc})")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, Rejection("unreadable", f"{path}:{exc.lineno}:{exc.colno}: invalid JSON ({exc.msg})")
    if not isinstance(record, dict):
        return None, Rejection("unreadable", f"{path}: expected a JSON object, got {type(record).__name__}")
    return record, None


def _rejections(problems: Sequence[Problem]) -> list[Rejection]:
    return [Rejection(p.kind, p.message) for p in problems]


def _compute_ratios(record: Mapping[str, Any]) -> list[Rejection]:
    out = []
    for s in record["results"]["per_seed"]:
        ratio = (s.get("extra") or {}).get("compute_ratio_to_local")
        if ratio is not None and (
            isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio <= 0
        ):
            out.append(Rejection("out_of_range", f"seed {s['seed']}: extra.compute_ratio_to_local {ratio!r} must "
                                 "be a positive number"))  # fmt: skip
    return out


def architecture_name(model: str) -> str:
    """How the board shows a client's model: a zoo name or hub id as is, a local path by its folder name."""
    return Path(model).name if model.startswith(("/", ".", "~")) else model


def is_safe_name(value: Any, pattern: str = NAME_PATTERN) -> bool:
    return isinstance(value, str) and re.fullmatch(pattern, value) is not None


def unsafe_names(record: Any) -> list[Rejection]:
    """Every name of ``record`` that would become part of a stored file name or a page and is not a plain
    name (path traversal, an absolute path, a separator, markup, a control character, too long).

    Values that are missing or not strings are left to the schema check."""
    info = record.get("run_info") if isinstance(record, Mapping) else None
    if not isinstance(info, Mapping):
        return []
    method = info.get("method") if isinstance(info.get("method"), Mapping) else {}
    scen = info.get("scenario") if isinstance(info.get("scenario"), Mapping) else {}
    spec = scen.get("spec") if isinstance(scen.get("spec"), Mapping) else {}
    clients = spec.get("clients") if isinstance(spec.get("clients"), list) else []
    named = [("run_info.method.name", method.get("name"), NAME_PATTERN),
             ("run_info.scenario.name", scen.get("name"), NAME_PATTERN)]  # fmt: skip
    if scen.get("pool") != "":  # no pool: the file name and the page leave it out
        named.append(("run_info.scenario.pool", scen.get("pool"), NAME_PATTERN))
    for i, client in enumerate(clients):
        model = client.get("model") if isinstance(client, Mapping) else None
        if isinstance(model, str):
            where = f"run_info.scenario.spec.clients[{i}].model"
            named.append((where, architecture_name(model), ARCHITECTURE_PATTERN))
    out, seen = [], set()
    for where, value, pattern in named:
        if not isinstance(value, str) or is_safe_name(value, pattern) or (value, pattern) in seen:
            continue
        seen.add((value, pattern))
        hub = " (an architecture may be a hub id: owner/name)" if pattern == ARCHITECTURE_PATTERN else ""
        out.append(Rejection("unsafe_name", f"{where} {value!r:.80} is not a plain name: it becomes part of a file "
                             "name and a web page, so use at most 64 letters, digits, '.', '_' or '-', starting "
                             f"with a letter or digit, without '..'{hub}"))  # fmt: skip
    return out


def _protocol(record: Mapping[str, Any]) -> list[Rejection]:
    if record["run_info"].get("protocol"):
        return []
    return [Rejection("protocol", "no evaluation protocol recorded (a result from before drake/protocol.py): the "
                      "board never ranks numbers whose protocol it cannot tell; rerun it")]  # fmt: skip


def zoo_problems(record: Mapping[str, Any]) -> list[str]:
    """Why the record's zoo members are not the canonical zoo's weights (the shipped, sha256-pinned zoo of
    this version of DRAKE); empty when they are, or when the record uses no zoo member (real checkpoints)."""
    from drake.models.zoo import ZOO
    from drake.models.zoo_manifest import read_manifest

    version = read_manifest()["zoo_version"]
    models = record.get("meta_info", {}).get("models") or {}
    archs = sorted({str(c["model"]) for c in record["run_info"]["scenario"]["spec"]["clients"] if c.get("model")})
    out = []
    for arch in archs:
        zoo = (models.get(arch) or {}).get("zoo")
        if not zoo:
            if arch in ZOO:
                out.append(f"{arch}: no zoo provenance recorded (a result from before the zoo shipped); rerun it")
        elif not zoo.get("shipped"):
            if zoo.get("member") or arch in ZOO:
                out.append(f"{arch}: not the shipped weights of zoo {version} (a re-trained or edited member)")
        elif zoo.get("zoo_version") != version:
            out.append(f"{arch}: zoo {zoo.get('zoo_version')}, this board ranks zoo {version}")
    return out


def _zoo(record: Mapping[str, Any]) -> list[Rejection]:
    problems = zoo_problems(record)
    if not problems:
        return []
    more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
    return [Rejection("zoo", f"{problems[0]}{more}; official entries run on the canonical zoo (or submit with "
                      "--unofficial: the board keeps such entries in tables of their own)")]  # fmt: skip


def successful_seeds(record: Mapping[str, Any]) -> list[int]:
    return sorted(int(s["seed"]) for s in record["results"]["per_seed"] if s["status"] == "success")


def _seeds(record: Mapping[str, Any], min_seeds: int) -> list[Rejection]:
    ok = successful_seeds(record)
    if len(ok) >= min_seeds:
        return []
    failed = [s["seed"] for s in record["results"]["per_seed"] if s["status"] != "success"]
    why = f" (seeds {failed} failed)" if failed else ""
    return [Rejection("seeds", f"{len(ok)} successful seed(s) {ok}{why}; official entries need at least {min_seeds}: "
                      f"run eval.py with --seeds 0 1 2 (or submit with --unofficial)")]  # fmt: skip


def scenario_tasks(record: Mapping[str, Any]) -> list[str]:
    """Tasks the record's scenario trains or evaluates on (clients' tasks, then unseen ones)."""
    spec = record["run_info"]["scenario"]["spec"]
    names = [t for c in spec.get("clients", []) for t in c.get("tasks", [])] + list(spec.get("unseen") or [])
    return list(dict.fromkeys(names))


def _fingerprints(record: Mapping[str, Any], tasks: TaskTable) -> list[Rejection]:
    meta = record["meta_info"]["tasks"]
    out = [Rejection("fingerprint", f"task {t!r}: the scenario uses it but meta_info.tasks has no fingerprint for it")
           for t in scenario_tasks(record) if t not in meta]  # fmt: skip
    for name, entry in sorted(meta.items()):
        if name not in tasks:
            out.append(
                Rejection("fingerprint", f"task {name!r}: not in {tasks.path} (a renamed or removed task)")
            )
        elif entry["fingerprint"] != tasks[name].fingerprint():
            out.append(Rejection("fingerprint", f"task {name!r}: fingerprint {entry['fingerprint'][:12]}... differs "
                                 f"from {tasks.path.name} ({tasks[name].fingerprint()[:12]}...): the task definition "
                                 "changed since the run; re-run it"))  # fmt: skip
    return out


def default_manifest_dir(record: Mapping[str, Any]) -> Path | None:
    """The default build directory for the record's data settings, when numeric settings allow one."""
    from drake.data.build import default_data_dir

    try:  # a malformed record has none: the schema check says why
        data = record["run_info"]["data"]
        return default_data_dir(
            float(data["scale"]), int(data["image_size"]), int(data["seed"]), str(data["source"])
        )
    except (KeyError, TypeError, ValueError):
        return None


def _data_hashes(record: Mapping[str, Any], manifest_dir: Path | None) -> list[Rejection]:
    """Every task's recorded file sha256s against a build manifest (when one is available)."""
    meta = record["meta_info"]["tasks"]
    out = [Rejection("data_hash", f"task {t!r}: no data sha256 recorded, so its data cannot be verified; "
                     "re-run with eval.py, which records them") for t, e in sorted(meta.items())
           if e["data_sha256"] is None]  # fmt: skip
    if out or manifest_dir is None:
        return out
    try:
        manifest = json.loads((manifest_dir / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        return [
            Rejection("data_hash", f"{manifest_dir}/manifest.json: cannot read the build manifest ({exc})")
        ]
    data, params = record["run_info"]["data"], manifest.get("params") or {}
    differ = [
        k for k in ("source", "scale", "image_size", "seed") if k in params and params[k] != data.get(k)
    ]
    if differ:
        detail = ", ".join(f"{k}={data.get(k)!r} vs {params[k]!r}" for k in differ)
        return [Rejection("data_hash", f"{manifest_dir}: built with other data settings than the run ({detail}); "
                          "pass --data-dir of a build with the run's settings")]  # fmt: skip
    for name, entry in sorted(meta.items()):
        built = (manifest.get("tasks") or {}).get(name)
        if built is None:
            out.append(Rejection("data_hash", f"task {name!r}: not in the build at {manifest_dir}; build it "
                                 f"(drake build --tasks {name} --out {manifest_dir}) to verify its data"))  # fmt: skip
            continue
        files = {f["path"]: f["sha256"] for f in built["files"].values()}
        recorded = entry["data_sha256"]
        if isinstance(recorded, str):  # one digest: the fingerprint of {path: sha256} of the task's files
            if recorded != fingerprint(files):
                out.append(Rejection("data_hash", f"task {name!r}: data sha256 {recorded[:12]}... does not match "
                                     f"the build at {manifest_dir}"))  # fmt: skip
            continue
        for rel, digest in sorted(recorded.items()):
            if rel not in files:
                out.append(
                    Rejection(
                        "data_hash", f"task {name!r}, file {rel}: not in the build manifest at {manifest_dir}"
                    )
                )
            elif files[rel] != digest:
                out.append(Rejection("data_hash", f"task {name!r}, file {rel}: sha256 {digest[:12]}... != "
                                     f"{files[rel][:12]}... in {manifest_dir}/manifest.json"))  # fmt: skip
    return out


def recipe(record: Mapping[str, Any]) -> tuple[str, str]:
    """``(method, config_hash)``: the method name is part of the identity because ``config_hash`` covers
    only the method's config, and two methods can share one (fedavg and local do)."""
    return record["run_info"]["method"]["name"], record["run_info"]["config_hash"]


def recipe_twins(record: Mapping[str, Any], accepted: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, list[int]]]:
    """``(file name, shared seeds)`` of each accepted file of the same recipe that shares a seed with ``record``."""
    seeds = set(record["run_info"]["seeds"])
    out = []
    for name, other in sorted(accepted.items()):
        same = sorted(seeds & set(other["run_info"]["seeds"]))
        if recipe(other) == recipe(record) and same:
            out.append((name, same))
    return out


def _duplicates(record: Mapping[str, Any], accepted: Mapping[str, Mapping[str, Any]]) -> list[Rejection]:
    """Same method and config hash with an overlapping seed set as an accepted file: the same runs twice."""
    method, chash = recipe(record)
    return [Rejection("duplicate", f"{method} with config hash {chash} and seeds {same} is already accepted as "
                      f"{name}; run other seeds or change the recipe") for name, same in recipe_twins(record, accepted)]  # fmt: skip


def check_record(
    record: Any,
    *,
    tasks: TaskTable | None = None,
    manifest_dir: str | Path | None = None,
    min_seeds: int = MIN_SEEDS,
    accepted: Mapping[str, Mapping[str, Any]] | None = None,
    canonical: bool = True,
) -> list[Rejection]:
    """Every reason ``record`` cannot be accepted; empty means it can.

    Structural problems (version, NaN/inf, schema) stop the check, since nothing after them can be trusted;
    the rest are all reported. ``manifest_dir`` (a built data directory) enables the data-hash check;
    ``accepted`` (``{file name: record}``) the duplicate check; ``canonical`` the canonical-zoo check (off
    for ``--unofficial`` entries).
    """
    if not isinstance(record, Mapping):
        return [Rejection("unreadable", f"expected a JSON object, got {type(record).__name__}")]
    out = _rejections(structure_problems(record))  # drake/results.py: the checks every record passes
    if out and out[0].kind in ("schema_version", "non_finite"):
        return out
    out = unsafe_names(record) + out  # before the schema's own pattern errors, which say less
    if out:
        return out
    out = _rejections(content_problems(record)) + _compute_ratios(record)
    out += _protocol(record)
    out += _zoo(record) if canonical else []
    out += _seeds(record, min_seeds)
    out += _fingerprints(record, tasks if tasks is not None else load_tasks())
    out += _data_hashes(record, Path(manifest_dir) if manifest_dir is not None else None)
    out += _duplicates(record, accepted or {})
    return out


# --------------------------------------------------------------------------------------------- store


@contextmanager
def store_lock(store: Path) -> Iterator[None]:
    """An exclusive lock on the store directory itself (no lock file is left in the repository)."""
    store.mkdir(parents=True, exist_ok=True)
    fd = os.open(store, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def store_path(store: Path, name: str) -> Path:
    """``store / name``, or a DataError unless ``name`` is one plain file name that resolves inside ``store``
    (no separator, no '..', no symlink out): the last guard before anything is written."""
    target = store / name
    inside = is_safe_name(name, FILE_PATTERN) and target.resolve().parent == store.resolve()
    if not inside or target.is_symlink():
        raise DataError(f"{name!r:.120}: not a plain file name inside {store}; nothing was written")
    return target


def expected_names(record: Mapping[str, Any]) -> tuple[str, str]:
    """The names ``submit`` may give ``record`` in the store: its recipe's, or that with its seeds."""
    name = result_filename(record)
    seeds = "-".join(map(str, sorted(record["run_info"]["seeds"])))
    return name, f"{name.removesuffix('.json')}--seeds-{seeds}.json"


def check_store(board: str | Path) -> None:
    """A DataError naming the first entry of ``<board>/results`` that submit did not write: a folder, a
    link, a file that is not a result (by name), or a temp file of another name. A killed submit's temp
    file and ``.gitkeep`` are fine. (Whether a result's name matches its record: ``verified_records``.)"""
    store = results_dir(board)
    if not store.is_dir():
        return
    for entry in sorted(store.iterdir()):
        plain = entry.is_file() and not entry.is_symlink()
        if plain and (entry.name in KEEP_FILES or is_safe_name(entry.name, TEMP_PATTERN)):
            continue
        what = ("a link" if entry.is_symlink() else "a folder" if entry.is_dir() else "not a plain file" if not plain
                else None if is_safe_name(entry.name, FILE_PATTERN) else "not a result file name")  # fmt: skip
        if what:
            raise DataError(f"{entry}: cannot be attributed to an accepted result ({what}); the store holds only "
                            "files written by `drake submit`: remove it, or restore the store from version control")  # fmt: skip


def accepted_files(board: str | Path) -> list[Path]:
    """The store's accepted files, by name (temp files of an interrupted submit start with '.')."""
    store = results_dir(board)
    return sorted(p for p in store.glob("*.json") if not p.name.startswith(".")) if store.is_dir() else []


def load_accepted(board: str | Path) -> dict[str, dict[str, Any]]:
    """``{file name: record}`` of the store; an unreadable accepted file is a DataError naming it."""
    out = {}
    for path in accepted_files(board):
        record, why = read_record(path)
        if why is not None or record is None:
            raise DataError(f"{why}; accepted files must never be edited: restore it from version control")
        out[path.name] = record
    return out


def store_name(record: Mapping[str, Any], taken: Sequence[str]) -> str:
    """``results.result_filename``; a second seed set of the same recipe gets ``--seeds-<seeds>``."""
    name, with_seeds = expected_names(record)
    return name if name not in taken else with_seeds


@dataclass(frozen=True)
class Verified:
    """A result that passed every check: the store name it has (``on_board``) or would get, and the build its
    data hashes were checked against (if any)."""

    name: str  # the accepted file of the same recipe, else the name it would be stored under
    on_board: bool  # the file is that accepted file
    manifest_dir: Path | None
    differences: list[str] | None = None  # against the accepted file of its recipe (None: there is none)


@dataclass(frozen=True)
class Accepted:
    """Where an accepted result was stored, and the build its data hashes were checked against (if any)."""

    path: Path
    manifest_dir: Path | None


def resolve_manifest_dir(record: Mapping[str, Any], data_dir: str | Path | None) -> Path | None:
    """``data_dir`` (which must hold a manifest), else the record's default build when it exists, else None."""
    if data_dir is not None:
        if not (Path(data_dir) / "manifest.json").is_file():
            raise DataError(
                f"--data-dir {data_dir}: no manifest.json there; give a directory built by `drake build`"
            )
        return Path(data_dir)
    default = default_manifest_dir(record) if isinstance(record.get("run_info"), Mapping) else None
    return default if default is not None and (default / "manifest.json").is_file() else None


def _readable(path: str | Path) -> dict[str, Any]:
    """The record at ``path``, or SubmissionRejected (unreadable, or an unsafe name, checked before the store
    is created or locked)."""
    record, why = read_record(path)
    if why is not None or record is None:
        raise SubmissionRejected(path, [why or Rejection("unreadable", str(path))])
    unsafe = unsafe_names(record)
    if unsafe:
        raise SubmissionRejected(path, unsafe)
    return record


def _refuse_problems(
    path: str | Path,
    record: Mapping[str, Any],
    *,
    tasks: TaskTable | None,
    manifest_dir: Path | None,
    min_seeds: int,
    unofficial: bool,
    accepted: Mapping[str, Mapping[str, Any]],
) -> None:
    """SubmissionRejected with every problem of ``record`` (``check_record``); an ``unofficial`` entry needs one
    seed and may run on other weights than the canonical zoo."""
    problems = check_record(record, tasks=tasks, manifest_dir=manifest_dir, min_seeds=1 if unofficial else min_seeds,
                            accepted=accepted, canonical=not unofficial)  # fmt: skip
    if problems:
        raise SubmissionRejected(path, problems)


def verify(
    path: str | Path,
    board: str | Path = DEFAULT_BOARD,
    *,
    tasks: TaskTable | None = None,
    data_dir: str | Path | None = None,
    min_seeds: int = MIN_SEEDS,
    unofficial: bool = False,
) -> Verified:
    """Every check ``submit`` runs, writing nothing (``drake submit --check``). A file of a recipe on the board
    (the accepted file itself, or a rerun sharing a seed) is not a duplicate here: it is compared with that
    accepted file (``Verified.differences``). Raises SubmissionRejected."""
    record = _readable(path)
    manifest_dir = resolve_manifest_dir(record, data_dir)
    accepted = load_accepted(board)
    same = next((name for name, other in sorted(accepted.items()) if other == record), None)
    try:  # the accepted file of the same recipe and a shared seed (a malformed record has none: check_record says why)
        twin = same or next((name for name, _ in recipe_twins(record, accepted)), None)
    except (KeyError, TypeError):
        twin = None
    _refuse_problems(path, record, tasks=tasks, manifest_dir=manifest_dir, min_seeds=min_seeds, unofficial=unofficial,
                     accepted={k: v for k, v in accepted.items() if k != twin})  # fmt: skip
    if twin is None:
        return Verified(store_name(record, list(accepted)), False, manifest_dir)
    return Verified(twin, same is not None, manifest_dir, run_differences(record, accepted[twin]))


def _outcome(seed_result: Mapping[str, Any]) -> Any:
    """What a seed computed (scores, losses, relevance, bytes), without its timings and diagnostics; lists as
    ``{index: item}`` so that a difference is named down to its leaf."""
    def indexed(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {k: indexed(x) for k, x in v.items()}
        return {i: indexed(x) for i, x in enumerate(v)} if isinstance(v, list) else v

    comm = seed_result.get("comm_bytes") or {}
    kept = {k: seed_result.get(k) for k in ("status", "final", "rounds", "relevance")}
    return indexed({**kept, "comm_bytes": {k: comm.get(k) for k in ("total_up", "total_down")}})


def run_differences(record: Mapping[str, Any], accepted: Mapping[str, Any]) -> list[str]:
    """Where ``record`` computed other numbers than the accepted file of its recipe, seed by seed (the seeds
    both hold): empty when it reproduces it (timings, paths and dates aside)."""
    theirs = {s["seed"]: s for s in accepted["results"]["per_seed"]}
    out = []
    for s in record["results"]["per_seed"]:
        if s["seed"] in theirs:
            out += [f"seed {s['seed']}: {_path_text(path)} {new!r} vs {old!r}"
                    for path, new, old in summary_differences(_outcome(s), _outcome(theirs[s["seed"]]))]
    return out


def _path_text(parts: Sequence[Any]) -> str:
    return ".".join(map(str, parts))


def submit(
    path: str | Path,
    board: str | Path = DEFAULT_BOARD,
    *,
    tasks: TaskTable | None = None,
    data_dir: str | Path | None = None,
    min_seeds: int = MIN_SEEDS,
    unofficial: bool = False,
) -> Accepted:
    """Verify the result at ``path`` and add it to ``<board>/results`` (never replacing a file).

    ``data_dir``: a built data directory to check data hashes against (default: the default build for the
    record's data settings, when it exists). ``unofficial`` accepts fewer than ``min_seeds`` seeds (at
    least one) and zoo members that are not the canonical zoo's weights; the leaderboard marks such entries
    unofficial (other weights: in tables of their own). Raises SubmissionRejected.
    """
    record = _readable(path)
    manifest_dir = resolve_manifest_dir(record, data_dir)
    store = results_dir(board)
    with store_lock(store):
        for stale in store.glob(".*.tmp"):  # left by a submit killed mid-write; we hold the lock
            stale.unlink(missing_ok=True)
        accepted = load_accepted(board)
        _refuse_problems(path, record, tasks=tasks, manifest_dir=manifest_dir, min_seeds=min_seeds,
                         unofficial=unofficial, accepted=accepted)  # fmt: skip
        target = store_path(store, store_name(record, list(accepted)))
        text = json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n"
        try:
            write_new_bytes(target, text.encode("utf-8"))
        except FileExistsError:  # only a non-JSON-named or hash-prefix clash can get here
            raise DataError(f"{target}: already exists and accepted files are never replaced; "
                            "rename the existing file's recipe or report this clash") from None  # fmt: skip
    return Accepted(target, manifest_dir)
