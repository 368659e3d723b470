"""Build DRAKE data: one parquet config per task, loadable with ``datasets.load_dataset(dir, task, split=...)``.

Layout of a built directory (no loading script: ``datasets`` >= 4 refuses those)::

    <out>/README.md                                   dataset card: YAML ``configs:`` naming every config's split files
    <out>/grids/<task>.png                            a few test samples per task, linked from the card
    <out>/manifest.json                               build params, code version, per config: key, rows, sha256
    <out>/<task>/{train,test}-00000-of-00001.parquet  canonical rows, images embedded as PNG bytes
    <out>/public/..., <out>/easy_vqa/...              extra configs (pre-training split, a real mini dataset)
    <out>/<scenario>/client_<id>-00000-of-00001.parquet   each client's stream, rows in arrival order

Every config is generated into a temp dir and renamed into place; README and manifest are written
atomically after each config, under a file lock, so a killed or concurrent build never leaves a half-written
config behind. A rebuild skips configs whose key (spec fingerprint, generator code, params) is unchanged
and whose files still match their sha256; a missing or corrupted file rebuilds just that config.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import io
import json
import multiprocessing as mp
import os
import re
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image as PILImage

from drake.errors import DataError, UnknownNameError, did_you_mean
from drake.io import atomic_write_json, atomic_write_text, sha256_file
from drake.spec import REPO_ROOT, ScenarioSpec, TaskSpec, fingerprint

if TYPE_CHECKING:
    from datasets import Features

FORMAT_VERSION = 1  # bump when the row schema or the file layout changes
SIZES = {"train": 300, "test": 100}  # rows per split at scale 1
MIN_ROWS = 8
PUBLIC_SIZES = {"train": 4000, "test": 200}  # the pre-training split, at scale 1
SHARD = "{split}-00000-of-00001.parquet"
MANIFEST = "manifest.json"

COLUMNS = ("id", "task", "images", "prompt", "choices", "answer")  # a canonical row, in FEATURES' order


@functools.cache
def _features() -> tuple[Features, Features]:
    """(FEATURES, STREAM_FEATURES): built on first use, as importing ``datasets`` costs ~50 MB of RSS that a
    run (which reads its rows with ``read_split``) never needs."""
    from datasets import Features, Image, List, Value

    rows = Features(
        {
            "id": Value("string"),
            "task": Value("string"),
            "images": List(Image()),
            "prompt": Value("string"),
            "choices": List(Value("string")),  # None for open-ended tasks
            "answer": Value("string"),
        }
    )
    stream = Features({**rows, "round": Value("int32"), "stage": Value("int32"), "source_id": Value("string")})
    return rows, stream


def __getattr__(name: str) -> Any:
    """``FEATURES`` and ``STREAM_FEATURES`` (the ``datasets`` schemas of a task's and a client stream's rows),
    made when first asked for (PEP 562)."""
    if name in ("FEATURES", "STREAM_FEATURES"):
        return _features()[name == "STREAM_FEATURES"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

_CONFIG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class ExtraSpec:
    """A non-task config: ``target`` is a lazy ``module:attr`` generator.

    kind "sample": ``fn(ctx) -> Sample`` like a family; kind "rows": ``fn(split, n, image_size, seed) -> rows``.
    """

    target: str
    kind: str
    sizes: Mapping[str, int]
    summary: str


EXTRAS: dict[str, ExtraSpec] = {
    "public": ExtraSpec(
        "drake.data.synth.public:public_sample",
        "sample",
        PUBLIC_SIZES,
        "public pre-training split (captions + QA)",
    ),
    "easy_vqa": ExtraSpec(
        "drake.data.sources.easy_vqa:easy_vqa_rows", "rows", SIZES, "easy-vqa (real 64px shapes VQA, MIT)"
    ),
}


# ------------------------------------------------------------------------------------------------ rows


def split_sizes(scale: float = 1.0, base: Mapping[str, int] = SIZES) -> dict[str, int]:
    """Rows per split at ``scale`` (each at least MIN_ROWS)."""
    if scale <= 0:
        raise DataError(f"--scale must be > 0, got {scale}")
    return {split: max(MIN_ROWS, round(n * scale)) for split, n in base.items()}


def default_data_dir(scale: float = 1.0, image_size: int = 32, seed: int = 0, source: str = "synth") -> Path:
    """``<drake_home()>/data/drake-<source>-s<scale>-px<size>-seed<seed>`` (drake_home: $DRAKE_HOME, else
    <checkout>/.drake, else ~/.cache/drake for an installed package; see drake/paths.py)."""
    from drake.paths import drake_home

    return drake_home() / "data" / f"drake-{source}-s{scale:g}-px{image_size}-seed{seed}"


def encode_image(img: Any) -> dict[str, Any]:
    """A PIL image (or PNG bytes, or an HF image dict) as an embedded ``{"bytes", "path": None}`` dict."""
    if isinstance(img, PILImage.Image):
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return {"bytes": buf.getvalue(), "path": None}
    if isinstance(img, (bytes, bytearray)):
        return {"bytes": bytes(img), "path": None}
    if isinstance(img, Mapping) and img.get("bytes"):
        return {"bytes": bytes(img["bytes"]), "path": None}
    raise DataError(f"cannot embed image of type {type(img).__name__}; give a PIL image or PNG bytes")


def sample_to_row(sample: Any, task: str, split: str, index: int) -> dict[str, Any]:
    """A family's Sample as a canonical row (id ``<task>-<split>-<index:05d>``)."""
    return {
        "id": f"{task}-{split}-{index:05d}",
        "task": task,
        "images": [encode_image(im) for im in sample.images],
        "prompt": sample.prompt,
        "choices": None if sample.choices is None else [str(c) for c in sample.choices],
        "answer": sample.answer,
    }


def validate_row(row: Mapping[str, Any], *, n_images: int | None = None, answer: str | None = None) -> None:
    """Raise DataError (naming the task and row) unless ``row`` is canonical and self-consistent."""
    from drake.data.synth.base import IMAGE_TOKEN

    where = f"task {row.get('task')!r} row {row.get('id')!r}"
    missing = set(COLUMNS) - set(row)
    if missing:
        raise DataError(f"{where}: missing columns {sorted(missing)}")
    if not isinstance(row["prompt"], str) or not isinstance(row["answer"], str) or not row["answer"].strip():
        raise DataError(f"{where}: prompt and answer must be strings and the answer non-empty")
    n_tokens, n_imgs = row["prompt"].count(IMAGE_TOKEN), len(row["images"])
    if n_tokens != n_imgs:
        raise DataError(f"{where}: prompt has {n_tokens} {IMAGE_TOKEN} placeholders for {n_imgs} images")
    if n_images is not None and n_imgs != n_images:
        raise DataError(f"{where}: {n_imgs} images, but tasks.yaml declares images: {n_images}")
    choices = row["choices"]
    if answer == "open" and choices is not None:
        raise DataError(f"{where}: an open task must have choices None, got {choices!r}")
    if answer == "choice" and not choices:
        raise DataError(f"{where}: a choice task needs a non-empty choices list")
    if choices is not None:
        if len(set(choices)) != len(choices):
            raise DataError(f"{where}: duplicate choices {choices!r}")
        if row["answer"] not in choices:
            raise DataError(f"{where}: answer {row['answer']!r} is not among choices {choices!r}")


def row_hash(row: Mapping[str, Any]) -> str:
    """Content hash of a row (prompt, image bytes, answer): equal hashes mean the same example."""
    import hashlib

    h = hashlib.sha256(row["prompt"].encode())
    for im in row["images"]:
        h.update(b"\0img\0" + im["bytes"])
    h.update(b"\0ans\0" + row["answer"].encode())
    return h.hexdigest()


def _generated_rows(
    make: Callable[[int], Any],
    task: str,
    split: str,
    n: int,
    *,
    n_images: int | None,
    answer: str | None,
    exclude_hashes: set[str] | None,
) -> list[dict[str, Any]]:
    """Rows from ``make(index) -> Sample``, skipping (deterministically) indices that collide with ``exclude``."""
    rows: list[dict[str, Any]] = []
    max_index = n + max(100, 10 * n)
    index = 0
    while len(rows) < n:
        if index >= max_index:
            raise DataError(
                f"task {task!r}: only {len(rows)} of {n} {split} rows differ from the excluded (train) rows after "
                f"{max_index} draws; the generator's sample space is too small for this size (lower --scale)"
            )
        try:
            sample = make(index)
        except DataError:
            raise
        except Exception as exc:  # a generator bug: name the task and index, keep it one line
            raise DataError(
                f"task {task!r}: generator failed on {split}[{index}]: {type(exc).__name__}: {exc}"
            ) from exc
        row = sample_to_row(sample, task, split, index)
        index += 1
        validate_row(row, n_images=n_images, answer=answer)
        if exclude_hashes and row_hash(row) in exclude_hashes:
            continue
        rows.append(row)
    return rows


def _family(spec: TaskSpec) -> Callable[..., Any]:
    import drake.data.synth.families  # noqa: F401  (registers every family lazily)
    from drake.data.synth.base import FAMILIES

    return FAMILIES.get(spec.sources["synth"].family)


def synth_rows(
    spec: TaskSpec,
    split: str,
    n: int,
    seed: int,
    image_size: int = 32,
    exclude_hashes: set[str] | None = None,
) -> list[dict[str, Any]]:
    """``n`` validated canonical rows of ``spec``'s synth family; rows whose hash is excluded are skipped."""
    from drake.data.synth.base import SampleContext

    fn, params = _family(spec), dict(spec.sources["synth"].params)

    def make(i: int) -> Any:
        return fn(SampleContext(spec.name, split, i, seed, image_size, spec.images), **params)

    return _generated_rows(
        make, spec.name, split, n, n_images=spec.images, answer=spec.answer, exclude_hashes=exclude_hashes
    )


def _resolve(target: str) -> Any:
    module_name, attr = target.split(":", 1)
    return getattr(importlib.import_module(module_name), attr)


def _unavailable(target: str) -> str | None:
    """Why ``target``'s module cannot be used yet (it does not exist), or None when it imports.

    Any other import failure (a missing dependency, a syntax error) is a DataError: that is a bug to see.
    """
    module_name = target.split(":", 1)[0]
    try:
        importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            return f"{module_name} not found"
        raise DataError(f"cannot import {module_name}: {exc}") from exc
    except Exception as exc:
        raise DataError(f"cannot import {module_name}: {type(exc).__name__}: {exc}") from exc
    return None


def extra_rows(
    name: str, split: str, n: int, seed: int, image_size: int = 32, exclude_hashes: set[str] | None = None
) -> list[dict[str, Any]]:
    """Rows of the extra config ``name`` (see EXTRAS); validated like task rows, with any image count.

    ``exclude_hashes`` applies to generated ("sample") extras; a "rows" source keeps its own split.
    """
    extra = EXTRAS[name]
    fn = _resolve(extra.target)
    if extra.kind == "sample":
        from drake.data.synth.base import SampleContext

        module = importlib.import_module(extra.target.split(":", 1)[0])
        make_ctx = getattr(module, "public_context", None)

        def make(i: int) -> Any:
            ctx = (
                make_ctx(split, i, seed, image_size)
                if make_ctx
                else SampleContext(name, split, i, seed, image_size)
            )
            return fn(ctx)

        return _generated_rows(
            make, name, split, n, n_images=None, answer=None, exclude_hashes=exclude_hashes
        )
    rows = []
    for i, raw in enumerate(fn(split, n, image_size, seed)):
        if hasattr(raw, "images") and hasattr(raw, "prompt"):
            row = sample_to_row(raw, name, split, i)
        else:
            row = {"id": f"{name}-{split}-{i:05d}", "task": name, **dict(raw)}
            row["images"] = [encode_image(im) for im in row.get("images", [])]
            row.setdefault("choices", None)
        validate_row(row)
        rows.append({k: row[k] for k in COLUMNS})
    if len(rows) != n:
        raise DataError(f"extra config {name!r}: generator returned {len(rows)} {split} rows, expected {n}")
    return rows


# ------------------------------------------------------------------------------------------------ jobs


@dataclass(frozen=True)
class _Job:
    """One config to generate (picklable: runs in a forked worker)."""

    name: str
    sizes: Mapping[str, int]
    seed: int
    image_size: int
    spec: TaskSpec | None = None  # a task; None for an extra

    @property
    def weight(self) -> int:
        return sum(self.sizes.values()) * (self.spec.images if self.spec else 2)


def _run_job(job: _Job) -> tuple[str, dict[str, list[dict[str, Any]]], float]:
    """Generate every split of one config; the test split excludes rows identical to a train row."""
    t0 = time.perf_counter()
    out: dict[str, list[dict[str, Any]]] = {}
    if job.spec is not None:
        train = synth_rows(job.spec, "train", job.sizes["train"], job.seed, job.image_size)
        hashes = {row_hash(r) for r in train}
        test = synth_rows(
            job.spec, "test", job.sizes["test"], job.seed, job.image_size, exclude_hashes=hashes
        )
        out = {"train": train, "test": test}
    else:
        hashes = set()
        for split in sorted(job.sizes, key=lambda s: s != "train"):  # train first: later splits exclude it
            out[split] = extra_rows(job.name, split, job.sizes[split], job.seed, job.image_size, hashes)
            if split == "train":
                hashes = {row_hash(r) for r in out[split]}
    return job.name, out, time.perf_counter() - t0


def _default_workers(n_jobs: int) -> int:
    env = os.environ.get("DRAKE_BUILD_WORKERS", "")
    if env:
        if not env.isdigit():
            raise DataError(f"DRAKE_BUILD_WORKERS must be a positive integer, got {env!r}")
        return max(1, int(env))
    return max(1, min(n_jobs, os.cpu_count() or 1))


def _make_pool(workers: int, n_jobs: int) -> Any:
    """A fork pool (workers inherit the registered families and imported modules), or None to run in-process.

    Created before any progress-bar thread exists; workers only run PIL and plain Python.
    """
    if workers <= 1 or n_jobs <= 1 or "fork" not in mp.get_all_start_methods():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return mp.get_context("fork").Pool(min(workers, n_jobs))


# ------------------------------------------------------------------------------------------------ manifest


def _file_hash(path: str | None) -> str:
    return sha256_file(path) if path and os.path.isfile(path) else ""


def _module_path(name: str) -> Path | None:
    """The source file of a ``drake.data`` module (package ``__init__`` files are left out on purpose:
    registry lines change whenever a family is added, without changing any existing family's rows)."""
    if not name.startswith("drake.data"):
        return None
    path = REPO_ROOT.joinpath(*name.split(".")).with_suffix(".py")
    return path if path.is_file() else None


def _imported_modules(path: Path) -> set[str]:
    """``drake.data`` modules a source file imports (absolute or relative), found without importing it."""
    stat = path.stat()
    return _imported_modules_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=512)
def _imported_modules_cached(path: str, _mtime_ns: int, _size: int) -> frozenset[str]:
    file = Path(path)
    package = (
        ".".join(file.relative_to(REPO_ROOT).with_suffix("").parts[:-1])
        if file.is_relative_to(REPO_ROOT)
        else ""
    )
    names: set[str] = set()
    for node in ast.walk(ast.parse(file.read_bytes())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return frozenset(n for n in names if n.startswith("drake.data"))


def _code_hash(obj: Any) -> str:
    """sha256 over the source file defining ``obj`` and every ``drake.data`` module it imports, transitively:
    editing a generator (or a helper it draws with) rebuilds exactly the configs that use it."""
    try:
        start = inspect.getsourcefile(inspect.unwrap(obj))
    except TypeError:
        return ""
    if not start:
        return ""
    todo, seen = [Path(start)], {}
    while todo:
        path = todo.pop()
        key = (
            str(path.resolve().relative_to(REPO_ROOT))
            if path.resolve().is_relative_to(REPO_ROOT)
            else path.name
        )
        if key in seen:
            continue
        seen[key] = sha256_file(path)
        todo += [p for p in map(_module_path, _imported_modules(path)) if p is not None]
    return fingerprint(seen)


@dataclass
class Manifest:
    """``manifest.json`` of a built directory plus what the last ``build`` call did to each config."""

    root: Path
    data: dict[str, Any]
    status: dict[str, str] = field(default_factory=dict)  # config -> built | cached | skipped: why

    @classmethod
    def read(cls, root: str | Path) -> Manifest:
        root = Path(root)
        path = root / MANIFEST
        data: dict[str, Any] = {}
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                print(f"warning: {path} is unreadable; rebuilding what is asked", file=sys.stderr)
                data = {}
        if data.get("format_version") not in (None, FORMAT_VERSION):
            data = {}  # another layout: rebuild everything asked for
        for section in ("tasks", "extras", "scenarios"):
            data.setdefault(section, {})
        return cls(root, data)

    @property
    def tasks(self) -> dict[str, Any]:
        return self.data["tasks"]

    @property
    def extras(self) -> dict[str, Any]:
        return self.data["extras"]

    @property
    def scenarios(self) -> dict[str, Any]:
        return self.data["scenarios"]

    def configs(self) -> dict[str, Any]:
        """Every config name -> its entry (tasks, then extras, then scenarios)."""
        return {**self.tasks, **self.extras, **self.scenarios}

    def train_sizes(self) -> dict[str, int]:
        return {name: e["files"]["train"]["rows"] for name, e in self.tasks.items()}

    def fresh(self, entry: Mapping[str, Any] | None, key: str) -> bool:
        """True when ``entry`` was built with ``key`` and every file still has its recorded sha256."""
        if not entry or entry.get("key") != key:
            return False
        return all(_file_hash(str(self.root / f["path"])) == f["sha256"] for f in entry["files"].values())

    def write(self) -> None:
        atomic_write_json(self.root / MANIFEST, self.data)
        atomic_write_text(self.root / "README.md", _readme(self))


def _split_order(splits: Iterable[str]) -> list[str]:
    """train, test, then the rest in natural order (client_2 before client_10)."""

    def key(s: str) -> tuple[Any, ...]:
        return (s != "train", s != "test", *(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s)))

    return sorted(splits, key=key)


def _readme(manifest: Manifest) -> str:
    # the dataset card (drake/data/card.py): HF YAML header naming every config, task table, sample grids
    from drake.data.card import render_card, save_grids

    save_grids(manifest)  # only grids missing or older than their task's test file
    return render_card(manifest)


# ------------------------------------------------------------------------------------------------ writing


def _write_table(rows: list[dict[str, Any]], features: Features, path: Path) -> None:
    table = pa.Table.from_pylist(rows, schema=features.arrow_schema)
    pq.write_table(table, path)


def _install(root: Path, name: str, tables: Mapping[str, Callable[[Path], int]]) -> dict[str, Any]:
    """Write each split via ``tables[split](path) -> rows`` into a temp dir, then swap it in as ``<root>/<name>``."""
    tmp = root / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    files = {}
    try:
        for split, write in tables.items():
            fname = SHARD.format(split=split)
            n = write(tmp / fname)
            files[split] = {"path": f"{name}/{fname}", "rows": n, "sha256": sha256_file(tmp / fname)}
        final, old = root / name, root / f".old-{name}-{os.getpid()}"
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return files


def _writer(rows: list[dict[str, Any]], features: Features | None = None) -> Callable[[Path], int]:
    def write(path: Path) -> int:
        _write_table(rows, features or _features()[0], path)
        return len(rows)

    return write


def write_config(
    root: Path,
    name: str,
    splits: Mapping[str, Iterable[Mapping[str, Any]]],
    features: Features | None = None,
    batch_rows: int = 64,
) -> dict[str, Any]:
    """Write each split's rows as config ``name`` under ``root`` (atomically, see ``_install``); returns the
    manifest ``files``. Rows are pulled lazily and written in row groups, so a source bigger than memory
    (the real DRAKE release, images embedded) streams through; an exception leaves nothing behind.
    ``features`` defaults to FEATURES."""
    schema = (features or _features()[0]).arrow_schema

    def writer(rows: Iterable[Mapping[str, Any]]) -> Callable[[Path], int]:
        def write(path: Path) -> int:
            n, batch = 0, []
            with pq.ParquetWriter(path, schema) as out:
                for row in rows:
                    batch.append(row)
                    if len(batch) >= batch_rows:
                        out.write_table(pa.Table.from_pylist(batch, schema=schema))
                        n, batch = n + len(batch), []
                if batch or not n:
                    out.write_table(pa.Table.from_pylist(batch, schema=schema))
            return n + len(batch)

        return write

    return _install(root, name, {split: writer(rows) for split, rows in splits.items()})


def _stream_tables(
    root: Path, scenario: ScenarioSpec, manifest: Manifest, seed: int
) -> dict[str, Callable[[Path], int]]:
    """One writer per client: its arrival-ordered rows with round, stage and source_id columns."""
    from drake.data.stream import round_schedule, stage_index

    features, stream_features = _features()
    sources: dict[str, pa.Table] = {}

    def source(task: str) -> pa.Table:
        if task not in sources:
            sources[task] = pq.read_table(root / manifest.tasks[task]["files"]["train"]["path"])
        return sources[task]

    def writer(client: Any) -> Callable[[Path], int]:
        def write(path: Path) -> int:
            schedule = round_schedule(client, scenario, manifest.train_sizes(), seed)
            offsets, parts, total = {}, [], 0
            for task in client.tasks:  # one table holding the client's train rows; one take in arrival order
                offsets[task] = total
                parts.append(source(task).select(list(features)).cast(features.arrow_schema))
                total += len(parts[-1])
            order = [(r, offsets[task] + i) for r, items in enumerate(schedule) for task, i in items]
            table = pa.concat_tables(parts).take(pa.array([g for _, g in order], pa.int64()))
            table = table.rename_columns(["source_id", *table.column_names[1:]])
            ids = [f"{scenario.name}-client_{client.id}-{k:05d}" for k in range(len(table))]
            table = table.append_column("id", pa.array(ids, pa.string()))
            table = table.append_column("round", pa.array([r for r, _ in order], pa.int32()))
            table = table.append_column(
                "stage", pa.array([stage_index(client, r) for r, _ in order], pa.int32())
            )
            pq.write_table(table.select(list(stream_features)).cast(stream_features.arrow_schema), path)
            return len(table)

        return write

    return {f"client_{c.id}": writer(c) for c in scenario.clients}


# ------------------------------------------------------------------------------------------------ build


def _check_names(tasks: Sequence[TaskSpec], extras: Sequence[str], scenarios: Sequence[ScenarioSpec]) -> None:
    seen: dict[str, str] = {}
    for kind, names in (
        ("task", [t.name for t in tasks]),
        ("extra", extras),
        ("scenario", [s.name for s in scenarios]),
    ):
        for name in names:
            if not _CONFIG_NAME.match(name):
                raise DataError(
                    f"{kind} name {name!r} cannot be a config/directory name (letters, digits, '_' and '-')"
                )
            if name in seen and seen[name] != kind:
                raise DataError(f"config name {name!r} is both a {seen[name]} and a {kind}; rename one")
            seen[name] = kind


def _clean_tmp(root: Path) -> None:
    for p in list(root.glob(".tmp-*")) + list(root.glob(".old-*")):
        shutil.rmtree(p, ignore_errors=True)


def build(
    tasks: Sequence[TaskSpec],
    out_dir: str | Path,
    *,
    scale: float = 1.0,
    seed: int = 0,
    image_size: int = 32,
    scenarios: Sequence[ScenarioSpec] = (),
    extras: bool | Sequence[str] = True,
    progress: bool = True,
    workers: int | None = None,
    force: bool = False,
    refresh: bool = True,
) -> Manifest:
    """Build (or refresh) ``tasks``, the extra configs and ``scenarios``' client streams under ``out_dir``.

    ``extras``: True for every entry of EXTRAS, or a list of names. An extra whose generator module does
    not exist yet is skipped with its reason in ``manifest.status``. Configs already in ``out_dir`` and not
    asked for are kept. ``refresh``: rewrite the manifest and dataset card even when nothing changed (the
    card also shows tasks.yaml and the calibration table); False leaves an up-to-date directory untouched.
    """
    from filelock import FileLock
    from tqdm.auto import tqdm

    root = Path(out_dir)
    if image_size < 8:
        raise DataError(f"--image-size must be >= 8 pixels, got {image_size}")
    sizes = split_sizes(scale)
    tasks = list({t.name: t for t in tasks}.values())
    extra_names = list(EXTRAS) if extras is True else list(extras or [])
    for name in extra_names:
        if name not in EXTRAS:
            raise UnknownNameError(
                f"unknown extra config {name!r}{did_you_mean(name, EXTRAS)}; known: {', '.join(EXTRAS)}"
            )
    _check_names(tasks, extra_names, scenarios)
    names = {t.name for t in tasks}
    # streams are cut from this build's train rows: fail before generating anything
    for scenario in scenarios:
        missing = [t for t in scenario.tasks if t not in names]
        if missing:
            raise DataError(
                f"scenario {scenario.name!r} needs tasks that are not in this build: {', '.join(missing)}; "
                f"pass them too (`drake build --scenario {scenario.name}` adds them)"
            )
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the data directory {root}: {exc.strerror}") from exc
    params = {"source": "synth", "scale": scale, "seed": seed, "image_size": image_size}

    with FileLock(str(root / ".build.lock")):
        _clean_tmp(root)
        manifest = Manifest.read(root)
        before = json.dumps(manifest.data, sort_keys=True)
        manifest.data.update(format_version=FORMAT_VERSION, params=params)
        jobs: list[_Job] = []
        entries: dict[str, dict[str, Any]] = {}
        for spec in tasks:
            # resolve in the parent: import errors surface here, and forked workers inherit the module
            fn = _family(spec)
            entry = {
                "kind": "task",
                "spec_fingerprint": spec.fingerprint(),
                "family": spec.sources["synth"].family,
                "code": _code_hash(fn),
                "params": {"seed": seed, "image_size": image_size, "sizes": sizes},
            }
            entry["key"] = fingerprint([FORMAT_VERSION, entry])
            entries[spec.name] = entry
            if force or not manifest.fresh(manifest.tasks.get(spec.name), entry["key"]):
                jobs.append(_Job(spec.name, sizes, seed, image_size, spec))
            else:
                manifest.status[spec.name] = "cached"
        for name in extra_names:
            extra = EXTRAS[name]
            why = _unavailable(extra.target)
            if why:
                manifest.status[name] = f"skipped: {why}"
                continue
            esizes = split_sizes(scale, extra.sizes)
            entry = {
                "kind": "extra",
                "target": extra.target,
                "code": _code_hash(_resolve(extra.target)),
                "params": {"seed": seed, "image_size": image_size, "sizes": esizes},
            }
            entry["key"] = fingerprint([FORMAT_VERSION, entry])
            entries[name] = entry
            if force or not manifest.fresh(manifest.extras.get(name), entry["key"]):
                jobs.append(_Job(name, esizes, seed, image_size))
            else:
                manifest.status[name] = "cached"

        jobs.sort(key=lambda j: -j.weight)  # longest first keeps both workers busy to the end
        n_workers = workers if workers is not None else _default_workers(len(jobs))
        pool = _make_pool(n_workers, len(jobs))
        bar = None
        try:
            results = pool.imap_unordered(_run_job, jobs) if pool else map(_run_job, jobs)
            bar = tqdm(
                total=len(jobs) + len(scenarios), desc="drake build", unit="config",
                disable=not progress or not (jobs or scenarios),  # nothing to do: no empty bar
            )
            for name, splits, _elapsed in results:
                files = _install(root, name, {split: _writer(rows) for split, rows in splits.items()})
                section = manifest.tasks if entries[name]["kind"] == "task" else manifest.extras
                section[name] = {**entries[name], "files": files}
                manifest.status[name] = "built"
                manifest.write()
                bar.update(1)
            for scenario in scenarios:
                _build_scenario(root, scenario, manifest, seed, force)
                manifest.write()
                bar.update(1)
        finally:
            if bar is not None:
                bar.close()
            if pool is not None:
                pool.terminate()
                pool.join()
        if refresh or json.dumps(manifest.data, sort_keys=True) != before or not (root / "README.md").is_file():
            manifest.write()
    return manifest


def _build_scenario(root: Path, scenario: ScenarioSpec, manifest: Manifest, seed: int, force: bool) -> None:
    key = fingerprint(
        [
            FORMAT_VERSION,
            scenario.fingerprint(),
            seed,
            {t: manifest.tasks[t]["files"]["train"]["sha256"] for t in scenario.tasks},
        ]
    )
    if not force and manifest.fresh(manifest.scenarios.get(scenario.name), key):
        manifest.status[scenario.name] = "cached"
        return
    files = _install(root, scenario.name, _stream_tables(root, scenario, manifest, seed))
    manifest.scenarios[scenario.name] = {
        "kind": "scenario",
        "key": key,
        "mode": scenario.mode,
        "seed": seed,
        "files": files,
    }
    manifest.status[scenario.name] = "built"


# ------------------------------------------------------------------------------------------------ harness API


def ensure_built(
    tasks: Sequence[TaskSpec],
    out_dir: str | Path | None = None,
    *,
    source: str = "synth",
    **build_kwargs: Any,
) -> Path:
    """The data directory for ``tasks``, building only what is missing or stale; used by the harness.

    An up-to-date directory is left as it is (``refresh=False``): rewriting its card would read statistics
    from every task's files, ~14 MB of Arrow pages kept by every run (measured on 47 tasks)."""
    if source == "drake":  # converted once by `drake build --source drake --from DIR`; never built here
        from drake.data.sources.drake_release import ensure_converted

        return ensure_converted(tasks, out_dir)
    if source != "synth":
        raise DataError(
            f"unknown data source {source!r}{did_you_mean(source, ['synth', 'drake'])}; use 'synth'"
        )
    scale = build_kwargs.get("scale", 1.0)
    out = (
        Path(out_dir)
        if out_dir
        else default_data_dir(scale, build_kwargs.get("image_size", 32), build_kwargs.get("seed", 0))
    )
    build(tasks, out, **{"refresh": False, **build_kwargs})
    return out


def _config_entry(out_dir: Path, config: str, split: str) -> dict[str, Any]:
    """The manifest entry of ``config``, after checking that it and ``split`` exist."""
    if not (out_dir / "README.md").is_file() or not (out_dir / MANIFEST).is_file():
        raise DataError(
            f"{out_dir}: not a built DRAKE directory (no README.md/manifest.json); run `drake build --out {out_dir}`"
        )
    configs = Manifest.read(out_dir).configs()
    if config not in configs:
        raise UnknownNameError(
            f"{out_dir}: no config {config!r}{did_you_mean(config, configs)}; build it with "
            f"`drake build --out {out_dir} --tasks {config}` (or --scenario for a client stream)"
        )
    splits = configs[config]["files"]
    if split not in splits:
        raise UnknownNameError(
            f"config {config!r} has no split {split!r}{did_you_mean(split, splits)}; splits: {', '.join(splits)}"
        )
    return configs[config]


def read_split(out_dir: str | Path, config: str, split: str) -> list[dict[str, Any]]:
    """The rows of one built split as stored (images as ``{"bytes", "path"}`` records, not decoded), read
    straight from its parquet file: what ``load_task_split`` holds, without importing ``datasets`` (~50 MB
    of RSS in every run) or writing an Arrow copy of the file to its cache.

    Memory, measured on 10 tasks (8 MB of rows as Python objects): ``ParquetFile``, not ``pq.read_table``
    (which imports pandas through ``pyarrow.dataset``); no pre-buffering, one thread, and Arrow's pool
    asked to give back what it freed: otherwise Arrow kept ~55 MB of pages after the tables were gone.
    """
    out = Path(out_dir)
    entry = _config_entry(out, config, split)
    with pq.ParquetFile(out / entry["files"][split]["path"], pre_buffer=False) as f:
        rows = f.read(use_threads=False).to_pylist()
    pa.default_memory_pool().release_unused()
    return rows


def load_task_split(out_dir: str | Path, task: str, split: str) -> Any:
    """``datasets.load_dataset(out_dir, task, split=split)`` with a content-addressed Arrow cache.

    ``datasets`` keys its cache of a local folder by name, not by file content, so a rebuilt config would
    load stale rows; the cache dir is therefore keyed by the config's sha256s, under HF_DATASETS_CACHE (read
    at call time) or ``<out>/.cache`` (where superseded versions are removed).
    """
    import datasets

    out = Path(out_dir)
    entry = _config_entry(out, task, split)
    version = fingerprint(sorted(f["sha256"] for f in entry["files"].values()))[:16]
    env_cache = os.environ.get("HF_DATASETS_CACHE")
    base = Path(env_cache) / "drake" if env_cache else out / ".cache"
    cache_dir = base / f"{task}-{version}"
    if not env_cache:
        for old in base.glob(f"{task}-*"):
            if old != cache_dir and old.name.rsplit("-", 1)[0] == task:
                shutil.rmtree(old, ignore_errors=True)
    was_enabled = datasets.utils.logging.is_progress_bar_enabled()
    datasets.utils.logging.disable_progress_bar()  # one "Generating split" bar per task is noise here
    try:
        return datasets.load_dataset(str(out), task, split=split, cache_dir=str(cache_dir))
    finally:
        if was_enabled:
            datasets.utils.logging.enable_progress_bar()


def load_stream(out_dir: str | Path, scenario: str, client_id: int) -> Any:
    """Client ``client_id``'s arrival-ordered stream of ``scenario`` (built with ``build(..., scenarios=...)``)."""
    return load_task_split(out_dir, scenario, f"client_{client_id}")
