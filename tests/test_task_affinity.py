"""benchmarks/task_affinity.py: the heatmap from a fake matrix, and a tiny real matrix that is reproducible."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from benchmarks import task_affinity as TA
from drake.errors import SpecError

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


def test_weight_update_and_cosine() -> None:
    a, b = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0], [0.0]])  # A: r x in (1 x 2), B: out x r (2 x 1)
    state = {"m.q.lora_A.default.weight": a, "m.q.lora_B.default.weight": b}
    assert TA.weight_update(state).tolist() == [3.0, 6.0, 0.0, 0.0]  # (B @ A) flattened
    with pytest.raises(SpecError, match="lora_A"):
        TA.weight_update({"m.q.weight": a})
    cos = TA.cosine_matrix([torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]), torch.zeros(2)])
    assert cos[0][1] == pytest.approx(math.sqrt(0.5)) and cos[1][1] == pytest.approx(1.0) and cos[2] == [0.0] * 3


def test_tiny_matrix_is_finite_and_deterministic(tmp_path: Path, untrained_models: dict[str, Path]) -> None:
    model = str(untrained_models["tiny-llama-s"])
    argv = ["--model", model, "--tasks", "irfl_3", "vsr_0", "--steps", "2", "--batch", "4", "--limit", "4",
            "--scale", "0.1", "--seed", "3", "--threads", "1", "--then-steps", "2"]  # fmt: skip
    first = TA.main([*argv, "--out", str(tmp_path / "a.json")])
    second = TA.main([*argv, "--out", str(tmp_path / "b.json")])
    assert first["tasks"] == ["vsr_0", "irfl_3"]  # ordered by group
    gain = first["gain"]
    assert len(gain) == 2 and all(len(r) == 2 for r in gain)
    assert all(math.isfinite(v) for r in gain for v in r)
    assert all(0.0 <= first["base"][t] <= 100.0 for t in first["tasks"])
    assert first["summary"]["within_group"] is None and math.isfinite(first["summary"]["across_groups"])
    assert (second["base"], second["gain"], second["final_loss"]) == (first["base"], gain, first["final_loss"])
    for key in ("prob_gain", "update_cosine", "transfer"):
        m = first[key]
        assert len(m) == 2 and all(len(r) == 2 and all(math.isfinite(v) for v in r) for r in m)
    cos = first["update_cosine"]
    assert cos[0][0] == pytest.approx(1.0) and cos[0][1] == pytest.approx(cos[1][0]) and abs(cos[0][1]) <= 1.0
    assert all(0.0 <= first["base_prob"][t] <= 100.0 for t in first["tasks"])
    assert (second["prob_gain"], second["update_cosine"]) == (first["prob_gain"], cos)
    assert second["transfer"] == first["transfer"] and second["then_base"] == first["then_base"]
    assert all(0.0 <= first["then_base"][t] <= 100.0 for t in first["tasks"]) and first["budget"]["then_steps"] == 2
    saved = json.loads((tmp_path / "a.json").read_text())
    assert saved["gain"] == gain and saved["groups"] == {"vsr_0": "fashion/edit", "irfl_3": "concepts"}
    assert saved["command"].startswith("python benchmarks/task_affinity.py --model")
    for png in ("a.png", "a_prob.png", "a_update.png", "a_transfer.png"):
        assert (tmp_path / png).read_bytes()[:8] == PNG


def test_choice_metrics_match_evaluate(untrained_models: dict[str, Path]) -> None:
    """The affinity's one scoring pass gives the accuracy ClientRuntime.evaluate gives."""
    from drake.data.build import ensure_built
    from drake.runner import load_rows
    from drake.spec import load_tasks

    args = TA.parse_args(["--model", str(untrained_models["tiny-llama-s"]), "--tasks", "irfl_3", "--batch", "4"])
    specs = [load_tasks()["irfl_3"]]
    data = load_rows(Path(ensure_built(specs, None, source="synth", scale=0.1, image_size=32)), specs)
    rt = TA.runtime(TA.adapted_model(args)[0], data, ["irfl_3"], args)
    acc, prob = TA.choice_metrics(rt, "irfl_3", 8)
    assert acc == pytest.approx(100 * rt.evaluate("irfl_3", limit=8)["score"]) and 0.0 < prob < 100.0


def test_open_tasks_are_refused(untrained_models: dict[str, Path]) -> None:
    with pytest.raises(SpecError, match="iconqa_2 are open-answer"):
        TA.main(["--model", str(untrained_models["tiny-llama-s"]), "--tasks", "iconqa_2", "--out", ""])


def test_cli_bad_task_is_one_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    script = Path(TA.__file__)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("DRAKE_DEBUG", None)
    done = subprocess.run([sys.executable, str(script), "--tasks", "iconqa_2", "--out", ""], capture_output=True,
                          text=True, env=env, cwd=tmp_path)  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == ["error: task_affinity: iconqa_2 are open-answer tasks; pass choice tasks only"]
