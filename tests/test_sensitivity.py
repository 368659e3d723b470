"""FedMosaic's sensitivity sweep: the plan, the points against the default, the table and the plot."""

from __future__ import annotations

from pathlib import Path

import pytest

from drake.errors import DataError, SpecError
from drake.sensitivity import GRID, defaults, sensitivity_plan, sensitivity_points, sensitivity_table


def _record(config: dict, shift: float) -> dict:
    """A one-seed result of two clients whose own-task scores are ``shift`` above a fixed base."""
    clients = [{"id": 0, "tasks": ["a"]}, {"id": 1, "tasks": ["b"]}]
    rounds = [{"round": 1, "eval": {"0": {"a": 0.4 + shift}, "1": {"b": 0.5 + shift}}},
              {"round": 2, "eval": {"0": {"a": 0.5 + shift, "b": 0.3}, "1": {"b": 0.6 + shift, "a": 0.2}}}]  # fmt: skip
    return {
        "run_info": {"method": {"name": "fedmosaic", "config": {**defaults(), **config}},
                     "scenario": {"spec": {"clients": clients}},
                     "protocol": {"name": "official", "self_rounds": [1, 2], "others_rounds": [2]}},  # fmt: skip
        "results": {"per_seed": [{"seed": 0, "status": "success", "rounds": rounds}]},
    }


def test_the_plan_moves_one_parameter_at_a_time() -> None:
    plan = sensitivity_plan()
    assert len(plan) == sum(len(v) for v in GRID.values())
    assert {r.method for r in plan} == {"fedmosaic"} and {r.scenario for r in plan} == {"drake-dynamic"}
    rank = next(r for r in plan if r.name == "fedmosaic+lora_r=8")
    assert rank.sets == ("lora_r=8", "lora_alpha=16")  # alpha / r stays 2
    tau = sensitivity_plan(["tau"])
    assert [r.sets for r in tau] == [(f"tau={v:g}",) for v in GRID["tau"]]
    argv = tau[0].argv([0], Path("out"))
    assert argv[argv.index("--set") + 1] == "tau=0.0625" and "--config" not in argv
    assert len({r.key for r in plan}) == len(plan)  # each point its own run folder
    with pytest.raises(SpecError, match="unknown parameter taux"):
        sensitivity_plan(["taux"])


def test_points_compare_each_value_with_the_default_on_the_same_seeds(tmp_path: Path) -> None:
    from drake.plots import plot_sensitivity
    from drake.sensitivity import PAPER_BY_SCORE, PAPER_DEFAULT

    default = _record({}, 0.0)
    sweep = [_record({"tau": 2.0}, 0.1), _record({"tau": 0.0625}, -0.2), _record({"ema_decay": 0.9}, 0.0)]
    points = sensitivity_points(sweep, default, seeds=[0])
    assert [(p.param, p.value, p.default) for p in points] == [
        ("tau", 0.0625, False), ("tau", 0.5, True), ("tau", 2.0, False), ("ema_decay", 0.5, True),
        ("ema_decay", 0.9, False)]  # fmt: skip
    high = points[2]
    assert high.scores["self.a_last"] == pytest.approx(points[1].scores["self.a_last"] + 0.1)
    assert high.scores["others.a_last"] == pytest.approx(points[1].scores["others.a_last"])
    table = sensitivity_table(points)
    row = next(line for line in table.splitlines() if line.startswith("| tau | 2 |"))
    assert row.endswith("| +10.0 | -0.58 | +0.0 | -0.02 |")  # Self: ours +10, the paper's 67.28 - 67.86; Others
    ema = next(line for line in table.splitlines() if line.startswith("| ema_decay | 0.9 |"))
    assert ema.endswith("| +0.0 | -0.47 | +0.0 | - |")  # the paper plots Others for tau only
    assert "| tau | **0.5** |" in table
    assert points[0].peers is None and "| 25.0 | - | +10.0 |" in row  # no relevance logged: no peers, "-"
    even = {"round": 2, "clients": [0, 1, 2], "matrix": [[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]}
    peaked = {"round": 2, "clients": [0, 1, 2], "matrix": [[0, 1, 0], [1, 0, 0], [0.8, 0.2, 0]]}
    sweep[0]["results"]["per_seed"][0]["relevance"] = [even, peaked]
    assert sensitivity_points(sweep, default, seeds=[0])[2].peers == pytest.approx((3 * 2 + 2 * 1 + 1 / 0.68) / 6)
    image = plot_sensitivity(points, PAPER_BY_SCORE, PAPER_DEFAULT, tmp_path / "s.png")
    assert image.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(DataError, match="no successful seed \\[1\\]"):
        sensitivity_points(sweep, default, seeds=[1])


def test_the_report_block_comes_from_kept_results_and_the_study_entry(tmp_path: Path) -> None:
    """``--report``: the study's FedMosaic entry is the default point; a kept sweep result the other point."""
    import json
    import shutil

    from drake.results import config_hash
    from drake.sensitivity import BEGIN, END, write_report
    from drake.spec import REPO_ROOT

    board = tmp_path / "board"
    (board / "results").mkdir(parents=True)
    entries = sorted((REPO_ROOT / "leaderboard" / "results").glob("fedmosaic--drake-dynamic-hetero--*.json"))
    for entry in entries:  # the default's entry and the paper's ablations, which share its file prefix
        shutil.copy(entry, board / "results" / entry.name)
    default = [e for e in entries if "--config" not in json.loads(e.read_text())["run_info"]["command"]]
    assert len(default) == 1 and len(entries) > 1
    record = json.loads(default[0].read_text())
    info = record["run_info"]
    info["method"]["config"]["tau"] = 2.0  # stands in for a sweep run (same scores)
    info["config_hash"] = config_hash(info["method"]["config"], info["scenario"]["fingerprint"], info["data"])
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "fedmosaic--drake-dynamic-hetero--00000000.json").write_text(json.dumps(record))
    doc = tmp_path / "docs" / "results.md"
    doc.parent.mkdir()
    doc.write_text(f"# Results\n\n{BEGIN}\nold\n{END}\n\nafter\n")
    message = write_report(doc, [0], tmp_path / "kept", board)
    text = doc.read_text()
    assert "old" not in text and text.endswith("after\n") and "| tau | 2 |" in text and "| tau | **0.5** |" in text
    assert "](img/fedmosaic-sensitivity.png)" in text and (doc.parent / "img" / "fedmosaic-sensitivity.png").is_file()
    assert "2 points" in message
    spread = record["results"]["summary"]["self"]["a_last"]["std"]  # the entry's own std over its seeds
    assert f"over the study's 3 seeds: Self A_last {100 * spread:.1f}," in text
    with pytest.raises(DataError, match="no sweep results"):
        write_report(doc, [0], tmp_path / "empty", board)
