"""HetLoRA and FlexLoRA: per-client ranks in the scenario, the masked-rank equivalence, both aggregation
rules exact on synthetic updates of known ranks, and a 2-round run at ranks 2/4/8 (what travels, what stays
zero)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from baselines._lora_rank import lora_pairs, mask_, pad, rank_of, scenario_ranks, truncate
from baselines.flexlora import flexlora_merge, svd_factors, weighted_delta
from baselines.hetlora import hetlora_merge, sparsity_weights
from drake.adapters.handle import AdapterHandle, AdapterSpec
from drake.errors import SpecError
from drake.runner import add_run_arguments, make_engine, plan_from_args, seed_record
from drake.spec import load_scenario
from tests.conftest import write_scenario

A, B = "m.lora_A.default.weight", "m.lora_B.default.weight"


def lora(a: list, b: list) -> dict[str, torch.Tensor]:
    return {A: torch.tensor(a, dtype=torch.float64), B: torch.tensor(b, dtype=torch.float64)}


def random_lora(rank: int, d_out: int = 10, d_in: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {A: torch.randn(rank, d_in, generator=g, dtype=torch.float64),
            B: torch.randn(d_out, rank, generator=g, dtype=torch.float64)}  # fmt: skip


# ------------------------------------------------------------------------------------------ scenario


def _scenario(tmp_path: Path, ranks: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: s\nmode: static\nrounds: 1\npools:\n  p: [a, a]\nclients:\n"
        f"  - {{id: 0, tasks: [t], lora_rank: 4}}\n  - {{id: 1, tasks: [t]{ranks}}}\n"
    )
    return path


def test_per_client_lora_rank_in_the_scenario(tmp_path: Path) -> None:
    spec = load_scenario(_scenario(tmp_path, ""))
    assert [c.lora_rank for c in spec.clients] == [4, None]
    assert scenario_ranks(spec, 8) == {0: 4, 1: 8}  # no rank: the method's lora_r
    with pytest.raises(SpecError, match="lora_rank 4 > lora_r 2.*--set lora_r=4"):
        scenario_ranks(spec, 2)
    for bad in (": 0", ": true", ": '8'", ": 2.5"):
        with pytest.raises(SpecError, match=r"clients\[1\]: 'lora_rank' must be a whole number >= 1"):
            load_scenario(_scenario(tmp_path, f", lora_rank{bad}"))
    with pytest.raises(SpecError, match="unknown key 'lora_rnak'.*lora_rank"):
        load_scenario(_scenario(tmp_path, ", lora_rnak: 2"))
    smoke = load_scenario("smoke")  # no ranks: the record (and the fingerprint) carry no lora_rank key
    assert all("lora_rank" not in c for c in smoke.to_dict()["clients"])
    assert [c.lora_rank for c in load_scenario("hetrank").clients] == [4, 8, 16, 32]


# ------------------------------------------------------------------------------------ masked ranks


def test_masked_rank_is_a_rank_r_lora_and_stays_one() -> None:
    """Rank 2 inside a rank-4 adapter: the same output as B[:, :2] A[:2] at the same scaling, zero tail
    gradients, and a tail that AdamW leaves at zero."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(nn.Sequential(nn.Linear(6, 5)), LoraConfig(r=4, lora_alpha=8, target_modules=["0"]))
    handle = AdapterHandle(model, AdapterSpec())
    with torch.no_grad():
        for p in handle.parameters():
            p.normal_()
    mask_(handle, 2)
    layer = model.base_model.model[0]
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    x = torch.randn(3, 6)
    want = layer.base_layer(x) + 2.0 * x @ (b[:, :2] @ a[:2]).T  # scaling alpha / r = 8 / 4
    assert torch.allclose(model(x), want, atol=1e-6)
    model(x).pow(2).sum().backward()
    assert torch.equal(a.grad[2:], torch.zeros(2, 6)) and torch.equal(b.grad[:, 2:], torch.zeros(5, 2))
    assert a.grad[:2].abs().sum() > 0 and b.grad[:, :2].abs().sum() > 0
    opt = torch.optim.AdamW(handle.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        opt.step()
    assert not a[2:].any() and not b[:, 2:].any()


def test_truncate_and_pad_are_inverse_on_the_kept_components() -> None:
    s = random_lora(3)
    padded = pad(s, 5)
    assert padded[A].shape == (5, 12) and padded[B].shape == (10, 5) and rank_of(padded) == 5
    assert not padded[A][3:].any() and not padded[B][:, 3:].any()
    assert torch.equal(padded[B] @ padded[A], s[B] @ s[A])  # zero-padding keeps delta W exactly
    back = truncate(padded, 3)
    assert all(torch.equal(back[k], s[k]) for k in s) and lora_pairs(back) == [(A, B)]


# --------------------------------------------------------------------------------------- HetLoRA


def test_hetlora_pads_weights_by_update_norm_and_truncates() -> None:
    """Client 0 rank 1: delta W_0 = [[2, 0], [0, 0]] (norm 2); client 1 rank 2: delta W_1 = [[0, 1], [1, 0]]
    (norm sqrt 2). Weights 2 / (2 + sqrt 2) and sqrt 2 / (2 + sqrt 2) on the zero-padded A and B."""
    c0 = lora([[1.0, 0.0]], [[2.0], [0.0]])
    c1 = lora([[0.0, 1.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]])
    w0, w1 = 2 / (2 + math.sqrt(2)), math.sqrt(2) / (2 + math.sqrt(2))
    assert sparsity_weights([c0, c1])[A] == pytest.approx([w0, w1])
    glob = hetlora_merge([c0, c1], r_max=2)
    assert torch.allclose(glob[A], torch.tensor([[w0, w1], [w1, 0.0]], dtype=torch.float64))
    assert torch.allclose(glob[B], torch.tensor([[2 * w0 + w1, 0.0], [0.0, w1]], dtype=torch.float64))
    to_c0 = truncate(glob, 1)  # what the rank-1 client receives: the first component
    assert torch.equal(to_c0[A], glob[A][:1]) and torch.equal(to_c0[B], glob[B][:, :1])
    # with nothing trained yet (all B = 0) the clients weigh equally
    zero = [lora([[1.0, 0.0]], [[0.0], [0.0]]), lora([[0.0, 1.0], [1.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]])]
    assert sparsity_weights(zero)[A] == [0.5, 0.5]


def test_hetlora_weights_per_module_or_per_client() -> None:
    a2, b2 = "n.lora_A.default.weight", "n.lora_B.default.weight"
    c0 = {**lora([[1.0]], [[3.0]]), a2: torch.ones(1, 1, dtype=torch.float64), b2: torch.ones(1, 1, dtype=torch.float64)}
    c1 = {**lora([[1.0]], [[1.0]]), a2: torch.ones(1, 1, dtype=torch.float64), b2: 3 * torch.ones(1, 1, dtype=torch.float64)}
    per_module = sparsity_weights([c0, c1], "module")
    assert per_module[A] == pytest.approx([0.75, 0.25]) and per_module[a2] == pytest.approx([0.25, 0.75])
    per_client = sparsity_weights([c0, c1], "client")  # both clients' updates have norm sqrt(10)
    assert per_client[A] == pytest.approx([0.5, 0.5]) and per_client[a2] == pytest.approx([0.5, 0.5])


# -------------------------------------------------------------------------------------- FlexLoRA


def test_flexlora_gives_each_rank_the_best_approximation_of_the_weighted_mean() -> None:
    states = [random_lora(2, seed=1), random_lora(3, seed=2), random_lora(5, seed=3)]
    weights = [1.0, 2.0, 5.0]
    mean = sum(w / 8.0 * (s[B] @ s[A]) for s, w in zip(states, weights))
    assert torch.allclose(weighted_delta(states, weights, A, B), mean)
    glob = flexlora_merge(states, weights, r_max=8)
    assert glob[A].shape == (8, 12) and glob[B].shape == (10, 8)
    u, s, vh = torch.linalg.svd(mean)
    for r in (1, 3, 8):
        mine = truncate(glob, r)
        best = u[:, :r] @ torch.diag(s[:r]) @ vh[:r]
        assert torch.allclose(mine[B] @ mine[A], best, atol=1e-10), f"rank {r}"
        assert torch.allclose(mine[A] @ mine[A].T, torch.eye(r, dtype=torch.float64), atol=1e-10)  # A = V^T
    err3 = torch.linalg.matrix_norm(mean - truncate(glob, 3)[B] @ truncate(glob, 3)[A])
    assert float(err3) == pytest.approx(float(s[3:].pow(2).sum().sqrt()))  # Eckart-Young residual


def test_flexlora_returns_the_mean_exactly_at_a_rank_at_least_its_rank() -> None:
    states = [random_lora(1, seed=4), random_lora(2, seed=5)]  # the weighted mean has rank <= 3
    glob = flexlora_merge(states, [3.0, 1.0], r_max=4)
    mean = 0.75 * states[0][B] @ states[0][A] + 0.25 * states[1][B] @ states[1][A]
    for r in (3, 4):
        got = truncate(glob, r)
        assert torch.allclose(got[B] @ got[A], mean, atol=1e-10)
    for split in ("B", "sqrt"):  # the split moves S between the factors, never the product
        fb, fa = svd_factors(mean, 6, split)
        assert fb.shape == (10, 6) and fa.shape == (6, 12) and torch.allclose(fb @ fa, mean, atol=1e-10)
        assert fa[:3].abs().sum(1).min() > 0  # no component with both factors zero where S = 0
    fb, fa = svd_factors(mean, 20, "B")  # beyond min(d_out, d_in): zero-padded
    assert fb.shape == (10, 20) and not fb[:, 10:].any() and not fa[10:].any()


# ----------------------------------------------------------------------------------- with a model

FAST = ["--scale", "0.1", "--no-progress", "--set", "local_steps=2", "--set", "batch_size=4", "--set", "lora_r=8",
        "--set", "engine.others_limit=2", "--set", "engine.self_limit=4", "--set", "engine.unseen_limit=2",
        "--set", "engine.unseen_adapt_steps=0"]  # fmt: skip
RANKS = {0: 2, 1: 4, 2: 8}


@pytest.fixture(scope="module")
def ranked(untrained_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three tiny-llama-s clients at ranks 2, 4, 8 (lora_r 8), 2 rounds, scored after round 2."""
    m = untrained_models["tiny-llama-s"]
    path = write_scenario(tmp_path_factory.mktemp("ranked") / "ranked.yaml", [m, m, m])
    text = path.read_text().replace("eval_rounds: [1, 2]", "eval_rounds: [2]")
    for cid, r in RANKS.items():
        text = text.replace(f"{{id: {cid}, tasks: [", f"{{id: {cid}, lora_rank: {r}, tasks: [")
    path.write_text(text)
    return path


def _run(method: str, scenario: Path, out: Path, *extra: str) -> tuple[list, dict]:
    """Run 2 rounds; return (per client_update: round, client, payload rank, upload rank, adapter after,
    AdamW steps in the client's optimizer state after) and the per-seed record."""
    p = argparse.ArgumentParser()
    add_run_arguments(p)
    plan = plan_from_args(p.parse_args(["--scenario", str(scenario), "--out", str(out), "--method", method, *FAST, *extra]))
    engine, m = make_engine(plan, 0, None)
    seen = []
    original = m.client_update

    def watch(ctx, client, payload):
        u = original(ctx, client, payload)
        steps = {int(v["step"]) for v in client.state.optimizer["state"]["state"].values()}
        seen.append((ctx.round, client.id, rank_of(payload.arrays), rank_of(u.arrays), client.adapter.get_state("all"), steps))
        return u

    m.client_update = watch  # type: ignore[method-assign]
    return seen, seed_record(0, plan.scenario, engine.run(m, plan.scenario, seed=0), wall_seconds=0.0)


def _zero_beyond(state: dict[str, torch.Tensor], r: int) -> bool:
    pairs = lora_pairs(state)
    return bool(pairs) and all(not state[a][r:].any() and not state[b][:, r:].any() for a, b in pairs)


@pytest.mark.parametrize("method", ["hetlora", "flexlora"])
def test_two_rounds_at_ranks_2_4_8(method: str, ranked: Path, tmp_path: Path) -> None:
    seen, record = _run(method, ranked, tmp_path)
    assert len(seen) == 6
    for rnd, cid, down, up, state, steps in seen:
        # FlexLoRA's SVD changes the factors' basis: a fresh AdamW every round; HetLoRA keeps its moments
        assert steps == {2 if method == "flexlora" or rnd == 0 else 4}, (method, rnd, steps)
        r = RANKS[cid]
        assert up == r and down == (0 if rnd == 0 else r), (rnd, cid, down, up)
        assert rank_of(state) == 8 and _zero_beyond(state, r), (method, cid)  # beyond its rank: exactly zero
        a, b = lora_pairs(state)[0]
        assert state[a][:r].any() and state[b][:, :r].any()  # within it: trained
    up = {int(c): b for c, b in record["extra"]["comm_by_client"][1]["up"].items()}
    assert up[0] * 4 == up[2] and up[1] * 2 == up[2]  # bytes on the wire scale with the rank
    for entry in record["rounds"]:
        assert all(math.isfinite(t["loss"]) for t in entry["train"].values())
    assert set(record["final"]) == {"0", "1", "2"}
    assert record["extra"]["method"]["ranks"] == {"0": 2, "1": 4, "2": 8}


def test_hetlora_self_pruning_shrinks_ranks_consistently(ranked: Path, tmp_path: Path) -> None:
    """Round 1 starts from B = 0 (tail term 0: nothing to prune); in round 2 a client whose tail term ended
    lower than it started prunes to floor(0.5 r): it uploads that many components, keeps the rest at zero,
    and the server records the new rank (what the next round's payload is cut to)."""
    seen, record = _run("hetlora", ranked, tmp_path, "--set", "prune_lambda=1000", "--set", "prune_gamma=0.5")
    final = {}
    for rnd, cid, down, up, state, _ in seen:
        assert down == (0 if rnd == 0 else RANKS[cid])  # received at the old rank, pruned while training
        assert up == RANKS[cid] if rnd == 0 else up in (RANKS[cid], RANKS[cid] // 2), (rnd, cid, up)
        assert _zero_beyond(state, up)
        final[str(cid)] = up
    assert record["extra"]["method"]["ranks"] == final
    assert any(final[str(c)] < r for c, r in RANKS.items()), "no client pruned under a 1000x tail penalty"
