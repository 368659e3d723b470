"""--engine processes: the clients on local worker processes give exactly the sequential engine's numbers,
a dead worker stops the run with one line, and ``auto`` picks the engine (resume: tests/test_engine.py)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from drake.fl.nodes import NodeError
from tests.records import strip_timing
from tests.test_engine import _args, _run_seed


@pytest.mark.parametrize("method", ["fedavg", "fedmosaic"])
def test_processes_match_sequential_exactly(method: str, tiny_scenario: Path, tmp_path: Path) -> None:
    seq = _run_seed(_args(tiny_scenario, tmp_path / "seq", "--method", method))
    two = _run_seed(_args(tiny_scenario, tmp_path / "two", "--method", method, "--engine", "processes",
                          "--set", "engine.workers=2"))  # fmt: skip
    assert two["comm_bytes"]["total_up"] > 0 and two["final"]["0"]["unseen_adapted"]
    # the same seeded hooks on the same machine and thread count: bit-identical numbers, not just close ones
    assert strip_timing(two) == strip_timing(seq)


def test_a_dead_worker_stops_the_run_with_one_line(tiny_scenario: Path, tmp_path: Path, monkeypatch) -> None:
    from drake.fl.process_engine import ProcessEngine

    original = ProcessEngine.send

    def send(self, kind, ctx, requests):
        if kind == "train" and ctx.round == 1:
            os.kill(self._procs[1].pid, signal.SIGKILL)
        return original(self, kind, ctx, requests)

    monkeypatch.setattr(ProcessEngine, "send", send)
    with pytest.raises(NodeError, match=r"worker 1 \(clients [0-9, ]+\) exited during train of round 2 .*--resume"):
        _run_seed(_args(tiny_scenario, tmp_path / "dead", "--engine", "processes", "--set", "engine.workers=2"))


def test_auto_picks_processes_on_a_multicore_cpu_machine(monkeypatch) -> None:
    from drake.errors import UnknownNameError
    from drake.runner import resolve_engine

    monkeypatch.setattr(os, "cpu_count", lambda: 2)  # conftest runs torch on one thread
    assert resolve_engine("auto", 10, "cpu") == "processes"
    assert resolve_engine("auto", 1, "cpu") == "sequential"  # one client: nothing to spread
    assert resolve_engine("auto", 10, "cuda") == "sequential"  # one GPU: clients take turns on it
    assert resolve_engine("sequential", 10, "cpu") == "sequential"
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert resolve_engine("auto", 10, "cpu") == "sequential"
    with pytest.raises(UnknownNameError, match="proceses"):
        resolve_engine("proceses", 10, "cpu")
