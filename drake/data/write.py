"""Writing a config's parquet files atomically: into a temp dir beside it, then renamed into place.

A killed or failed build therefore never leaves a half-written config; ``clean_tmp`` removes what a killed
build left in the temp dirs. File-level atomic writes (manifest, card) are ``drake.io``'s.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from drake.data.schema import row_features
from drake.io import sha256_file

if TYPE_CHECKING:
    from datasets import Features

SHARD = "{split}-00000-of-00001.parquet"


def install_config(root: Path, name: str, tables: Mapping[str, Callable[[Path], int]]) -> dict[str, Any]:
    """Write each split via ``tables[split](path) -> rows`` into a temp dir, then swap it in as ``<root>/<name>``;
    returns the manifest ``files`` (per split: path, rows, sha256)."""
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


def rows_writer(rows: list[dict[str, Any]], features: Features | None = None) -> Callable[[Path], int]:
    """A ``tables`` entry for ``install_config``: writes ``rows`` (held in memory) as one parquet file."""

    def write(path: Path) -> int:
        table = pa.Table.from_pylist(rows, schema=(features or row_features()).arrow_schema)
        pq.write_table(table, path)
        return len(rows)

    return write


def write_config(
    root: Path,
    name: str,
    splits: Mapping[str, Iterable[Mapping[str, Any]]],
    features: Features | None = None,
    batch_rows: int = 64,
) -> dict[str, Any]:
    """Write each split's rows as config ``name`` under ``root`` (atomically, see ``install_config``); returns
    the manifest ``files``. Rows are pulled lazily and written in row groups, so a source bigger than memory
    (the real DRAKE release, images embedded) streams through; an exception leaves nothing behind.
    ``features`` defaults to ``row_features()``."""
    schema = (features or row_features()).arrow_schema

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

    return install_config(root, name, {split: writer(rows) for split, rows in splits.items()})


def clean_tmp(root: Path) -> None:
    """Remove the temp and superseded config dirs a killed build left under ``root``."""
    for p in list(root.glob(".tmp-*")) + list(root.glob(".old-*")):
        shutil.rmtree(p, ignore_errors=True)
