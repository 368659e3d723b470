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

This module is the orchestrator; each step lives in the module named for it: ``schema`` (the canonical row),
``generation`` (rows from generators, split sizes), ``code_hash``, ``write`` (atomic config files),
``stream_files`` (client streams), ``manifest``, ``card`` (README.md and grids) and ``read`` (loading).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drake.data import generation
from drake.data.calibration import load_calibration
from drake.data.code_hash import code_hash
from drake.data.generation import (
    extra_rows,
    resolve_target,
    row_hash,
    split_sizes,
    synth_rows,
    task_family,
    unavailable,
)
from drake.data.manifest import Manifest
from drake.data.schema import FORMAT_VERSION, check_config_names
from drake.data.stream_files import build_scenario
from drake.data.write import clean_tmp, install_config, rows_writer
from drake.errors import DataError, UnknownNameError, did_you_mean
from drake.spec import ScenarioSpec, TaskSpec, fingerprint


def default_data_dir(scale: float = 1.0, image_size: int = 32, seed: int = 0, source: str = "synth") -> Path:
    """``<drake_home()>/data/drake-<source>-s<scale>-px<size>-seed<seed>`` (drake_home: $DRAKE_HOME, else
    <checkout>/.drake, else ~/.cache/drake for an installed package; see drake/paths.py)."""
    from drake.paths import drake_home

    return drake_home() / "data" / f"drake-{source}-s{scale:g}-px{image_size}-seed{seed}"


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


def _save(manifest: Manifest) -> None:
    """manifest.json, then the dataset card with the calibration table of the checkout (when it has one)."""
    from drake.data.card import write_card  # imported when first written: pyarrow.compute is ~8 MB of RSS

    manifest.write()
    write_card(manifest, calibration=load_calibration())


# ------------------------------------------------------------------------------------------------ build


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

    ``extras``: True for every entry of ``generation.EXTRAS``, or a list of names. An extra whose generator
    module does not exist yet is skipped with its reason in ``manifest.status``. Configs already in ``out_dir``
    and not asked for are kept. ``refresh``: rewrite the manifest and dataset card even when nothing changed (the
    card also shows tasks.yaml and the calibration table); False leaves an up-to-date directory untouched.
    """
    from filelock import FileLock
    from tqdm.auto import tqdm

    root = Path(out_dir)
    if image_size < 8:
        raise DataError(f"--image-size must be >= 8 pixels, got {image_size}")
    sizes = split_sizes(scale)
    known = generation.EXTRAS  # looked up at call time: a test may replace it
    tasks = list({t.name: t for t in tasks}.values())
    extra_names = list(known) if extras is True else list(extras or [])
    for name in extra_names:
        if name not in known:
            raise UnknownNameError(
                f"unknown extra config {name!r}{did_you_mean(name, known)}; known: {', '.join(known)}"
            )
    check_config_names(tasks, extra_names, scenarios)
    names = {t.name for t in tasks}
    # streams are cut from this build's train rows: fail before generating anything
    for scenario in scenarios:
        missing = [t for t in scenario.tasks if t not in names]
        if missing:
            raise DataError(
                f"scenario {scenario.name!r} needs tasks that are not in this build: {', '.join(missing)}; "
                f"pass them too (`drake build --scenario {scenario.name}` adds them)"
            )
    if root.exists() and not root.is_dir():
        raise DataError(f"{root}: is a file, not a data directory; give a folder (new or built by `drake build`)")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the data directory {root}: {exc.strerror}") from exc
    params = {"source": "synth", "scale": scale, "seed": seed, "image_size": image_size}

    with FileLock(str(root / ".build.lock")):
        clean_tmp(root)
        manifest = Manifest.read(root)
        before = json.dumps(manifest.data, sort_keys=True)
        manifest.data.update(format_version=FORMAT_VERSION, params=params)
        jobs: list[_Job] = []
        entries: dict[str, dict[str, Any]] = {}
        for spec in tasks:
            # resolve in the parent: import errors surface here, and forked workers inherit the module
            fn = task_family(spec)
            entry = {
                "kind": "task",
                "spec_fingerprint": spec.fingerprint(),
                "family": spec.sources["synth"].family,
                "code": code_hash(fn),
                "params": {"seed": seed, "image_size": image_size, "sizes": sizes},
            }
            entry["key"] = fingerprint([FORMAT_VERSION, entry])
            entries[spec.name] = entry
            if force or not manifest.fresh(manifest.tasks.get(spec.name), entry["key"]):
                jobs.append(_Job(spec.name, sizes, seed, image_size, spec))
            else:
                manifest.status[spec.name] = "cached"
        for name in extra_names:
            extra = known[name]
            why = unavailable(extra.target)
            if why:
                manifest.status[name] = f"skipped: {why}"
                continue
            esizes = split_sizes(scale, extra.sizes)
            entry = {
                "kind": "extra",
                "target": extra.target,
                "code": code_hash(resolve_target(extra.target)),
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
                total=len(jobs) + len(scenarios),
                desc="drake build",
                unit="config",
                disable=not progress or not (jobs or scenarios),  # nothing to do: no empty bar
            )
            for name, splits, _elapsed in results:
                files = install_config(
                    root, name, {split: rows_writer(rows) for split, rows in splits.items()}
                )
                section = manifest.tasks if entries[name]["kind"] == "task" else manifest.extras
                section[name] = {**entries[name], "files": files}
                manifest.status[name] = "built"
                _save(manifest)
                bar.update(1)
            for scenario in scenarios:
                build_scenario(root, scenario, manifest, seed, force)
                _save(manifest)
                bar.update(1)
        finally:
            if bar is not None:
                bar.close()
            if pool is not None:
                pool.terminate()
                pool.join()
        if (
            refresh
            or json.dumps(manifest.data, sort_keys=True) != before
            or not (root / "README.md").is_file()
        ):
            _save(manifest)
    return manifest


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
