"""LazyRows: the rows ``datasets`` gives, with images kept encoded until read, in far less memory; read
without ``datasets``."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from drake.data.build import ensure_built
from drake.data.read import load_task_split
from drake.data.rows import LazyRows, column
from drake.runner import load_rows
from drake.spec import load_tasks

TASKS = ("nlvr2_0", "iconqa_2")  # two images a row; an open-ended task


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tasks = load_tasks()
    return Path(
        ensure_built(
            [tasks[t] for t in TASKS],
            tmp_path_factory.mktemp("rows"),
            scale=0.05,
            extras=False,
            progress=False,
        )
    )


def _same(a: dict, b: dict) -> bool:
    pixels = (
        [np.asarray(i.convert("RGB")) for i in a["images"]],
        [np.asarray(i.convert("RGB")) for i in b["images"]],
    )
    return {k: v for k, v in a.items() if k != "images"} == {
        k: v for k, v in b.items() if k != "images"
    } and all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(*pixels, strict=True))


def test_lazy_rows_equal_the_decoded_dataset(built: Path) -> None:
    data = load_rows(built, [load_tasks()[t] for t in TASKS])
    for task in TASKS:
        for split in ("train", "test"):
            rows, ds = data[task].splits[split], load_task_split(built, task, split)
            assert isinstance(rows, LazyRows) and len(rows) == len(ds) > 0
            assert all(_same(rows[i], dict(ds[i])) for i in range(len(ds)))
            assert [r["id"] for r in rows] == ds["id"] and column(rows, "answer") == ds["answer"]
            part = rows[1:3]
            assert isinstance(part, LazyRows) and [r["id"] for r in part] == ds["id"][1:3]
            again = pickle.loads(pickle.dumps(rows))  # what the Flower engine ships: bytes, not pixels
            assert all(_same(a, b) for a, b in zip(again, rows, strict=True))
    assert column([{"answer": "x"}], "answer") == ["x"]


def test_lazy_rows_hold_bytes_not_pixels(built: Path) -> None:
    rows = load_rows(built, [load_tasks()["nlvr2_0"]])["nlvr2_0"].splits["train"]
    lazy, decoded = (
        len(pickle.dumps(rows)),
        len(pickle.dumps([np.asarray(i) for r in rows for i in r["images"]])),
    )
    assert lazy < decoded / 3


def test_reading_rows_imports_neither_datasets_nor_pandas(built: Path) -> None:
    """A run reads its rows straight from parquet: ``datasets`` and pandas cost ~100 MB of RSS it never needs."""
    code = (
        "import sys; from drake.data.read import read_split; "
        f"rows = read_split({str(built)!r}, 'nlvr2_0', 'train'); "
        "assert rows and 'bytes' in rows[0]['images'][0]; "
        "print(sorted(m for m in ('datasets', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_ensure_built_leaves_an_up_to_date_directory_alone(built: Path) -> None:
    tasks = load_tasks()
    stamps = [(built / f).stat().st_mtime_ns for f in ("README.md", "manifest.json")]
    ensure_built([tasks[t] for t in TASKS], built, scale=0.05, extras=False, progress=False)
    assert [(built / f).stat().st_mtime_ns for f in ("README.md", "manifest.json")] == stamps
