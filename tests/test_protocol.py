"""The evaluation protocol (drake/protocol.py): schedules, which model is scored, what results record."""

from __future__ import annotations

import argparse
import copy
import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch

from drake.errors import DrakeError, SpecError
from drake.fl.client import ClientRuntime
from drake.method_registry import METHODS
from drake.protocol import PROTOCOLS, Protocol, table_key
from drake.results import make_record, seed_summaries, validate_result
from drake.runner import add_run_arguments, make_engine, plan_from_args, seed_record, task_meta
from drake.spec import load_scenario

FAST = ["--scale", "0.1", "--no-progress", "--set", "local_steps=2", "--set", "batch_size=4",
        "--set", "engine.others_limit=4", "--set", "engine.self_limit=4", "--set", "engine.unseen_limit=4",
        "--set", "engine.unseen_adapt_steps=2", "--set", "engine.unseen_adapt_eval_every=1"]  # fmt: skip


def _args(scenario: Path, out: Path, *extra: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_run_arguments(p)
    return p.parse_args(["--scenario", str(scenario), "--out", str(out), *FAST, *extra])


def _digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode() + state[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------- units


def test_official_schedule_matches_the_fedmosaic_scripts() -> None:
    official = PROTOCOLS.get("official")
    dynamic = load_scenario("drake-dynamic")
    assert official.self_rounds(dynamic) == (2, 5, 7, 10, 12, 15, 17, 20)  # combined_score.py
    assert official.others_rounds(dynamic) == (5, 10, 15, 20)  # combined_score_matrix.py
    smoke = load_scenario("smoke")
    assert official.self_rounds(smoke) == (1, 2) and official.others_rounds(smoke) == (1, 2)
    legacy = PROTOCOLS.get("server-global")
    assert legacy.self_rounds(dynamic) == legacy.others_rounds(dynamic) == dynamic.eval_rounds


def test_scored_tasks_include_tasks_not_yet_arrived_only_under_official() -> None:
    client = load_scenario("drake-dynamic").clients[0]
    assert PROTOCOLS.get("official").scored_tasks(client, 0) == list(client.tasks)
    assert PROTOCOLS.get("server-global").scored_tasks(client, 0) == [client.tasks[0]]
    assert PROTOCOLS.get("server-global").scored_tasks(client, 19) == list(client.tasks)


def test_record_marks_modified_protocols_and_tables_keep_them_apart() -> None:
    scen = load_scenario("smoke")
    official = PROTOCOLS.get("official")
    assert official.record(scen)["modified"] is False
    changed = official.with_overrides(unseen_steps=3)
    assert changed.record(scen)["modified"] is True
    assert table_key(official.record(scen)) == "official" and table_key(changed.record(scen)) == "official*"
    assert official.with_overrides(unseen_steps=None) == official


@pytest.mark.parametrize(
    ("values", "needle"),
    [({"scored": "aggregate"}, "scored"), ({"self_points": 0}, "self_points"), ({"unseen_lr_scale": 0}, "lr_scale")],
)
def test_bad_protocols_are_one_line_errors(values: dict[str, Any], needle: str) -> None:
    with pytest.raises(SpecError, match=needle):
        Protocol("x", **values)


def test_unknown_protocol_is_refused_by_the_engine_settings() -> None:
    from drake.config import build_config
    from drake.fl.settings import EngineSettings

    with pytest.raises(DrakeError, match="did you mean .official"):
        build_config(EngineSettings, {"protocol": "oficial"}, where="engine settings")


# ------------------------------------------------------------------------------------ with a model


def _run(args: argparse.Namespace, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """One seed of FedAvg with spies: each client's adapter right after client_update, the adapter each
    evaluation scored, the aggregate per architecture after each round, and the adaptation's train calls."""
    after_update: dict[tuple[int, int], str] = {}
    scored: dict[tuple[int, int], str] = {}
    aggregates: dict[tuple[int, str], str] = {}
    adapt_calls: list[dict[str, Any]] = []
    plan = plan_from_args(args)
    engine, method = make_engine(plan, 0, None)
    cls = type(method)
    update, aggregate, evaluate, train = cls.client_update, cls.aggregate, ClientRuntime.evaluate, ClientRuntime.train
    phase = {"adapt": False}

    def spy_update(self, ctx, client, payload):
        out = update(self, ctx, client, payload)
        after_update[ctx.round + 1, client.id] = _digest(client.adapter.get_state("all"))
        return out

    def spy_aggregate(self, ctx, server, updates):
        out = aggregate(self, ctx, server, updates)
        for arch, state in out.per_arch.items():
            aggregates[ctx.round + 1, arch] = _digest(state)
        return out

    def spy_evaluate(self, task, **kw):
        if not phase["adapt"]:
            scored.setdefault((self.round + 1, self.id), _digest(self.adapter.get_state("all")))
        return evaluate(self, task, **kw)

    def spy_train(self, steps, **kw):
        if phase["adapt"]:
            adapt_calls.append({"lr": self.lr, "lr_groups": dict(kw.get("lr_groups") or {})})
        return train(self, steps, **kw)

    adapt = engine.work.adapt_unseen

    def spy_adapt(*a, **kw):
        phase["adapt"] = True
        try:
            return adapt(*a, **kw)
        finally:
            phase["adapt"] = False

    monkeypatch.setattr(cls, "client_update", spy_update)
    monkeypatch.setattr(cls, "aggregate", spy_aggregate)
    monkeypatch.setattr(cls, "lr_groups", lambda self, client: {"*lora_B*": client.lr * 3})
    monkeypatch.setattr(ClientRuntime, "evaluate", spy_evaluate)
    monkeypatch.setattr(ClientRuntime, "train", spy_train)
    engine.work.adapt_unseen = spy_adapt  # type: ignore[method-assign]
    raw = engine.run(method, plan.scenario, seed=0)
    monkeypatch.undo()
    return {"raw": raw, "plan": plan, "engine": engine, "after_update": after_update, "scored": scored,
            "aggregates": aggregates, "adapt_calls": adapt_calls, "clients": plan.scenario.clients}  # fmt: skip


@pytest.fixture(scope="module")
def runs(untrained_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    from conftest import write_scenario

    root = tmp_path_factory.mktemp("protocol")
    m = untrained_models
    scenario = write_scenario(root / "tiny.yaml", [m["tiny-llama-s"], m["tiny-qwen-s"], m["tiny-llama-s"]])
    mp = pytest.MonkeyPatch()
    return {
        name: _run(_args(scenario, root / name, "--method", "fedavg", "--protocol", name), mp)
        for name in ("official", "server-global")
    }


def test_official_scores_fedavg_on_each_clients_post_local_adapter(runs: dict[str, dict]) -> None:
    run = runs["official"]
    assert run["scored"], "nothing was scored"
    for (rnd, cid), digest in run["scored"].items():
        assert digest == run["after_update"][rnd, cid], f"client {cid} round {rnd}: not its post-local adapter"
    # clients 0 and 2 share an architecture, so their aggregate differs from at least one's own adapter
    arch = run["clients"][0].model
    assert any(d != run["aggregates"][r, arch] for (r, c), d in run["scored"].items() if c in (0, 2))


def test_server_global_scores_fedavg_on_the_aggregate(runs: dict[str, dict]) -> None:
    run = runs["server-global"]
    archs = {c.id: c.model for c in run["clients"]}
    for (rnd, cid), digest in run["scored"].items():
        assert digest == run["aggregates"][rnd, archs[cid]]


def test_official_self_covers_every_own_task_from_the_first_evaluation(runs: dict[str, dict]) -> None:
    first = runs["official"]["raw"].history[0]["eval"]
    legacy = runs["server-global"]["raw"].history[0]["eval"]
    for c in runs["official"]["clients"]:
        assert set(c.tasks) <= set(first[c.id])  # the second task arrives in round 2
        assert c.tasks[1] not in legacy[c.id]


def test_unseen_adaptation_uses_the_methods_lr_groups_at_the_protocols_scale(runs: dict[str, dict]) -> None:
    for name, run in runs.items():
        calls = run["adapt_calls"]
        assert calls, f"{name}: no adaptation steps"
        lr = run["plan"].config.lr * run["engine"].protocol.unseen_lr_scale
        assert all(c["lr"] == pytest.approx(lr) and c["lr_groups"] == {"*lora_B*": pytest.approx(lr * 3)} for c in calls)
    assert runs["official"]["engine"].protocol.unseen_lr_scale == 0.5


def test_results_record_and_validate_the_protocol(runs: dict[str, dict]) -> None:
    run = runs["official"]
    plan, engine = run["plan"], run["engine"]
    per_seed = [seed_record(0, plan.scenario, copy.deepcopy(run["raw"]), wall_seconds=1.0)]

    def record(protocol: dict[str, Any]) -> dict[str, Any]:
        return make_record(
            command="test", engine="sequential", method="fedavg", method_config=plan.resolved, scenario=plan.scenario,
            data=plan.data_params, per_seed=per_seed, tasks=task_meta(plan.data_dir, plan.task_specs),
            protocol=protocol,
        )  # fmt: skip

    good = record(engine.protocol.record(plan.scenario))
    assert validate_result(good) == []
    assert good["run_info"]["protocol"]["name"] == "official"
    bad = copy.deepcopy(good)
    bad["run_info"]["protocol"]["scored"] = "aggregate"
    assert any("protocol" in p for p in validate_result(bad))
    # the summary follows the recorded schedule
    moved = copy.deepcopy(good)
    moved["run_info"]["protocol"]["others_rounds"] = [2]
    assert set(seed_summaries(good)[0]["per_client"]["0"]["others"]["curve"]) == {"1", "2"}
    assert set(seed_summaries(moved)[0]["per_client"]["0"]["others"]["curve"]) == {"2"}
    moved["run_info"]["protocol"]["self_rounds"] = [3]
    assert any("eval rounds [3] have no scores" in p for p in validate_result(moved))
    assert torch.isfinite(torch.tensor(good["results"]["summary"]["self"]["a_last"]["mean"]))


def test_every_method_declares_its_scored_state_without_the_server() -> None:
    """Under the official protocol no method reads the server when it is scored: select_scored_state takes
    none, and load_server_model is called only under a server protocol (checked in the engine)."""
    import inspect

    from drake.fl.evaluation import scored_model

    source = inspect.getsource(scored_model)
    assert 'scored == "server"' in source
    for name in METHODS.names():
        params = inspect.signature(METHODS.get(name).select_scored_state).parameters
        assert list(params) == ["self", "ctx", "client"], name


def test_one_rank_for_every_method_the_largest_every_pq_module_allows() -> None:
    """The paper gives every method the same r; here it is the narrowest text linear layer of the zoo."""
    from drake.fl.method import MethodConfig
    from drake.models.zoo import ZOO

    widths = []
    for spec in ZOO.values():
        head = spec.text_hidden // spec.text_heads
        widths += [spec.text_hidden, spec.text_heads * head, spec.text_kv_heads * head, spec.text_ffn]
    base = MethodConfig()
    assert base.lora_r == min(widths) and base.lora_alpha == 2 * base.lora_r
    for name in METHODS.names():
        config = METHODS.get(name).config_cls()
        assert (config.lora_r, config.lora_alpha) == (base.lora_r, base.lora_alpha), name


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [("fedmosaic-no-rela", "rela", False), ("fedmosaic-no-pq", "use_pq", False), ("fedmosaic-no-align", "align", False),
     ("fedmosaic-scalar-gate", "gate", "scalar"), ("fedmosaic-homo", "homogeneous", True)],
)  # fmt: skip
def test_the_papers_ablations_are_named_configs(name: str, key: str, value: Any) -> None:
    from drake.config import build_config, read_config_file
    from fedmosaic.method import FedMosaicConfig

    values = read_config_file(name)
    assert values == {key: value}
    assert getattr(build_config(FedMosaicConfig, values, where=name), key) == value


def test_an_unknown_named_config_lists_the_known_ones() -> None:
    from drake.config import read_config_file

    with pytest.raises(SpecError, match="fedmosaic-no-rela"):
        read_config_file("fedmosaic-no-rella")


def test_official_unseen_test_gives_each_task_to_one_client() -> None:
    """The official held-out scenarios have one task per client: task i goes to the i-th client."""
    scen = load_scenario("drake-dynamic")
    ids = [c.id for c in scen.clients]
    pairs = PROTOCOLS.get("official").unseen_tasks(ids, scen.unseen)
    assert sorted(t for ts in pairs.values() for t in ts) == sorted(scen.unseen)
    assert all(len(ts) == 1 for ts in pairs.values()) and sorted(pairs) == ids[: len(scen.unseen)]
    assert PROTOCOLS.get("official").unseen_tasks([0, 1], ["a", "b", "c"]) == {0: ["a", "c"], 1: ["b"]}
    assert PROTOCOLS.get("server-global").unseen_tasks([0, 1], ["a"]) == {0: ["a"], 1: ["a"]}
