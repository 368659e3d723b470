"""The dataset card of a built directory: HF YAML header (configs still load), one table row per task with
its real counterpart, format, sizes and chance level, linked sample grids, and the calibration table."""

from __future__ import annotations

import json
import os
import re

import datasets
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

import drake.data.build as B
import drake.data.calibration as calibration
import drake.data.card as card
from drake.data.calibration import load_calibration
from drake.data.manifest import Manifest
from drake.data.schema import row_features
from drake.data.synth.base import FAMILIES, IMAGE_TOKEN, Sample, choice_list
from drake.spec import SourceSpec, TaskSpec, load_tasks

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REAL = ("vsr_0", "fashion200k_0", "iconqa_2")
SCALE = 0.05  # 15 train / 8 test rows


def card_toy_mixed(ctx) -> Sample:
    """Two or four choices on alternate rows: chance is the mean of 1/2 and 1/4, not 1/k of one row."""
    choices = ["yes", "no"] if ctx.index % 2 else ["red", "green", "blue", "yellow"]
    img = Image.new("RGB", (ctx.image_size,) * 2, (ctx.index * 37 % 256, 90, 200))
    return Sample([img, img], f"{IMAGE_TOKEN}{IMAGE_TOKEN} item {ctx.index}?\n{choice_list(choices)}",
                  choices[ctx.index // 2 % len(choices)], choices)  # fmt: skip


if "card_toy_mixed" not in FAMILIES:
    FAMILIES.register("card_toy_mixed", card_toy_mixed)
TOY = TaskSpec(
    "toy_mixed", "Toy", 2, "choice", "choice_accuracy", {"synth": SourceSpec("synth", "card_toy_mixed")}
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("card") / "data"
    tasks = load_tasks()
    B.build([*(tasks[t] for t in REAL), TOY], out, scale=SCALE, extras=False, progress=False, workers=1)
    return out


def _header(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def _rows(text: str) -> dict[str, list[str]]:
    """The task table: task -> its cells."""
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 8 and cells[0] not in ("task", "---"):
            out[cells[0]] = cells
    return out


def test_yaml_header_has_metadata_and_every_config_loads(built, tmp_path):
    text = (built / "README.md").read_text()
    meta = _header(text)
    assert meta["pretty_name"] == "DRAKE-synth"
    assert "apache-2.0" in meta["license"] and meta["language"] == ["en"]
    assert {"visual-question-answering", "multiple-choice"} <= set(meta["task_categories"])
    assert meta["size_categories"] == ["n<1K"] and "synthetic" in meta["tags"]
    configs = {c["config_name"]: c["data_files"] for c in meta["configs"]}
    assert set(configs) == {*REAL, "toy_mixed"}
    assert configs["vsr_0"] == [
        {"split": "train", "path": "vsr_0/train-*.parquet"},
        {"split": "test", "path": "vsr_0/test-*.parquet"},
    ]
    for name in configs:
        ds = datasets.load_dataset(str(built), name, split="test", cache_dir=str(tmp_path / "hf"))
        assert len(ds) == 8 and ds.features == row_features()


def test_one_row_per_task_with_counterpart_format_and_chance(built):
    rows = _rows((built / "README.md").read_text())
    assert set(rows) == {*REAL, "toy_mixed"}
    vsr = rows["vsr_0"]
    assert vsr[1] == "Spatial Understanding (VSR, subset 0)"
    assert vsr[2:6] == ["1 image, 2-way choice", "15", "8", "50.0%"]
    assert rows["fashion200k_0"][2] == "5 images, 7-way choice" and rows["fashion200k_0"][5] == "14.3%"
    assert rows["iconqa_2"][2] == "1 image, open" and rows["iconqa_2"][5] == "open"
    toy = rows["toy_mixed"]
    assert toy[1] == "—" and toy[2] == "2 images, 2-4-way choice"  # not in tasks.yaml: no real counterpart
    choices = pq.read_table(built / "toy_mixed/test-00000-of-00001.parquet").column("choices").to_pylist()
    expected = sum(1 / len(c) for c in choices) / len(choices)
    assert toy[5] == f"{100 * expected:.1f}%" == "37.5%"
    assert card.chance_level(choices) == pytest.approx(expected)
    assert card.chance_level([None, None]) is None


def test_grids_exist_are_linked_and_refresh_only_when_stale(built):
    text = (built / "README.md").read_text()
    links = re.findall(r"\]\((grids/[^)]+\.png)\)", text)
    assert {f"grids/{t}.png" for t in (*REAL, "toy_mixed")} <= set(links)
    for link in set(links):
        with Image.open(built / link) as im:
            assert (
                im.format == "PNG" and im.width >= 5 * card.THUMB
            )  # fashion200k_0: five images side by side
    assert card.save_grids(built) == []  # up to date
    test_file = built / "vsr_0/test-00000-of-00001.parquet"
    later = (built / "grids/vsr_0.png").stat().st_mtime_ns + 10**9
    os.utime(test_file, ns=(later, later))
    assert card.save_grids(built) == [built / "grids/vsr_0.png"]
    (built / "grids/iconqa_2.png").unlink()
    assert "grids/iconqa_2.png" not in card.render_card(built)  # a missing grid is not linked
    assert card.save_grids(built, ["iconqa_2"]) == [built / "grids/iconqa_2.png"]


def test_calibration_table_is_picked_up(built, tmp_path, monkeypatch):
    assert load_calibration(tmp_path / "absent.json") is None
    text = card.render_card(built, calibration=None)
    assert _rows(text)["vsr_0"][6] == "—" and "python benchmarks/calibrate_tasks.py" in text
    table = {
        "command": "python benchmarks/calibrate_tasks.py --steps 100",
        "model": "tiny-llama-m",
        "budget": {"steps": 100, "batch": 8},
        "updated_by": [
            {
                "command": "python benchmarks/calibrate_tasks.py --tasks vsr_0",
                "tasks": ["vsr_0"],
                "why": "vsr_0 redesigned",
            }
        ],
        "band": {"min_points_above_chance": 10.0, "max_accuracy": 95.0},
        "tasks": {
            "vsr_0": {"accuracy": 0.875, "chance": 0.5},
            "iconqa_2": {"accuracy": 0.25, "chance": None, "accuracy_seeds": [0.2, 0.3], "sd": 0.0707},
            "irfl_0": {"accuracy": 0.55, "chance": 0.5},
        },
    }
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(table))
    text = card.render_card(built, calibration=load_calibration(path))
    rows = _rows(text)
    assert rows["vsr_0"][6] == "87.5%" and rows["fashion200k_0"][6] == "—"
    assert rows["iconqa_2"][6] == "25.0% ± 7.1"  # several seeds: their mean and spread
    assert "tiny-llama-m" in text and "steps=100" in text
    assert (
        "Re-run for vsr_0 with `python benchmarks/calibrate_tasks.py --tasks vsr_0` (vsr_0 redesigned)."
        in text
    )
    assert "2 of 3 tasks are in the band" in text  # irfl_0 is 5 points above chance: out
    assert "Too hard for this model in this budget: irfl_0." in text and "Solved:" not in text
    # the default location is read by every build's README writer, and passed to the card (which reads no file)
    monkeypatch.setattr(calibration, "CALIBRATION_PATH", path)
    B.build([load_tasks()["vsr_0"]], built, scale=SCALE, extras=False, progress=False, workers=1)
    assert _rows((built / "README.md").read_text())["vsr_0"][6] == "87.5%"
    assert _rows(card.render_card(built))["vsr_0"][6] == "—"
    path.write_text("{not json")
    assert load_calibration(path) is None


def test_real_drake_build_is_not_called_synth(built):
    manifest = Manifest.read(built)
    manifest.data["params"] = {**manifest.data["params"], "source": "drake"}
    text = card.render_card(manifest)
    meta = _header(text)
    assert meta["pretty_name"] == "DRAKE" and meta["license"] == ["other"]
    assert "# DRAKE\n" in text and "procedurally generated" not in text
