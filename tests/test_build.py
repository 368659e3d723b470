"""build -> load_dataset round trip, manifest freshness/corruption, train/test disjointness, scenario streams.

Uses a tiny family registered here, so these tests do not depend on the real synth families.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import sys
import types
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
from PIL import Image

import drake.data.build as B
import drake.data.generation as G
from drake.data.generation import ExtraSpec, row_hash, split_sizes, synth_rows
from drake.data.read import load_stream, load_task_split
from drake.data.schema import row_features, stream_features, validate_row
from drake.data.stream import round_schedule
from drake.data.synth.base import FAMILIES, IMAGE_TOKEN, Sample
from drake.errors import DataError, UnknownNameError
from drake.io import sha256_file
from drake.spec import load_scenario, load_tasks

os.environ.setdefault("HF_HUB_OFFLINE", "1")
FAMILY = "drake_test_tiny"
COLORS = ["red", "green", "blue", "yellow"]
SCALE = 0.08  # 24 train / 8 test rows


def tiny(ctx, space: int = 0, open: bool = False, extra_image: bool = False) -> Sample:
    """Coloured squares; with ``space`` the sample depends only on index % space (so splits can collide)."""
    rng = random.Random(ctx.index % space) if space else ctx.rng
    n = ctx.n_images + int(extra_image)
    images = [
        Image.new("RGB", (ctx.image_size,) * 2, tuple(rng.randrange(256) for _ in range(3))) for _ in range(n)
    ]
    answer = COLORS[(ctx.index % space) % 4] if space else COLORS[ctx.slot(4)]
    prompt = IMAGE_TOKEN * n + f" what colour is item {rng.randrange(10**6)}?"
    return Sample(images, prompt, answer, None if open else list(COLORS))


if FAMILY not in FAMILIES:
    FAMILIES.register(FAMILY, tiny)

TASKS_YAML = f"""\
schema_version: 1
tasks:
  - name: tiny_multi
    title: Three squares
    images: 3
    answer: choice
    metric: choice_accuracy
    sources: {{synth: {{family: {FAMILY}}}}}
  - name: tiny_open
    title: Open colour
    images: 1
    answer: open
    metric: token_f1
    sources: {{synth: {{family: {FAMILY}, params: {{open: true}}}}}}
  - name: tiny_small
    title: Small sample space
    images: 1
    answer: choice
    metric: choice_accuracy
    sources: {{synth: {{family: {FAMILY}, params: {{space: 50}}}}}}
  - name: tiny_bad
    title: Wrong image count
    images: 2
    answer: choice
    metric: choice_accuracy
    sources: {{synth: {{family: {FAMILY}, params: {{extra_image: true}}}}}}
"""

SCENARIO_YAML = """\
name: tiny-stream
description: two clients, two tasks each
mode: dynamic
rounds: 4
rounds_per_task: 2
pools:
  p: [m1, m2]
clients:
  - {id: 0, tasks: [tiny_multi, tiny_open]}
  - {id: 1, tasks: [tiny_small, tiny_multi]}
"""


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "tasks.yaml").write_text(TASKS_YAML)
    return tmp_path, load_tasks(tmp_path / "tasks.yaml")


def _build(tasks, out, **kw):
    kw = {"scale": SCALE, "extras": False, "progress": False, "workers": 1, **kw}
    return B.build(tasks, out, **kw)


def _mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*.parquet")}


def test_round_trip_multi_image_and_open(env):
    tmp, tasks = env
    out = tmp / "data"
    manifest = _build([tasks["tiny_multi"], tasks["tiny_open"]], out)
    assert manifest.status == {"tiny_multi": "built", "tiny_open": "built"}
    assert not list(out.rglob("*.py"))  # datasets >= 4 refuses a folder holding a loading script
    ds = datasets.load_dataset(str(out), "tiny_multi", split="train", cache_dir=str(tmp / "hf-cache"))
    assert len(ds) == 24 and ds.features == row_features()
    row = ds[0]
    assert row["id"] == "tiny_multi-train-00000" and row["task"] == "tiny_multi"
    assert len(row["images"]) == 3 and all(isinstance(im, Image.Image) for im in row["images"])
    assert row["images"][0].size == (32, 32) and row["answer"] in row["choices"]
    test = load_task_split(out, "tiny_open", "test")
    assert len(test) == 8 and test[0]["choices"] is None
    assert sorted(datasets.get_dataset_config_names(str(out))) == ["tiny_multi", "tiny_open"]
    data = json.loads((out / "manifest.json").read_text())
    entry = data["tasks"]["tiny_multi"]
    assert entry["spec_fingerprint"] == tasks["tiny_multi"].fingerprint()
    assert entry["files"]["train"]["rows"] == 24
    assert entry["files"]["test"]["sha256"] == sha256_file(out / "tiny_multi/test-00000-of-00001.parquet")


def test_same_inputs_skip_and_changed_inputs_rebuild(env):
    tmp, tasks = env
    out = tmp / "data"
    specs = [tasks["tiny_multi"], tasks["tiny_open"]]
    _build(specs, out)
    before = _mtimes(out)
    again = _build(specs, out)
    assert again.status == {"tiny_multi": "cached", "tiny_open": "cached"}
    assert _mtimes(out) == before
    retitled = dataclasses.replace(tasks["tiny_open"], title="Renamed")  # spec fingerprint changes
    assert _build([tasks["tiny_multi"], retitled], out).status == {
        "tiny_multi": "cached",
        "tiny_open": "built",
    }
    first = load_task_split(out, "tiny_open", "train")[0]["prompt"]
    assert _build(specs, out, seed=1).status == {"tiny_multi": "built", "tiny_open": "built"}
    fresh = pq.read_table(out / "tiny_open" / "train-00000-of-00001.parquet")["prompt"][0].as_py()
    assert fresh != first
    assert load_task_split(out, "tiny_open", "train")[0]["prompt"] == fresh  # not the stale Arrow cache


def test_corrupted_or_missing_file_rebuilds_only_that_task(env):
    tmp, tasks = env
    out = tmp / "data"
    specs = [tasks["tiny_multi"], tasks["tiny_open"]]
    _build(specs, out)
    target = out / "tiny_multi" / "train-00000-of-00001.parquet"
    good_sha = sha256_file(target)
    untouched = _mtimes(out)["tiny_open/train-00000-of-00001.parquet"]
    with open(target, "r+b") as f:  # flip bytes in the middle: same size, different content
        f.seek(target.stat().st_size // 2)
        f.write(b"\x00corrupt\x00")
    status = _build(specs, out).status
    assert status == {"tiny_multi": "built", "tiny_open": "cached"}
    assert sha256_file(target) == good_sha  # generation is deterministic: the same bytes come back
    assert _mtimes(out)["tiny_open/train-00000-of-00001.parquet"] == untouched
    (out / "tiny_open" / "test-00000-of-00001.parquet").unlink()
    assert _build(specs, out).status == {"tiny_multi": "cached", "tiny_open": "built"}
    assert len(load_task_split(out, "tiny_open", "test")) == 8


def test_subset_build_keeps_other_configs(env):
    tmp, tasks = env
    out = tmp / "data"
    _build([tasks["tiny_multi"]], out)
    _build([tasks["tiny_open"]], out)
    assert sorted(datasets.get_dataset_config_names(str(out))) == ["tiny_multi", "tiny_open"]
    assert len(load_task_split(out, "tiny_multi", "train")) == 24
    with pytest.raises(UnknownNameError, match="did you mean 'tiny_open'"):
        load_task_split(out, "tiny_opn", "train")
    with pytest.raises(UnknownNameError, match="no split 'dev'"):
        load_task_split(out, "tiny_open", "dev")
    with pytest.raises(DataError, match="not a built DRAKE directory"):
        load_task_split(tmp / "elsewhere", "tiny_open", "train")


def test_train_test_disjoint_with_deterministic_skips(env):
    tmp, tasks = env
    out = tmp / "data"
    _build([tasks["tiny_small"]], out)
    train = load_task_split(out, "tiny_small", "train").cast_column(
        "images", datasets.List(datasets.Image(decode=False))
    )
    test = load_task_split(out, "tiny_small", "test").cast_column(
        "images", datasets.List(datasets.Image(decode=False))
    )
    train_hashes = {row_hash(r) for r in train}
    assert not train_hashes & {row_hash(r) for r in test}
    # index i samples (i % 50): train used 0..23, so test indices 0..23 collide and are skipped
    assert test["id"] == [f"tiny_small-test-{i:05d}" for i in range(24, 32)]
    everything = {row_hash(r) for r in synth_rows(tasks["tiny_small"], "train", 50, seed=0)}
    with pytest.raises(DataError, match="'tiny_small'.*sample space is too small"):
        synth_rows(tasks["tiny_small"], "test", 1, seed=0, exclude_hashes=everything)


def test_invalid_rows_name_the_task(env):
    tmp, tasks = env
    with pytest.raises(DataError, match="task 'tiny_bad'.*3 images, but tasks.yaml declares images: 2"):
        _build([tasks["tiny_bad"]], tmp / "data")
    with pytest.raises(DataError, match="placeholders"):
        validate_row(
            {"id": "x", "task": "t", "images": [], "prompt": IMAGE_TOKEN, "choices": None, "answer": "a"}
        )
    with pytest.raises(DataError, match="not among choices"):
        validate_row(
            {"id": "x", "task": "t", "images": [], "prompt": "q", "choices": ["b"], "answer": "a"},
            answer="choice",
        )


def test_parallel_build_matches_serial(env):
    tmp, tasks = env
    specs = [tasks["tiny_multi"], tasks["tiny_open"], tasks["tiny_small"]]
    serial = _build(specs, tmp / "serial", workers=1)
    parallel = _build(specs, tmp / "parallel", workers=2)
    for name in ("tiny_multi", "tiny_open", "tiny_small"):
        assert serial.tasks[name]["files"] == parallel.tasks[name]["files"]


def test_scenario_stream_config_per_client(env):
    tmp, tasks = env
    (tmp / "sc.yaml").write_text(SCENARIO_YAML)
    sc = load_scenario(tmp / "sc.yaml", tasks=tasks)
    out = tmp / "data"
    specs = [tasks["tiny_multi"], tasks["tiny_open"], tasks["tiny_small"]]
    with pytest.raises(DataError, match="needs tasks that are not in this build: tiny_small"):
        _build(specs[:2], tmp / "partial", scenarios=[sc])
    manifest = _build(specs, out, scenarios=[sc])
    assert manifest.status["tiny-stream"] == "built"
    stream = datasets.load_dataset(str(out), "tiny-stream", split="client_1", cache_dir=str(tmp / "hf-cache"))
    assert len(stream) == 24 + 24
    assert set(stream_features()) <= set(stream.features)
    expected = [
        (r, t, i)
        for r, items in enumerate(round_schedule(sc.clients[1], sc, manifest.train_sizes(), 0))
        for t, i in items
    ]
    assert [
        (r, s.rsplit("-", 2)[0], int(s.rsplit("-", 1)[1]))
        for r, s in zip(stream["round"], stream["source_id"])
    ] == expected
    assert stream["stage"] == [0 if r < 2 else 1 for r in stream["round"]]
    train = load_task_split(out, "tiny_small", "train")
    first = stream[0]
    assert first["prompt"] == train[int(first["source_id"].rsplit("-", 1)[1])]["prompt"]
    assert len(first["images"]) == 1 and isinstance(first["images"][0], Image.Image)
    assert len(load_stream(out, "tiny-stream", 0)) == 24 + 8 * 3
    assert _build(specs, out, scenarios=[sc]).status["tiny-stream"] == "cached"


def _fake_public(ctx) -> Sample:
    key = ctx.index % 12  # ignores the split: test rows equal to a train row must be skipped
    n = 1 + key % 2  # any image count is fine for extras
    img = Image.new("RGB", (ctx.image_size,) * 2, (20 * key, 0, 0))
    return Sample([img] * n, IMAGE_TOKEN * n + " describe", f"red {key}")


def _fake_rows(split: str, n: int, image_size: int, seed: int) -> list[dict]:
    img = Image.new("RGB", (image_size, image_size), (0, 0, 255))
    return [
        {"images": [img], "prompt": f"{IMAGE_TOKEN} q{i}", "choices": ["yes", "no"], "answer": "yes"}
        for i in range(n)
    ]


def test_extra_configs_with_fake_generators(env, monkeypatch):
    tmp, tasks = env
    module = types.ModuleType("drake_test_fake_extra")
    module.public_sample, module.rows = _fake_public, _fake_rows
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(
        G,
        "EXTRAS",
        {
            "fakepub": ExtraSpec(
                f"{module.__name__}:public_sample", "sample", {"train": 100, "test": 20}, "fake"
            ),
            "fakerows": ExtraSpec(f"{module.__name__}:rows", "rows", {"train": 10, "test": 10}, "fake"),
            "notyet": ExtraSpec("drake_test_no_such_module:fn", "sample", {"train": 10}, "missing"),
        },
    )
    out = tmp / "data"
    manifest = B.build([tasks["tiny_open"]], out, scale=SCALE, progress=False, workers=1)
    assert manifest.status["fakepub"] == "built" and manifest.status["fakerows"] == "built"
    assert manifest.status["notyet"] == "skipped: drake_test_no_such_module not found"
    pub_train = load_task_split(out, "fakepub", "train")
    pub_test = load_task_split(out, "fakepub", "test")
    assert len(pub_train) == 8 and len(pub_test) == 8  # max(8, round(n * 0.08))
    assert {len(r["images"]) for r in pub_train} == {1, 2}
    # train holds keys 0..7, so test skips indices 0-7 and 12-19 (keys 0..7 again)
    assert [int(i.rsplit("-", 1)[1]) for i in pub_test["id"]] == [8, 9, 10, 11, 20, 21, 22, 23]
    rows = load_task_split(out, "fakerows", "test")
    assert rows[0]["id"] == "fakerows-test-00000" and rows[0]["choices"] == ["yes", "no"]
    assert B.build([tasks["tiny_open"]], out, scale=SCALE, progress=False).status["fakepub"] == "cached"


def test_ensure_built_default_dir_and_sources(env, monkeypatch):
    tmp, tasks = env
    monkeypatch.setenv("DRAKE_HOME", str(tmp / "home"))
    path = B.ensure_built([tasks["tiny_open"]], scale=SCALE, extras=False, progress=False, workers=1)
    assert path == tmp / "home" / "data" / "drake-synth-s0.08-px32-seed0"
    assert len(load_task_split(path, "tiny_open", "train")) == 24
    with pytest.raises(
        DataError, match="no converted DRAKE release here; run `drake build --source drake --from DIR"
    ):
        B.ensure_built([tasks["tiny_open"]], source="drake")
    with pytest.raises(DataError, match="--scale must be a finite number > 0"):
        B.build([tasks["tiny_open"]], tmp / "x", scale=0)


def test_sizes():
    assert split_sizes(1.0) == {"train": 300, "test": 100}
    assert split_sizes(0.01) == {"train": 8, "test": 8}
    assert split_sizes(2.5) == {"train": 750, "test": 250}
