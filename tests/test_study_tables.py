"""scripts/study_tables.py: the evidence tables of docs/results.md, read from result files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "study_tables.py"


@pytest.fixture(scope="module")
def tables():
    spec = importlib.util.spec_from_file_location("study_tables", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record(mode: str) -> dict:
    clients = [{"id": c, "stages": [{"tasks": [f"a{c}"]}, {"tasks": [f"b{c}"]}]} for c in (0, 1)]
    evals = [{"0": {"a0": 0.2, "b0": 0.6}, "1": {"a1": 0.4, "b1": 0.8}}, {"0": {"a0": 0.3, "b0": 0.5}, "1": {"a1": 0.3, "b1": 0.7}}]
    seeds = [{"rounds": [{"round": 1, "eval": {"0": {"a0": 0.0}}}, {"round": 2, "eval": e}, {"round": 3}]} for e in evals]
    return {"run_info": {"scenario": {"spec": {"mode": mode, "clients": clients}}}, "results": {"per_seed": seeds}}


def test_current_vs_earlier_task_reads_the_last_scored_round(tables) -> None:
    """Current task = each client's last stage, earlier = the stages before it; mean over clients, then seeds."""
    line = tables.current_vs_earlier(_record("dynamic"))
    assert line == "Self at the last round: current task 65.0, earlier own tasks 30.0 (mean over seeds)"
    assert tables.current_vs_earlier(_record("static")) is None


def test_relevance_tracking_splits_the_first_round_of_a_new_task_from_the_others(tables) -> None:
    """The L1 change of each client's relevance row from the round before: round 3 starts a new task (the
    spec's stage starts at 2, i.e. after round 2), so its change counts as a switch."""
    record = _record("dynamic")
    for c in record["run_info"]["scenario"]["spec"]["clients"]:
        c["stages"][1]["start_round"], c["stages"][0]["start_round"] = 2, 0
    record["run_info"]["scenario"]["spec"]["rounds"] = 4
    rows = ([[0, 1], [1, 0]], [[0, 1], [1, 0]], [[0, 1], [1, 0]], [[0, 1], [1, 0]])
    rel = [{"round": r, "matrix": [list(x) for x in m]} for r, m in enumerate(rows, start=1)]
    rel[2]["matrix"] = [[0.5, 0.5], [1, 0]]  # round 3 moves client 0's row by 1.0 (L1), client 1's not at all
    record["results"]["per_seed"] = [{"relevance": rel}]
    line = tables.relevance_tracking(record)
    assert line.endswith("at task switches 0.500, other rounds 0.250")  # rounds 2 and 4: 0 and (1.0 + 0) / 2
    assert tables.relevance_tracking(_record("dynamic")) is None


def test_across_puts_each_method_on_both_scenarios_side_by_side(tables, tmp_path: Path) -> None:
    """Only methods with an official entry on every scenario named get a row; the change is from the first."""
    import shutil

    board = Path(__file__).resolve().parents[1] / "leaderboard" / "results"
    (tmp_path / "results").mkdir()
    for pattern in ("fedavg--drake-dynamic-hetero--986e79e6.json", "fedavg--hetrank-homo--*.json",
                    "local--hetrank-homo--*.json", "fedavg--drake-dynamic-hetero--720dfcf0.json"):  # fmt: skip
        for path in board.glob(pattern):
            shutil.copy(path, tmp_path / "results")
    rows = tables.across(tmp_path, ["drake-dynamic", "hetrank"])
    assert [r[0] for r in rows] == ["fedavg"]  # local has no drake-dynamic file here; server-global is not official
    assert rows[0][1:4] == ["46.8 ± 0.6", "42.2 ± 1.1", "-4.7"] and rows[0][5:] == ["35.3 ± 1.0", "-2.8"]
