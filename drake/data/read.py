"""Reading a built directory's configs: raw rows straight from parquet for runs, or a ``datasets.Dataset``.

Both check the config and split against the manifest first, so a wrong name is a one-line error with a
suggestion rather than a missing-file traceback.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from drake.data.manifest import MANIFEST, Manifest
from drake.errors import DataError, UnknownNameError, did_you_mean
from drake.spec import fingerprint


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
