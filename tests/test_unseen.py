"""Unseen-task protocol: zero-shot and after a short adaptation (FedMosaic's generalization measure).

The adaptation fine-tunes a copy of each client's personalized model on the unseen task's train split; it
must change what is scored, and nothing else: Self/Others, the zero-shot scores, the clients' states and
the model's weights equal those of a run with ``unseen_adapt_steps=0``; reruns and resumed runs agree.
The runs here use the server-global protocol, where clients holding the same model share one adaptation.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch

import drake.fl.engine as engine_mod
from drake.config import build_config
from drake.errors import SpecError
from drake.fl.client import ClientRuntime
from drake.fl.settings import EngineSettings
from drake.fl.state_store import StateStore
from drake.results import load_result, make_record, recompute_summary, validate_result, write_result
from drake.runner import add_run_arguments, make_engine, plan_from_args, seed_record
from tests.records import strip_timing

FAST = ["--scale", "0.1", "--no-progress", "--method", "fedavg", "--set", "local_steps=2", "--set", "batch_size=4",
        "--set", "engine.others_limit=4", "--set", "engine.self_limit=4", "--set", "engine.unseen_limit=6",
        "--protocol", "server-global"]  # fmt: skip
ADAPT = ["--set", "engine.unseen_adapt_steps=3", "--set", "engine.unseen_adapt_eval_every=2"]
UNSEEN = "dreamsim_0"


def _args(scenario: Path, out: Path, *extra: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_run_arguments(p)
    return p.parse_args(["--scenario", str(scenario), "--out", str(out), *FAST, *extra])


def _fingerprint(rt: ClientRuntime) -> str:
    digest = hashlib.sha256()
    for p in rt.adapter.parameters("all"):
        digest.update(p.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def _same(a: Any, b: Any) -> bool:
    """Deep equality that compares tensors by value."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if hasattr(a, "__dict__") and type(a) is type(b):
        return _same(vars(a), vars(b))
    return a == b


def _run(args: argparse.Namespace, monkeypatch: pytest.MonkeyPatch, *, resume: bool = False, callbacks=()) -> dict:
    """One seed with spies: the client states at the end, the model's adapters, what each evaluation scored
    (client, task, adapter fingerprint) and torch's RNG around the adaptation."""
    stores: list[StateStore] = []
    scored: list[tuple[int, str, str]] = []
    rng: dict[str, torch.Tensor] = {}

    class SpyStore(StateStore):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            stores.append(self)

    evaluate = ClientRuntime.evaluate

    def spy_evaluate(self: ClientRuntime, task: str, **kw: Any) -> dict[str, float]:
        scored.append((self.id, task, _fingerprint(self)))
        return evaluate(self, task, **kw)

    monkeypatch.setattr(engine_mod, "StateStore", SpyStore)
    monkeypatch.setattr(ClientRuntime, "evaluate", spy_evaluate)
    plan = plan_from_args(args)
    engine, method = make_engine(plan, 0, Path(args.out) / "work")
    adapt = engine.work.adapt_unseen

    def spy_adapt(*a: Any, **kw: Any) -> Any:
        rng["before"] = torch.get_rng_state()
        out = adapt(*a, **kw)
        rng["after"] = torch.get_rng_state()
        return out

    engine.work.adapt_unseen = spy_adapt  # type: ignore[method-assign]
    try:
        raw = engine.run(method, plan.scenario, seed=0, resume=resume, callbacks=callbacks)
    finally:
        monkeypatch.undo()
    return {
        "record": seed_record(0, plan.scenario, raw, wall_seconds=0.0),
        "states": copy.deepcopy(stores[-1].all()),
        "adapters": {name: a.adapter.get_state("all") for name, a in engine.archs.items()},
        "scored": scored,
        "rng": rng,
        "plan": plan,
    }


@pytest.fixture(scope="module")
def runs(untrained_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    from conftest import write_scenario

    root = tmp_path_factory.mktemp("unseen")
    m = untrained_models
    scenario = write_scenario(root / "tiny.yaml", [m["tiny-llama-s"], m["tiny-qwen-s"], m["tiny-llama-s"]])
    mp = pytest.MonkeyPatch()
    out = {
        "adapted": _run(_args(scenario, root / "a", *ADAPT), mp),
        "zero": _run(_args(scenario, root / "z", "--set", "engine.unseen_adapt_steps=0"), mp),
    }

    class Killed(Exception):
        pass

    def kill_after_first_round(entry: dict) -> None:
        if entry["round"] == 1:
            raise Killed

    resumed = _args(scenario, root / "r", *ADAPT)
    with pytest.raises(Killed):
        _run(resumed, mp, callbacks=[kill_after_first_round])
    out["resumed"] = _run(resumed, mp, resume=True)
    return out


def test_adapted_scores_come_from_a_changed_model(runs: dict[str, dict]) -> None:
    rec = runs["adapted"]["record"]
    unseen_calls = [(c, fp) for c, t, fp in runs["adapted"]["scored"] if t == UNSEEN]
    for cid in ("0", "1", "2"):
        entry = rec["final"][cid]["unseen_adapted"][UNSEEN]
        assert entry["steps"] == 3 and entry["n"] == 6 and entry["metric"] == "choice_accuracy"
        assert set(entry["curve"]) == {"0", "2", "3"}  # zero-shot, every 2 steps, the last step
        assert entry["curve"]["0"] == rec["final"][cid]["unseen"][UNSEEN]["score"]
        assert entry["curve"]["3"] == entry["score"]
        prints = [fp for c, fp in unseen_calls if c == int(cid)]
        if cid == "2":  # holds client 0's model (FedAvg's global of their architecture): scored once for both
            assert prints == [] and entry == rec["final"]["0"]["unseen_adapted"][UNSEEN]
            continue
        assert len(prints) == 3  # zero-shot, after step 2, after step 3
        assert len(set(prints)) == 3, "adaptation steps did not change the scored model"
    # the zero-shot run scores each model once on the unseen task, and records no adapted scores
    assert len([1 for _, t, _ in runs["zero"]["scored"] if t == UNSEEN]) == 2
    assert all("unseen_adapted" not in f for f in runs["zero"]["record"]["final"].values())


def test_adaptation_changes_nothing_else(runs: dict[str, dict]) -> None:
    a, z = runs["adapted"], runs["zero"]
    ra, rz = strip_timing(a["record"]), strip_timing(z["record"])
    for f in ra["final"].values():
        f.pop("unseen_adapted")
    assert ra == rz  # Self/Others per round, final own/others/unseen zero-shot, comm, training losses
    assert _same(a["states"], z["states"])  # adapter, optimizer moments, stream position, method state
    assert _same(a["adapters"], z["adapters"])  # the model's weights are restored after adapting
    assert torch.equal(a["rng"]["before"], a["rng"]["after"])  # torch's global RNG untouched


def test_adaptation_is_deterministic_and_resume_reproduces_it(runs: dict[str, dict]) -> None:
    assert strip_timing(runs["resumed"]["record"]) == strip_timing(runs["adapted"]["record"])
    assert _same(runs["resumed"]["states"], runs["adapted"]["states"])


def test_result_record_summary_and_report(runs: dict[str, dict], tmp_path: Path, capsys) -> None:
    from drake.report import print_summary
    from drake.runner import task_meta

    plan = runs["adapted"]["plan"]
    seeds = [runs["adapted"]["record"], {**copy.deepcopy(runs["adapted"]["record"]), "seed": 1}]
    record = make_record(
        command="python eval.py --method fedavg", engine="sequential", method="fedavg", method_config=plan.resolved,
        scenario=plan.scenario, data=plan.data_params, per_seed=seeds, tasks=task_meta(plan.data_dir, plan.task_specs),
    )  # fmt: skip
    assert validate_result(record) == []
    unseen = record["results"]["summary"]["unseen"]
    final = seeds[0]["final"]
    zero = sum(f["unseen"][UNSEEN]["score"] for f in final.values()) / 3
    adapted = sum(f["unseen_adapted"][UNSEEN]["score"] for f in final.values()) / 3
    auc = sum(sum(f["unseen_adapted"][UNSEEN]["curve"].values()) / 3 for f in final.values()) / 3
    assert unseen["zero_shot"]["mean"] == pytest.approx(zero)
    assert unseen["adapted"]["mean"] == pytest.approx(adapted)
    assert unseen["adapted_auc"]["mean"] == pytest.approx(auc)
    assert unseen["adapted"]["n"] == 2 and unseen["adapted"]["std"] == pytest.approx(0.0)

    # tampering with the Unseen summary is caught; a record written before it existed still validates
    bad = copy.deepcopy(record)
    bad["results"]["summary"]["unseen"]["adapted"]["mean"] = 0.123456
    assert any("summary.unseen.adapted.mean" in p for p in validate_result(bad))
    old = copy.deepcopy(record)
    del old["results"]["summary"]["unseen"]
    for s in old["results"]["per_seed"]:
        for f in s["final"].values():
            del f["unseen_adapted"]
    assert validate_result(old) == [] and "unseen" not in recompute_summary(old)
    bad_curve = copy.deepcopy(record)
    bad_curve["results"]["per_seed"][0]["final"]["0"]["unseen_adapted"][UNSEEN]["curve"]["x"] = 0.5
    assert validate_result(bad_curve)

    path = write_result(tmp_path / "r.json", record)
    assert load_result(path)["results"]["summary"]["unseen"] == unseen
    print_summary(path)
    out = capsys.readouterr().out
    assert "Unseen 0-shot" in out and "Unseen adapted" in out and "fine-tuned 3 steps" in out
    assert f"{100 * adapted:.1f} ± 0.0" in out


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"unseen_adapt_steps": "-1"}, "unseen_adapt_steps"),
        ({"unseen_adapt_batch": "0"}, "unseen_adapt_batch"),
        ({"unseen_adapt_eval_every": "-2"}, "unseen_adapt_eval_every"),
    ],
)
def test_bad_adaptation_settings_are_one_line_errors(values: dict[str, str], needle: str) -> None:
    with pytest.raises(SpecError, match=needle):
        build_config(EngineSettings, values, where="engine settings")


def test_defaults_come_from_the_protocol() -> None:
    s = EngineSettings()
    assert s.unseen_adapt_steps is None and s.unseen_adapt_batch is None and s.unseen_adapt_eval_every is None
    official = s.effective_protocol()
    assert (official.name, official.unseen_steps, official.unseen_eval_every) == ("official", 40, 5)
    assert official.unseen_stops() == [5, 10, 15, 20, 25, 30, 35, 40]  # with step 0: the official 9 points
    legacy = EngineSettings(protocol="server-global", unseen_adapt_steps=3).effective_protocol()
    assert (legacy.unseen_steps, legacy.unseen_eval_every, legacy.unseen_stops()) == (3, 0, [3])


def test_fedmosaic_unseen_fine_tune_fits_the_task_like_plain_lora(tiny_scenario: Path, tmp_path: Path) -> None:
    """FedMosaic's adapted unseen scores barely move on drake-dynamic (docs/results.md): before reading that
    as a property of the method, its fine-tune (gated local + frozen global, P/Q learning-rate groups) must
    lower the training loss on the unseen task about as plain LoRA does from the same start."""
    from tests.test_engine import _args as engine_args
    from tests.test_engine import _run_seed

    adapt = ["--set", "engine.unseen_adapt_steps=12", "--set", "engine.unseen_adapt_eval_every=4",
             "--set", "engine.diagnostics=false"]
    drops = {}
    for method in ("fedavg", "fedmosaic"):
        extra = ["--set", "align_samples=4", "--set", "align_steps=5",
                 "--set", f"align_cache={tmp_path / 'align'}"] if method == "fedmosaic" else []  # fmt: skip
        record = _run_seed(engine_args(tiny_scenario, tmp_path / method, "--method", method, *adapt, *extra))
        assert "diagnostics" not in record["extra"]  # engine.diagnostics=false: not even the free gate numbers
        adapted = [a for entry in record["final"].values() for a in (entry.get("unseen_adapted") or {}).values()]
        assert adapted, method
        losses = [[a["loss"][str(step)] for step in (4, 8, 12)] for a in adapted]
        assert all(first > last for first, _, last in losses), (method, losses)
        drops[method] = sum((first - last) / first for first, _, last in losses) / len(losses)
    assert drops["fedmosaic"] >= 0.5 * drops["fedavg"], drops
