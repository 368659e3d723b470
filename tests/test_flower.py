"""--engine flower on real SuperLink + SuperNodes (loopback): same numbers as the sequential engine, clean
failure when a node dies mid-round, one-line error without the extra. Run with ``pytest -m flower``."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from drake.runner import add_run_arguments, make_engine, plan_from_args, seed_record
from tests.records import strip_timing

pytestmark = pytest.mark.flower
ROOT = Path(__file__).resolve().parents[1]
# conftest's tiny_scenario is smoke.yaml's clients, tasks and unseen task on untrained tiny models (smoke.yaml
# itself loads pre-trained zoo models, which a fresh checkout would first pre-train for minutes)
FAST = ["--scale", "0.2", "--no-progress", "--set", "local_steps=2", "--set", "batch_size=4",
        "--set", "engine.others_limit=4", "--set", "engine.self_limit=6", "--set", "engine.unseen_limit=4",
        "--set", "engine.unseen_adapt_steps=2"]  # fmt: skip


def _args(scenario: Path, out: Path, *extra: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_run_arguments(p)
    return p.parse_args(["--scenario", str(scenario), "--out", str(out), *FAST, *extra])


def _record(args: argparse.Namespace, callbacks=()) -> dict:
    plan = plan_from_args(args)
    engine, method = make_engine(plan, 0, Path(args.out) / "work")
    raw = engine.run(method, plan.scenario, seed=0, callbacks=callbacks)
    return seed_record(0, plan.scenario, raw, wall_seconds=0.0)


@pytest.mark.parametrize(("method", "nodes"), [("fedavg", 2), ("fedmosaic", 3)])
def test_flower_matches_sequential_exactly(method: str, nodes: int, tiny_scenario: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DRAKE_FLOWER_NODES", str(nodes))
    monkeypatch.delenv("DRAKE_FLOWER_SUPERLINK", raising=False)
    seq = _record(_args(tiny_scenario, tmp_path / "seq", "--method", method))
    t0 = time.perf_counter()
    flower = _record(_args(tiny_scenario, tmp_path / "flower", "--method", method, "--engine", "flower"))
    print(f"{method}: flower engine {time.perf_counter() - t0:.1f} s on {nodes} SuperNodes")
    placement = json.loads((tmp_path / "flower" / "work" / "flower" / "placement.json").read_text())
    assert len(placement["nodes"]) == nodes and sorted(c for cs in placement["nodes"].values() for c in cs) == [0, 1, 2]
    assert flower["comm_bytes"]["total_up"] > 0 and flower["final"]["0"]["unseen_adapted"]
    # the same seeded hooks on the same machine and thread count: bit-identical numbers, not just close ones
    assert strip_timing(flower) == strip_timing(seq)


def _kill_after_first_push(monkeypatch, pid_of) -> dict[str, float]:
    """Kill a SuperNode (SIGKILL) right after round 1's train messages went out: mid-round, setup included."""
    from drake.fl import flower_engine as fe

    killed: dict[str, float] = {}
    original = fe.Relay.call

    def call(self, op, *args, **kw):
        out = original(self, op, *args, **kw)
        if op == "push" and args[0][0][1] == "train" and not killed:
            os.kill(pid_of(), signal.SIGKILL)
            killed["at"] = time.monotonic()
        return out

    monkeypatch.setattr(fe.Relay, "call", call)
    return killed


def test_remote_node_killed_mid_round_stops_after_the_timeout(tiny_scenario: Path, tmp_path: Path, monkeypatch) -> None:
    from drake.fl.flower_engine import FlowerError

    serve = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "flower_local.py"), "--nodes", "2", "--serve", "--home", str(tmp_path / "fed")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        info = json.loads(serve.stdout.readline())
        monkeypatch.setenv("DRAKE_FLOWER_SUPERLINK", info["superlink"])
        monkeypatch.setenv("DRAKE_FLOWER_NODES", "2")
        monkeypatch.setenv("DRAKE_FLOWER_TIMEOUT", "25")
        killed = _kill_after_first_push(monkeypatch, lambda: info["pids"]["node1"])
        with pytest.raises(FlowerError) as err:
            _record(_args(tiny_scenario, tmp_path / "out", "--method", "fedavg", "--engine", "flower"))
        waited, message = time.monotonic() - killed["at"], str(err.value)
        print(f"after {waited:.1f} s: {message}")
        assert "\n" not in message and "no reply from node" in message and "train of round 1" in message, message
        assert 25 <= waited < 60, waited  # the engine cannot see a remote node's process: the timeout decides
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0
    assert all(_gone(pid) for pid in info["pids"].values())


def test_local_node_killed_mid_round_stops_at_once(tiny_scenario: Path, tmp_path: Path, monkeypatch) -> None:
    from drake.fl.flower_engine import FlowerError

    monkeypatch.delenv("DRAKE_FLOWER_SUPERLINK", raising=False)
    monkeypatch.setenv("DRAKE_FLOWER_NODES", "2")
    home = tmp_path / "out" / "work" / "flower"
    killed = _kill_after_first_push(monkeypatch, lambda: json.loads((home / "placement.json").read_text())["pids"]["node0"])
    with pytest.raises(FlowerError) as err:
        _record(_args(tiny_scenario, tmp_path / "out", "--method", "fedavg", "--engine", "flower"))
    waited, message = time.monotonic() - killed["at"], str(err.value)
    print(f"after {waited:.1f} s: {message}")
    assert "\n" not in message and "SuperNode exited during train of round 1" in message and "exit code -9" in message
    assert waited < 10, waited  # the engine watches the processes it started
    pids = json.loads((home / "placement.json").read_text())["pids"]
    assert all(_gone(pid) for pid in pids.values())  # the federation was stopped


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_without_the_extra_one_line_error(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['flwr'] = None\n"
        "import eval\n"
        f"sys.exit(eval.main(['--engine', 'flower', '--scenario', 'smoke', '--scale', '0.2', '--out', {str(tmp_path)!r}]))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install drake-bench[flower]" in lines[0], out.stderr
