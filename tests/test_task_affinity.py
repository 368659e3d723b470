"""benchmarks/task_affinity.py: the heatmap from a fake matrix, and a tiny real matrix that is reproducible."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import task_affinity as TA

PNG = b"\x89PNG\r\n\x1a\n"


def test_plot_writes_png_from_fake_matrix(tmp_path: Path) -> None:
    names = ["vsr_0", "irfl_3", "iconqa_1"]
    groups = TA.task_groups(names)
    assert groups == {"vsr_0": "fashion/edit", "irfl_3": "concepts", "iconqa_1": "QA"}
    gain = [[12.0, -3.0, 0.0], [1.5, 8.0, -0.5], [0.0, 2.0, 20.0]]
    a = TA.plot_affinity(gain, names, groups, tmp_path / "a.png", title="fake")
    b = TA.plot_affinity(gain, names, groups, tmp_path / "b.png", title="fake")
    assert a.read_bytes()[:8] == PNG and a.stat().st_size > 5000
    assert a.read_bytes() == b.read_bytes()  # reproducible bytes
    with pytest.raises(ValueError):
        TA.plot_affinity(gain[:2], names, groups, tmp_path / "c.png")


def test_order_and_summary() -> None:
    names = ["iconqa_1", "vsr_0", "iconqa_0", "fashion200k_2", "dreamsim_0"]
    groups = TA.task_groups(names)
    assert groups["dreamsim_0"] == TA.OTHER
    order = TA.order_by_group(names, groups)
    assert order == ["vsr_0", "fashion200k_2", "iconqa_1", "iconqa_0", "dreamsim_0"]
    gain = [[10, 4, 0, 0, 0], [2, 6, 0, 0, 0], [-2, 0, 8, 3, 0], [0, 0, 5, 9, 0], [0, 0, 0, 0, 1]]
    s = TA.summarize(gain, order, groups)
    assert s["diagonal"] == pytest.approx(34 / 5)
    assert s["within_group"] == pytest.approx((4 + 2 + 3 + 5) / 4) and s["pairs"]["within_group"] == 4
    assert s["across_groups"] == pytest.approx(-2 / 16) and s["pairs"]["across_groups"] == 16
    assert s["blocks"]["QA"]["fashion/edit"] == pytest.approx(-2 / 4) and s["blocks"][TA.OTHER][TA.OTHER] is None


def test_tiny_matrix_is_finite_and_deterministic(tmp_path: Path, untrained_models: dict[str, Path]) -> None:
    model = str(untrained_models["tiny-llama-s"])
    argv = ["--model", model, "--tasks", "irfl_3", "vsr_0", "--steps", "2", "--batch", "4", "--limit", "4",
            "--scale", "0.1", "--seed", "3", "--threads", "1"]  # fmt: skip
    first = TA.main([*argv, "--out", str(tmp_path / "a.json")])
    second = TA.main([*argv, "--out", str(tmp_path / "b.json")])
    assert first["tasks"] == ["vsr_0", "irfl_3"]  # ordered by group
    gain = first["gain"]
    assert len(gain) == 2 and all(len(r) == 2 for r in gain)
    assert all(math.isfinite(v) for r in gain for v in r)
    assert all(0.0 <= first["base"][t] <= 100.0 for t in first["tasks"])
    assert first["summary"]["within_group"] is None and math.isfinite(first["summary"]["across_groups"])
    assert (second["base"], second["gain"], second["final_loss"]) == (first["base"], gain, first["final_loss"])
    saved = json.loads((tmp_path / "a.json").read_text())
    assert saved["gain"] == gain and saved["groups"] == {"vsr_0": "fashion/edit", "irfl_3": "concepts"}
    assert saved["command"].startswith("python benchmarks/task_affinity.py --model")
    assert (tmp_path / "a.png").read_bytes()[:8] == PNG
