"""Every registered method under the engines users get: the default (``auto``) and ``processes``.

tests/test_baselines.py runs the method matrix on the sequential engine (in-process, spies); this file runs
each method the way ``python eval.py --method M`` does, through ``run_from_args`` to a validated result file,
so a method that breaks an engine (a wrapped model the engine cannot read, state that does not survive the
pipe to a worker) fails CI. ``METHODS.names()`` is read at collection time: a method added later joins the
matrix by registering.

Budget: 2 rounds, scored after the last one only, 2 local steps of 4 examples, a few test items, no unseen
adaptation. Where ``auto`` resolves to ``processes`` (any CPU machine with 2+ cores at one torch thread,
this one included) the two are the same run after resolution, so it runs once; elsewhere (a GPU machine,
where ``auto`` is ``sequential``) both run.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest

from drake import results as R
from drake.method_registry import METHODS
from drake.runner import add_run_arguments, resolve_engine, run_from_args
from tests.conftest import write_scenario

FAST = ["--scale", "0.1", "--no-progress", "--set", "local_steps=2", "--set", "batch_size=4",
        "--set", "engine.others_limit=2", "--set", "engine.self_limit=4", "--set", "engine.unseen_limit=2",
        "--set", "engine.unseen_adapt_steps=0"]  # fmt: skip
EXTRA = {"perada": ["--set", "kd_samples=8", "--set", "kd_steps=2", "--set", "kd_batch=4"]}
#: methods whose server trains (distillation on public rows or generated samples): their headline compute
#: ratio counts it on top of the clients' local steps
SERVER_TRAINS = {"feddf", "fedmkt", "mosaic", "perada", "takfl"}


@pytest.fixture(scope="module")
def scenario(untrained_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hetero tiny scenario (llama-s, qwen-s, llama-s; 3 clients, 2 rounds), scored after round 2 only."""
    m = untrained_models
    path = write_scenario(
        tmp_path_factory.mktemp("engines") / "tiny.yaml",
        [m["tiny-llama-s"], m["tiny-qwen-s"], m["tiny-llama-s"]],
    )
    path.write_text(path.read_text().replace("eval_rounds: [1, 2]", "eval_rounds: [2]"))
    return path


def _args(scenario: Path, out: Path, method: str, engine: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_run_arguments(p)
    argv = ["--scenario", str(scenario), "--out", str(out), "--method", method, "--engine", engine, *FAST]
    return p.parse_args([*argv, *EXTRA.get(method, [])])


def engines_to_run(clients: int, device: str) -> list[str]:
    """``auto`` always; ``processes`` too unless ``auto`` already resolves to it."""
    return ["auto"] if resolve_engine("auto", clients, device) == "processes" else ["auto", "processes"]


def test_every_method_is_in_the_matrix() -> None:
    names = METHODS.names()
    assert {"fedavg", "fedmosaic", "fedsim", "feddpa", "local"} <= set(names)  # registry read, not a copy


@pytest.mark.parametrize("method", METHODS.names())
def test_method_runs_on_the_default_and_process_engines(method: str, scenario: Path, tmp_path: Path) -> None:
    for engine in engines_to_run(3, "auto"):
        args = _args(scenario, tmp_path / engine, method, engine)
        expected = resolve_engine(engine, 3, args.device)
        path = run_from_args(args, ["--method", method, "--engine", engine])
        record = R.load_result(path)  # validates schema and semantics; raises DataError otherwise
        assert record["run_info"]["engine"] == expected, (
            f"{method}: --engine {engine} ran {record['run_info']['engine']}"
        )
        (seed,) = record["results"]["per_seed"]
        assert seed["status"] == "success" and seed["error"] is None
        assert set(seed["final"]) == {"0", "1", "2"}, f"{method} on {engine}: a client was not scored"
        unseen: set[str] = set()  # which client tests which unseen task is the protocol's choice
        for cid, entry in seed["final"].items():
            scored = [*entry["own"].values(), *entry["others"].values(), *entry.get("unseen", {}).values()]
            unseen |= set(entry.get("unseen", {}))
            assert entry["own"], f"{method} on {engine}: client {cid} has no own-task score"
            assert all(0.0 <= s["score"] <= 1.0 and s["n"] > 0 for s in scored), (method, engine, cid)
        assert unseen == {"dreamsim_0"}, f"{method} on {engine}: the unseen task was not scored"
        for entry in seed["rounds"]:
            assert len(entry["train"]) == 3 and all(math.isfinite(t["loss"]) for t in entry["train"].values())
        assert set(seed["rounds"][-1]["eval"]) == {"0", "1", "2"}
        assert seed["comm_bytes"]["total_up"] > 0 or method == "local"
        total, clients = seed["extra"]["compute_ratio_to_local"], seed["extra"]["compute_ratio_clients_to_local"]
        if method in SERVER_TRAINS:
            assert total > clients, (method, total, clients)
        elif method == "fedms":  # sparsely activated stage 1 saves block passes (none when every block is on)
            assert total <= clients, (method, total, clients)
        else:
            assert total == clients, (method, total, clients)
