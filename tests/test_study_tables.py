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
