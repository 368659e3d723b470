"""Typed, validated specs: tasks (tasks.yaml) and scenarios (scenarios/*.yaml).

Every YAML document goes through one frozen dataclass; unknown or missing keys are errors naming the file,
the key and the closest valid key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from drake.errors import SpecError, UnknownNameError, did_you_mean
from drake.paths import PACKAGE_DIR, REPO_ROOT  # noqa: F401  (REPO_ROOT: re-exported, other modules use it)

# package data (drake/tasks.yaml, drake/scenarios/): found the same way in a checkout and in an installed wheel;
# the repository's top-level tasks.yaml and scenarios/ are symlinks to these
TASKS_PATH = PACKAGE_DIR / "tasks.yaml"
SCENARIOS_DIR = PACKAGE_DIR / "scenarios"

AnswerKind = Literal["choice", "open"]
ANSWER_KINDS = ("choice", "open")
SOURCE_KINDS = ("synth", "drake")
MODES = ("dynamic", "static")
#: keys of one entry of a scenario's ``clients`` list
CLIENT_KEYS = ("id", "tasks", "lora_rank")


def _check_keys(d: Any, *, cls: type, where: str, required: Sequence[str] = ()) -> dict[str, Any]:
    """Reject non-mappings, unknown keys (with a suggestion) and missing required keys."""
    if not isinstance(d, Mapping):
        raise SpecError(f"{where}: expected a mapping, got {type(d).__name__}")
    allowed = [f.name for f in fields(cls)]
    for key in d:
        if key not in allowed:
            raise SpecError(f"{where}: unknown key {key!r}{did_you_mean(key, allowed)}")
    for key in required:
        if key not in d:
            raise SpecError(f"{where}: missing required key {key!r}")
    return dict(d)


def _expect(value: Any, typ: type | tuple[type, ...], where: str, key: str) -> Any:
    if isinstance(value, bool) and typ in (int, float):
        raise SpecError(f"{where}: {key!r} must be {getattr(typ, '__name__', typ)}, got a boolean")
    if not isinstance(value, typ):
        name = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
        raise SpecError(f"{where}: {key!r} must be {name}, got {type(value).__name__} {value!r}")
    return value


def _str_tuple(value: Any, where: str, key: str) -> tuple[str, ...]:
    _expect(value, (list, tuple), where, key)
    for item in value:
        _expect(item, str, where, key)
    return tuple(value)


def fingerprint(obj: Any) -> str:
    """sha256 of canonical JSON: stable across runs, written into manifests and results."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True)
class SourceSpec:
    """Where a task's rows come from: a synth family with params, or a real DRAKE file."""

    kind: str
    family: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    dataset: str | None = None
    subset: int | None = None

    @classmethod
    def from_dict(cls, kind: str, d: Any, where: str) -> SourceSpec:
        if kind not in SOURCE_KINDS:
            raise SpecError(f"{where}: unknown source {kind!r}{did_you_mean(kind, SOURCE_KINDS)}")
        where = f"{where}.{kind}"
        if kind == "synth":
            d = _check_keys(d, cls=cls, where=where, required=("family",))
            params = d.get("params", {}) or {}
            _expect(params, Mapping, where, "params")
            return cls(kind, family=_expect(d["family"], str, where, "family"), params=dict(params))
        d = _check_keys(d, cls=cls, where=where, required=("dataset", "subset"))
        return cls(
            kind,
            dataset=_expect(d["dataset"], str, where, "dataset"),
            subset=_expect(d["subset"], int, where, "subset"),
        )


@dataclass(frozen=True)
class TaskSpec:
    """One benchmark task: the real task's facts plus how to build it from each source."""

    name: str
    title: str
    images: int
    answer: AnswerKind
    metric: str
    sources: Mapping[str, SourceSpec]
    groups: tuple[str, ...] = ()
    description: str = ""
    license: str = ""
    citation: str = ""
    version: int = 1

    @property
    def unseen(self) -> bool:
        return "unseen" in self.groups

    @classmethod
    def from_dict(cls, d: Any, where: str) -> TaskSpec:
        req = ("name", "title", "images", "answer", "metric", "sources")
        d = _check_keys(d, cls=cls, where=where, required=req)
        name = _expect(d["name"], str, where, "name")
        where = f"{where} (task {name!r})"
        images = _expect(d["images"], int, where, "images")
        if not 0 <= images <= 8:
            raise SpecError(f"{where}: 'images' must be between 0 and 8, got {images}")
        answer = _expect(d["answer"], str, where, "answer")
        if answer not in ANSWER_KINDS:
            raise SpecError(f"{where}: 'answer' must be one of {ANSWER_KINDS}{did_you_mean(answer, ANSWER_KINDS)}")
        sources = _expect(d["sources"], Mapping, where, "sources")
        if "synth" not in sources:
            raise SpecError(f"{where}: every task needs a 'synth' source (the embedded default)")
        return cls(
            name=name,
            title=_expect(d["title"], str, where, "title"),
            images=images,
            answer=answer,  # type: ignore[arg-type]
            metric=_expect(d["metric"], str, where, "metric"),
            sources={k: SourceSpec.from_dict(k, v, f"{where}: sources") for k, v in sources.items()},
            groups=_str_tuple(d.get("groups", []), where, "groups"),
            description=_expect(d.get("description", ""), str, where, "description"),
            license=_expect(d.get("license", ""), str, where, "license"),
            citation=_expect(d.get("citation", ""), str, where, "citation"),
            version=_expect(d.get("version", 1), int, where, "version"),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fingerprint(self) -> str:
        return fingerprint(self.to_dict())


class TaskTable(Mapping[str, TaskSpec]):
    """All tasks of tasks.yaml, by name, in file order."""

    def __init__(self, tasks: Sequence[TaskSpec], path: Path) -> None:
        self._tasks = {t.name: t for t in tasks}
        self.path = path

    def __getitem__(self, name: str) -> TaskSpec:
        if name not in self._tasks:
            raise UnknownNameError(f"unknown task {name!r}{did_you_mean(name, self._tasks)}; see `drake list tasks`")
        return self._tasks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    def select(self, names: Sequence[str] = (), groups: Sequence[str] = ()) -> list[TaskSpec]:
        """Tasks by name (validated) and/or group; no filter returns every task."""
        chosen = [self[n] for n in names]
        known = {g for t in self._tasks.values() for g in t.groups}
        for g in groups:
            if g not in known:
                raise UnknownNameError(f"unknown task group {g!r}{did_you_mean(g, known)}; groups: {', '.join(sorted(known))}")
        if groups:
            chosen += [t for t in self._tasks.values() if set(groups) & set(t.groups) and t not in chosen]
        return chosen if (names or groups) else list(self._tasks.values())


def read_yaml(path: Path) -> Any:
    """A YAML file's document; a missing file or bad YAML is a SpecError naming the file (and line)."""
    if path.is_dir():
        raise SpecError(f"{path}: is a directory; give a YAML file")
    if not path.is_file():
        raise SpecError(f"{path}: file not found")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        loc = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{path}{loc}: invalid YAML ({problem})") from None


def load_tasks(path: str | Path | None = None) -> TaskTable:
    """Load and validate tasks.yaml (names unique; families/metrics are checked by `validate_tasks`)."""
    path = Path(path) if path else TASKS_PATH
    doc = read_yaml(path)
    if not isinstance(doc, Mapping) or "tasks" not in doc:
        raise SpecError(f"{path}: expected a mapping with a 'tasks' list")
    unknown = set(doc) - {"schema_version", "tasks"}
    if unknown:
        key = sorted(unknown)[0]
        raise SpecError(f"{path}: unknown top-level key {key!r}{did_you_mean(key, ['schema_version', 'tasks'])}")
    tasks: list[TaskSpec] = []
    seen: set[str] = set()
    for i, entry in enumerate(_expect(doc["tasks"] or [], list, str(path), "tasks")):
        spec = TaskSpec.from_dict(entry, f"{path}: tasks[{i}]")
        if spec.name in seen:
            raise SpecError(f"{path}: tasks[{i}]: duplicate task name {spec.name!r}")
        seen.add(spec.name)
        tasks.append(spec)
    return TaskTable(tasks, path)


# --------------------------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class StageSpec:
    """A span of rounds [start_round, end_round) during which a client trains on ``tasks``."""

    tasks: tuple[str, ...]
    start_round: int
    end_round: int


@dataclass(frozen=True)
class ClientSpec:
    """One client: its model (an architecture name from the pool) and its tasks in arrival order.

    ``lora_rank`` (optional): the client's own LoRA rank, read by rank-heterogeneous methods (hetlora,
    flexlora); None, and every other method, trains the client at the method's ``lora_r``.
    """

    id: int
    model: str
    tasks: tuple[str, ...]
    stages: tuple[StageSpec, ...]
    lora_rank: int | None = None

    def stage_at(self, round_idx: int) -> StageSpec:
        for stage in self.stages:
            if stage.start_round <= round_idx < stage.end_round:
                return stage
        return self.stages[-1]


@dataclass(frozen=True)
class _ScenarioYaml:
    """The keys a scenario file may hold (validated, then expanded into ScenarioSpec)."""

    name: str
    description: str
    mode: str
    rounds: int
    clients: list
    pools: dict
    pool: str = ""
    rounds_per_task: int = 0
    source: str = "synth"
    unseen: list = field(default_factory=list)
    eval_rounds: list = field(default_factory=list)
    participation: float = 1.0
    partition: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ScenarioSpec:
    """Who trains on what, when, with which model; the single input of an engine run."""

    name: str
    description: str
    mode: str
    rounds: int
    rounds_per_task: int
    source: str
    pool: str
    pools: Mapping[str, tuple[str, ...]]
    clients: tuple[ClientSpec, ...]
    unseen: tuple[str, ...]
    eval_rounds: tuple[int, ...]
    participation: float
    partition: Mapping[str, Any]
    path: str = ""

    @property
    def architectures(self) -> tuple[str, ...]:
        """Distinct model names in client order (one frozen base model each)."""
        return tuple(dict.fromkeys(c.model for c in self.clients))

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t for c in self.clients for t in c.tasks))

    def with_pool(self, pool: str) -> ScenarioSpec:
        """The same scenario with another named model pool (e.g. 'homo', 'cross')."""
        return _expand(self._raw | {"pool": pool}, self.path)  # type: ignore[attr-defined]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("path")
        for c in d["clients"]:  # absent, not null: scenarios without ranks keep their fingerprints
            if c.get("lora_rank") is None:
                c.pop("lora_rank", None)
        return d

    def fingerprint(self) -> str:
        return fingerprint(self.to_dict())


def _default_eval_rounds(rounds: int, rounds_per_task: int, mode: str) -> tuple[int, ...]:
    """Evaluate every 5 rounds and at task switches (round indices are 1-based round counts)."""
    points = {r for r in range(5, rounds + 1, 5)} | {rounds}
    if mode == "dynamic" and rounds_per_task:
        points |= {r for r in range(rounds_per_task, rounds + 1, rounds_per_task)}
    return tuple(sorted(points))


def _task_count(client: Any, where: str) -> int:
    """A client's number of tasks, 0 when its 'tasks' is malformed (reported, per client, after the pools)."""
    tasks = _expect(client, Mapping, where, "clients").get("tasks")
    return len(tasks) if isinstance(tasks, list) else 0


def _expand(raw: dict[str, Any], path: str) -> ScenarioSpec:
    where = path or "scenario"
    d = _check_keys(raw, cls=_ScenarioYaml, where=where, required=("name", "mode", "rounds", "clients", "pools"))
    mode = _expect(d["mode"], str, where, "mode")
    if mode not in MODES:
        raise SpecError(f"{where}: 'mode' must be one of {MODES}{did_you_mean(mode, MODES)}")
    rounds = _expect(d["rounds"], int, where, "rounds")
    if rounds < 1:
        raise SpecError(f"{where}: 'rounds' must be >= 1")
    clients_raw = _expect(d["clients"], list, where, "clients")
    n_tasks = {_task_count(c, where) for c in clients_raw}
    rpt = d.get("rounds_per_task") or (rounds // max(n_tasks) if n_tasks and max(n_tasks) else rounds)
    _expect(rpt, int, where, "rounds_per_task")
    if mode == "dynamic" and rpt < 1:
        raise SpecError(f"{where}: 'rounds_per_task' must be >= 1 (rounds {rounds} for {max(n_tasks)} tasks a client "
                        "leaves a task no round: raise 'rounds' or set 'rounds_per_task')")  # fmt: skip
    pools_raw = _expect(d["pools"], Mapping, where, "pools")
    pools = {k: _str_tuple(v, where, f"pools.{k}") for k, v in pools_raw.items()}
    pool = d.get("pool") or next(iter(pools), "")
    if pool not in pools:
        raise SpecError(f"{where}: pool {pool!r} is not defined{did_you_mean(pool, pools)}; pools: {sorted(pools)}")
    for k, models in pools.items():
        if len(models) != len(clients_raw):
            raise SpecError(f"{where}: pools.{k} lists {len(models)} models for {len(clients_raw)} clients")
    clients = []
    for i, c in enumerate(clients_raw):
        cw = f"{where}: clients[{i}]"
        if not isinstance(c, Mapping) or set(c) - set(CLIENT_KEYS) or "tasks" not in c:
            bad = sorted(set(c) - set(CLIENT_KEYS)) if isinstance(c, Mapping) else []
            hint = did_you_mean(bad[0], CLIENT_KEYS) if bad else ""
            raise SpecError(f"{cw}: expected {{id, tasks}}" + (f", got unknown key {bad[0]!r}{hint}" if bad else ""))
        tasks = _str_tuple(c["tasks"], cw, "tasks")
        if not tasks:
            raise SpecError(f"{cw}: a client needs at least one task")
        cid = _expect(c.get("id", i), int, cw, "id")
        if mode == "dynamic" and (len(tasks) - 1) * rpt >= rounds:
            raise SpecError(f"{cw}: client {c.get('id', i)}'s task {len(tasks)} of {len(tasks)} would arrive in round "
                            f"{(len(tasks) - 1) * rpt + 1} of {rounds}: lower 'rounds_per_task' or raise 'rounds'")  # fmt: skip
        if mode == "dynamic":
            stages = tuple(
                StageSpec((t,), k * rpt, rounds if k == len(tasks) - 1 else (k + 1) * rpt) for k, t in enumerate(tasks)
            )
        else:
            stages = (StageSpec(tasks, 0, rounds),)
        clients.append(ClientSpec(cid, pools[pool][i], tasks, stages, _lora_rank(c.get("lora_rank"), cw)))
    if len({c.id for c in clients}) != len(clients):
        raise SpecError(f"{where}: client ids must be unique")
    eval_rounds = tuple(_expect(d.get("eval_rounds") or [], list, where, "eval_rounds")) or _default_eval_rounds(rounds, rpt, mode)
    if any(isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= rounds for r in eval_rounds):
        raise SpecError(f"{where}: eval_rounds must lie in 1..{rounds}")
    participation = float(_expect(d.get("participation", 1.0), (int, float), where, "participation"))
    if not 0 < participation <= 1:
        raise SpecError(f"{where}: 'participation' must be in (0, 1]")
    partition = _partition(d.get("partition") or {}, where)
    source = _expect(d.get("source", "synth"), str, where, "source")
    if source not in SOURCE_KINDS:
        raise SpecError(f"{where}: 'source' must be one of {SOURCE_KINDS}{did_you_mean(source, SOURCE_KINDS)}")
    spec = ScenarioSpec(
        name=_expect(d["name"], str, where, "name"),
        description=_expect(d.get("description", ""), str, where, "description"),
        mode=mode,
        rounds=rounds,
        rounds_per_task=rpt,
        source=source,
        pool=pool,
        pools=pools,
        clients=tuple(clients),
        unseen=_str_tuple(d.get("unseen", []), where, "unseen"),
        eval_rounds=tuple(sorted(set(eval_rounds))),
        participation=participation,
        partition=partition,
        path=path,
    )
    object.__setattr__(spec, "_raw", dict(raw))
    return spec


def _lora_rank(value: Any, where: str) -> int | None:
    """A client's optional ``lora_rank``: a whole number >= 1 (None when the client has none)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"{where}: 'lora_rank' must be a whole number >= 1 (e.g. 8), got {value!r}")
    return value


def _partition(raw: Any, where: str) -> dict[str, Any]:
    """``partition: {kind: dirichlet, alpha: A}``: label skew over the clients that share a task."""
    if not raw:
        return {}
    raw = _expect(raw, Mapping, where, "partition")
    unknown = sorted(set(raw) - {"kind", "alpha"})
    if unknown:
        raise SpecError(f"{where}: unknown key partition.{unknown[0]}{did_you_mean(unknown[0], ['kind', 'alpha'])}")
    if raw.get("kind") != "dirichlet":
        raise SpecError(f"{where}: partition.kind must be 'dirichlet' (label skew), got {raw.get('kind')!r}")
    alpha = raw.get("alpha")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
        raise SpecError(f"{where}: partition.alpha must be a number > 0 (e.g. 0.5), got {alpha!r}")
    return {"kind": "dirichlet", "alpha": float(alpha)}


def scenario_path(name_or_path: str | Path) -> Path:
    """Resolve a scenario name (scenarios/<name>.yaml) or a path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        return p
    candidate = SCENARIOS_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        known = list_scenarios()
        raise UnknownNameError(
            f"unknown scenario {str(name_or_path)!r}{did_you_mean(str(name_or_path), known)}; known: {', '.join(known)}"
        )
    return candidate


def list_scenarios() -> list[str]:
    return sorted(p.stem for p in SCENARIOS_DIR.glob("*.yaml"))


def load_scenario(name_or_path: str | Path, *, pool: str | None = None, tasks: TaskTable | None = None) -> ScenarioSpec:
    """Load a scenario by name or path; with ``tasks``, check that every task it names exists."""
    path = scenario_path(name_or_path)
    raw = read_yaml(path)
    if not isinstance(raw, Mapping):
        raise SpecError(f"{path}: expected a mapping")
    spec = _expand(dict(raw), str(path))
    if pool:
        spec = spec.with_pool(pool)
    if tasks is not None:
        check_scenario_tasks(spec, tasks)
    return spec


def check_scenario_tasks(spec: ScenarioSpec, tasks: TaskTable) -> None:
    for c in spec.clients:
        for t in c.tasks:
            if t not in tasks:
                raise SpecError(f"{spec.path}: client {c.id}: unknown task {t!r}{did_you_mean(t, tasks)}")
    for t in spec.unseen:
        if t not in tasks:
            raise SpecError(f"{spec.path}: unseen: unknown task {t!r}{did_you_mean(t, tasks)}")
