"""FedAMoLE: the exact reverse-selection assignment (constraints, optimality against enumeration), expert
averaging over holders only, the HMoLE layer's routing and statistics, and one engine run's exchanges."""

from __future__ import annotations

import argparse
import itertools
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from baselines.fedamole.assign import assign_experts, assignment_value, check_assignment
from baselines.fedamole.layer import AMoLELinear, RouteContext
from baselines.fedamole.method import FedAMoLE, FedAMoLEConfig, holder_mean, pool_size
from drake.fl.method import ServerState
from drake.fl.types import ClientInfo, ClientUpdate, RoundContext
from drake.runner import add_run_arguments, make_engine, plan_from_args
from drake.spec import load_scenario

FAST = ["--scale", "0.1", "--no-progress", "--set", "local_steps=2", "--set", "batch_size=4", "--engine", "sequential",
        "--set", "engine.others_limit=2", "--set", "engine.self_limit=4", "--set", "engine.unseen_limit=2",
        "--set", "engine.unseen_adapt_steps=0"]  # fmt: skip


def brute_force(scores: torch.Tensor, choices: int, low: int, high: int) -> float:
    """The best objective over every assignment (each expert: a ``choices``-subset of clients)."""
    n_e, n_c = scores.shape
    best = -1.0
    for pick in itertools.product(itertools.combinations(range(n_c), choices), repeat=n_e):
        cols = [sum(i in sub for sub in pick) for i in range(n_c)]
        if all(low <= k <= high for k in cols):
            best = max(best, sum(float(scores[e, i]) for e, sub in enumerate(pick) for i in sub))
    return best


@pytest.mark.parametrize(("experts", "clients", "choices", "low", "high"),
                         [(3, 3, 2, 2, 8), (4, 3, 2, 2, 3), (5, 4, 2, 2, 8), (6, 4, 2, 3, 4), (5, 3, 1, 1, 2)])  # fmt: skip
def test_assignment_meets_its_constraints_and_is_optimal(experts: int, clients: int, choices: int, low: int, high: int) -> None:
    gen = torch.Generator().manual_seed(experts * 10 + clients)
    for _ in range(3):
        scores = torch.softmax(2 * torch.randn(experts, clients, generator=gen, dtype=torch.float64), dim=1)
        x = assign_experts(scores, choices, low, high)
        assert x.sum(1).tolist() == [choices] * experts, "each expert picks exactly `choices` clients"
        assert all(low <= k <= high for k in x.sum(0).tolist()), x.sum(0).tolist()
        assert not check_assignment(x, choices, low, high)
        assert assignment_value(scores, x) == pytest.approx(brute_force(scores, choices, low, high), abs=1e-8)


def test_assignment_follows_the_scores_and_caps_when_few_clients() -> None:
    # experts 0-1 prefer clients 0-1, experts 2-3 clients 1-2: the greedy pick would starve client 0 or 2
    scores = torch.tensor([[0.5, 0.4, 0.1], [0.5, 0.4, 0.1], [0.1, 0.4, 0.5], [0.1, 0.4, 0.5]], dtype=torch.float64)
    x = assign_experts(scores, 2, 2, 8)
    assert x.sum(0).tolist() == [2, 4, 2] and x[:2, 0].all() and x[2:, 2].all()
    lone = assign_experts(torch.rand(12, 1, dtype=torch.float64), 2, 2, 8)  # one client: c = 1, at most 8 held
    assert lone.sum() == 8 and lone.sum(1).max() == 1


def test_pool_size_keeps_six_experts_per_client() -> None:
    cfg = FedAMoLEConfig()
    assert [pool_size(n, cfg) for n in (10, 6, 4, 2, 1)] == [30, 18, 12, 6, 6]  # official: 30 for 10 clients
    assert pool_size(3, FedAMoLEConfig(experts_per_client=20.0)) == 12  # capped: 3 clients x 8 / 2


def test_experts_are_averaged_over_their_holders_only() -> None:
    method = FedAMoLE()
    clients = {0: ClientInfo(0, "s", ("t",)), 1: ClientInfo(1, "s", ("t",)), 2: ClientInfo(2, "s", ("t",)),
               3: ClientInfo(3, "m", ("t",))}  # fmt: skip
    ctx = RoundContext(0, load_scenario("smoke"), 0, (0, 1, 2, 3), clients)
    e3, e5, sh = "l.expert.3.A", "l.expert.5.A", "l.shared.A"

    def up(cid: int, arrays: dict[str, float], n: int = 1, keys: dict[str, float] | None = None) -> ClientUpdate:
        extras = {k: torch.tensor([v]) for k, v in (keys or {}).items()} | {"l.query": torch.tensor([float(cid)])}
        return ClientUpdate(cid, {k: torch.tensor([v]) for k, v in arrays.items()}, n, side_info=extras)

    ups = [up(0, {e3: 1.0, sh: 0.0}, 1, {"l.key.3": 2.0}), up(1, {e3: 4.0, e5: 7.0, sh: 3.0}, 5, {"l.key.3": 4.0}),
           up(2, {e5: 9.0, sh: 6.0}, 1), up(3, {e3: 100.0, sh: 100.0})]  # fmt: skip
    server = method.aggregate(ctx, method.init_server(clients), ups)
    s = server.per_arch["s"]
    assert s[e3].item() == 2.5 and s[e5].item() == 8.0 and s[sh].item() == 3.0  # plain means over holders
    assert server.per_arch["m"] == {e3: torch.tensor([100.0]), sh: torch.tensor([100.0])}  # never across archs
    means = server.method_state["fedamole_means"]
    assert means.keys["s"]["l.key.3"].item() == 3.0 and means.queries["s"][2]["l.query"].item() == 2.0
    weighted = FedAMoLE(FedAMoLEConfig(weight_by_examples=True)).aggregate(ctx, ServerState(), ups)
    assert weighted.per_arch["s"][e3].item() == pytest.approx((1.0 + 5 * 4.0) / 6)
    assert holder_mean([{"a": torch.tensor([1.0])}, {}], [1.0, 1.0]) == {"a": torch.tensor([1.0])}


def test_layer_routes_each_token_to_its_top2_held_experts() -> None:
    torch.manual_seed(0)
    ctx = RouteContext()
    layer = AMoLELinear(nn.Linear(6, 5), "m", slots=4, r=2, alpha=4, dropout=0.0, top_k=2, context=ctx)
    with torch.no_grad():
        for p in (layer.amole_A, layer.amole_B, layer.amole_shared_A, layer.amole_shared_B, layer.amole_router):
            p.normal_()
    layer.held = 3
    x = torch.randn(2, 4, 6)
    want, all_probs, counts = [], [], torch.zeros(3)
    for t in x.reshape(-1, 6):
        keys = layer.amole_A[:3] @ t  # (3, r): the experts' own down-projections
        probs = torch.softmax(keys @ (layer.amole_router @ t) / math.sqrt(2), 0)
        top = probs.topk(2).indices
        all_probs.append(probs)
        counts[top] += 1
        y = layer.base_layer(t) + 2.0 * layer.amole_shared_B @ (layer.amole_shared_A @ t)
        for j in top:
            y = y + 2.0 * probs[j] / probs[top].sum() * (layer.amole_B[j] @ keys[j])
        want.append(y)
    ctx.lb, ctx.stats = [], {}
    ctx.text_mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)  # 3 text tokens
    out = layer(x)
    assert torch.allclose(out.reshape(-1, 5), torch.stack(want), atol=1e-5)
    # the per-expert dispatch trains what the per-token rule says: same gradients for every parameter
    params = [layer.amole_A, layer.amole_B, layer.amole_shared_A, layer.amole_shared_B, layer.amole_router]
    got = torch.autograd.grad(out.square().sum(), params, retain_graph=True)
    ref = torch.autograd.grad(torch.stack(want).square().sum(), params)
    assert all(torch.allclose(g, r, atol=1e-4) for g, r in zip(got, ref))
    lb = 3 * torch.dot(torch.stack(all_probs).mean(0), counts / counts.sum())  # E x <P_mean, f>
    assert len(ctx.lb) == 1 and torch.allclose(ctx.lb[0].detach(), lb, atol=1e-6)
    q_sum, k_sum, n = ctx.stats["m"]
    text = x.reshape(-1, 6)[ctx.text_mask.reshape(-1)]
    assert n == 3 and torch.allclose(q_sum.float(), (text @ layer.amole_router.T).sum(0), atol=1e-5)
    assert torch.allclose(k_sum.float(), torch.einsum("td,krd->kr", text, layer.amole_A[:3]), atol=1e-5)
    layer.held = 0
    assert torch.allclose(layer(x), layer.base_layer(x) + 2.0 * (x @ layer.amole_shared_A.T) @ layer.amole_shared_B.T, atol=1e-5)


def test_scoring_may_share_the_prompt(untrained_models: dict[str, Path]) -> None:
    from drake.models.loading import load_model
    from drake.models.scoring import choice_scores, shares_prompt

    loaded = load_model(untrained_models["tiny-llama-s"], device="cpu", progress=False)
    model, handle = FedAMoLE().attach(loaded.model, "tiny-llama-s")
    torch.manual_seed(0)
    with torch.no_grad():
        for p in handle.parameters():
            p.normal_(0, 0.05)
    for layer in model.amole.layers.values():
        layer.held = 5
    rows = [{"images": [Image.new("RGB", (24, 24), c)], "prompt": "<image> What color is it ? Your answer is :",
             "choices": ["red", "blue", "a green one"], "answer": c} for c in ("red", "blue", "green")]  # fmt: skip
    assert shares_prompt(model)
    shared = choice_scores(loaded, rows, model=model, share_prompt=True)
    pairs = choice_scores(loaded, rows, model=model, share_prompt=False)
    assert torch.allclose(torch.tensor(shared), torch.tensor(pairs), atol=1e-4)


def test_clients_send_their_assigned_experts_and_text_token_means(tiny_scenario: Path, tmp_path: Path) -> None:
    tiny_scenario.write_text(tiny_scenario.read_text().replace("eval_rounds: [1, 2]", "eval_rounds: [2]"))
    p = argparse.ArgumentParser()
    add_run_arguments(p)
    plan = plan_from_args(p.parse_args(["--scenario", str(tiny_scenario), "--out", str(tmp_path), "--method", "fedamole", *FAST]))
    engine, m = make_engine(plan, 0, None)
    seen: list = []
    update = m.client_update

    def watch(ctx, client, payload):
        u = update(ctx, client, payload)
        seen.append((ctx.round, payload, u))
        return u

    m.client_update = watch  # type: ignore[method-assign]
    engine.run(m, plan.scenario, seed=0)
    assert len(seen) == 6
    for rnd, payload, u in seen:
        experts = payload.config["experts"]
        assert experts and all(len(ids) == 6 for ids in experts.values())  # 2 llama-s clients: E = 6, c = 2
        sent = {(k.rsplit(".expert.", 1)[0], int(k.split(".expert.")[1].split(".")[0])) for k in u.arrays if ".expert." in k}
        assert sent == {(mod, j) for mod, ids in experts.items() for j in ids}, "a client sends exactly its experts"
        assert {k for k in u.side_info if k.endswith(".query")} == {f"{mod}.query" for mod in experts}
        assert all(torch.isfinite(v).all() for v in [*u.arrays.values(), *u.side_info.values()])
        if rnd == 0:
            assert payload.arrays == {}  # every expert starts from its seeded init on every client
        else:
            assert any(".expert." in k for k in payload.arrays) and any(k.endswith(".router") for k in payload.arrays)
