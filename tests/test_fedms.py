"""FedMS: the SAL schedule, inactive blocks (no LoRA compute, no gradient, not sent), stage 2 (only the gate is
sent and averaged, the local expert never leaves), and the gated model's scoring."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from PIL import Image

from baselines.fedms import GATE, FedMS, active_blocks, block_of, block_passes, payload_blocks, stage1_rounds
from drake.fl.method import weighted_mean
from drake.models.batching import collate
from drake.runner import add_run_arguments, make_engine, plan_from_args

FAST = ["--scale", "0.1", "--no-progress", "--set", "local_steps=2", "--set", "batch_size=4", "--engine", "sequential",
        "--set", "engine.others_limit=2", "--set", "engine.self_limit=4", "--set", "engine.unseen_limit=2",
        "--set", "engine.unseen_adapt_steps=0"]  # fmt: skip


def _rows(n: int = 4) -> list[dict]:
    colors = ["red", "blue", "green", "white"]
    return [{"images": [Image.new("RGB", (24, 24), colors[i % 4])], "prompt": "<image> What color is it ? Your answer is :",
             "choices": ["red", "blue", "a green one"], "answer": colors[i % 4]} for i in range(n)]  # fmt: skip


@pytest.fixture(scope="module")
def attached(untrained_models: dict[str, Path]):
    from drake.models.loading import load_model

    loaded = load_model(untrained_models["tiny-llama-s"], device="cpu", progress=False)
    torch.manual_seed(0)
    model, handle = FedMS().attach(loaded.model, "tiny-llama-s")
    return loaded, model, handle


def test_schedule_grows_from_the_top_to_every_block() -> None:
    assert [stage1_rounds(r, 0.5) for r in (20, 2, 1, 5)] == [10, 1, 1, 3]
    assert stage1_rounds(20, 0.0) == 0 and stage1_rounds(20, 1.0) == 20
    got = [active_blocks(4, t, 8, 4) for t in range(10)]
    assert got == [(3,), (3,), (2, 3), (2, 3), (1, 2, 3), (1, 2, 3), (0, 1, 2, 3), (0, 1, 2, 3), (0, 1, 2, 3), (0, 1, 2, 3)]
    assert active_blocks(5, 0, 10, 4, "bottom") == (0, 1)  # ceil(5/4) = 2 blocks in the first phase
    assert active_blocks(3, 0, 10, 1) == (0, 1, 2)  # one phase: all blocks from the start
    assert block_passes(4, (3,)) == pytest.approx(6 / 12)  # 4 forward + 2 x 1 backward of 12
    assert block_passes(4, (0,)) == 1.0  # bottom block active: the backward still runs through every block


def test_inactive_blocks_run_no_lora_and_get_no_gradient(attached) -> None:
    loaded, model, handle = attached
    assert model.num_layers == 3
    batch = collate(loaded, _rows(), with_answer=True)
    model.set_blocks((2,))
    default = {n: p for n, p in zip(handle.names(), handle.parameters()) if ".default." in n}
    with torch.no_grad():
        for p in default.values():
            p.normal_(0, 0.02)
        out = model(**batch).logits
        for n, p in default.items():
            if block_of(n) != 2:
                p.add_(1.0)  # a large change of every inactive block's LoRA
        assert torch.equal(model(**batch).logits, out), "an inactive block's LoRA changed the output"
    for p in handle.parameters():
        p.grad = None
        p.requires_grad_(True)
    model(**batch).loss.backward()
    for n, p in default.items():
        if block_of(n) == 2:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
        else:
            assert p.grad is None, f"inactive {n} got a gradient"
    for n, p in zip(handle.names(), handle.parameters()):
        assert ".local." not in n or p.grad is None  # stage 1 runs the global expert alone
        p.grad = None


def test_gated_mix_is_per_input_and_scoring_may_share_the_prompt(attached) -> None:
    from drake.models.scoring import choice_scores, shares_prompt

    loaded, model, handle = attached
    torch.manual_seed(1)
    with torch.no_grad():
        for p in handle.parameters():
            p.normal_(0, 0.05)
    model.set_gated()
    rows = _rows()
    batch = collate(loaded, rows, with_answer=True)
    model(**batch)
    g = model._g
    assert g.shape == (4,) and g.std() > 0, "the gate must give each input its own weight"
    assert shares_prompt(model)
    shared = choice_scores(loaded, rows, model=model, share_prompt=True)
    pairs = choice_scores(loaded, rows, model=model, share_prompt=False)
    assert torch.allclose(torch.tensor(shared), torch.tensor(pairs), atol=1e-4)


def _args(scenario: Path, out: Path) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_run_arguments(p)
    return p.parse_args(["--scenario", str(scenario), "--out", str(out), "--method", "fedms", *FAST])


def test_stage1_sends_active_blocks_and_stage2_only_the_gate(tiny_scenario: Path, tmp_path: Path) -> None:
    """2 rounds (T1 = 1): round 1 trains block 2 of 3 only; round 2 downloads the global once, trains the
    local expert and the gate, and sends and averages the gate alone (per architecture)."""
    tiny_scenario.write_text(tiny_scenario.read_text().replace("eval_rounds: [1, 2]", "eval_rounds: [2]"))
    plan = plan_from_args(_args(tiny_scenario, tmp_path))
    engine, m = make_engine(plan, 0, None)
    assert isinstance(m, FedMS)
    init = {a: arch.adapter.get_state("all") for a, arch in engine.archs.items()}
    seen: list = []
    servers: list = []
    update, aggregate = m.client_update, m.aggregate

    def watch(ctx, client, payload):
        u = update(ctx, client, payload)
        seen.append((ctx.round, client.id, client.architecture, payload, u, client.adapter.get_state("all")))
        return u

    def watch_aggregate(ctx, server, updates):
        servers.append({a: dict(v) for a, v in aggregate(ctx, server, updates).per_arch.items()})
        return server

    m.client_update, m.aggregate = watch, watch_aggregate  # type: ignore[method-assign]
    raw = engine.run(m, plan.scenario, seed=0)
    assert len(seen) == 6
    for rnd, _cid, arch, payload, u, state in seen:
        assert not any(".local." in k for k in u.arrays), "the local expert left the client"
        if rnd == 0:
            assert payload.arrays == {}
            assert payload_blocks(u.arrays) == {2} and all(".default." in k for k in u.arrays)
            for k, v in state.items():  # blocks 0 and 1 never moved
                if ".default." in k and block_of(k) != 2:
                    assert torch.equal(v, init[arch][k]), k
        else:
            assert payload.config["global"] and payload_blocks({k: v for k, v in payload.arrays.items()
                                                                if ".default." in k}) == {2}  # fmt: skip
            assert u.arrays and all(k.startswith(f"{GATE}.") for k in u.arrays), "stage 2 sends the gate only"
    stage1, stage2 = servers
    by_arch: dict[str, list] = {}
    for rnd, _cid, arch, _payload, u, _state in seen:
        if rnd == 1:
            by_arch.setdefault(arch, []).append(u)
    for arch, ups in by_arch.items():
        want = weighted_mean([u.arrays for u in ups], [u.num_examples for u in ups])
        gate = {k: v for k, v in stage2[arch].items() if k.startswith(f"{GATE}.")}
        assert gate.keys() == want.keys() and all(torch.equal(gate[k], want[k]) for k in want)
        rest = {k: v for k, v in stage2[arch].items() if not k.startswith(f"{GATE}.")}
        assert rest.keys() == stage1[arch].keys() and all(torch.equal(rest[k], stage1[arch][k]) for k in rest)
    summary = raw.method_state["fedms"]["summary"]
    assert summary["stage1_up_saved"] == pytest.approx(2 / 3)  # 1 of 3 blocks sent
    assert summary["stage1_block_passes"] == pytest.approx(5 / 9)  # 3 forward + 2 x 1 backward of 9
