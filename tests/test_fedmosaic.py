"""FedMosaic: PQ-LoRA shapes/orthonormality/Theorem 1, block matching, gate, RELA, alignment, engine run."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from torch import nn

from drake.errors import DrakeError, SpecError
from drake.fl.types import ClientInfo, ClientUpdate, RoundContext
from drake.models.batching import collate
from drake.models.loading import LoadedModel
from drake.models.tokenizer import default_vocab, make_tokenizer
from drake.models.zoo import build_model
from drake.spec import load_scenario
from fedmosaic import relevance as R
from fedmosaic.align import AlignSettings, align_a, align_pair, align_to_anchor, public_rows
from fedmosaic.method import FedMosaic, FedMosaicConfig
from fedmosaic.pqlora import GateContext, Linear, PQLoraConfig, block_layers, get_target_layers, inject_pqlora
from fedmosaic.pqlora.layer import orthonormal

R8 = PQLoraConfig(r=8, lora_alpha=16, lora_dropout=0.0)


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer(default_vocab())


def _loaded(name: str, tok, dtype: torch.dtype = torch.float32) -> LoadedModel:
    model, processor = build_model(name, tok, seed=0)
    model = model.to(dtype).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    t = model.config.text_config
    return LoadedModel(model, processor, name, torch.device("cpu"), dtype, t.model_type, t.num_hidden_layers, t.hidden_size)


@pytest.fixture(scope="module")
def rows():
    return public_rows(6)


# ------------------------------------------------------------------------------------- placement


def test_block_matching_by_relative_depth() -> None:
    assert block_layers(4) == {0: 0, 1: 1, 2: 2, 3: 3}
    assert get_target_layers(6) == [1, 2, 4, 5]
    assert get_target_layers(16) == [3, 7, 11, 15]  # Llama-3.2-1B in the paper
    assert get_target_layers(28) == [6, 13, 20, 27]  # Llama-3.2-3B
    for layers in (8, 12, 16, 24, 28, 32, 36):  # official formula wherever 4 divides the depth
        step = layers // 4
        assert get_target_layers(layers) == [k * step - 1 for k in (1, 2, 3)] + [layers - 1]
    # fewer layers than blocks: each layer hosts the nearest block, the missing one is simply not shared
    assert block_layers(3) == {0: 0, 2: 1, 3: 2}
    assert block_layers(1) == {3: 0}


# ------------------------------------------------------------------------------------ PQ-LoRA


def test_pq_shapes_are_invariant_across_width_and_depth(tok) -> None:
    small, large = _loaded("tiny-llama-s", tok), _loaded("tiny-qwen-m", tok)
    s, m = inject_pqlora(small.model, R8), inject_pqlora(large.model, R8)
    assert (s.num_layers, m.num_layers) == (small.num_layers, large.num_layers)
    assert small.num_layers != large.num_layers and small.hidden_size != large.hidden_size
    for model, loaded in ((s, small), (m, large)):
        assert set(model.blocks) == set(block_layers(loaded.num_layers)) and len(model.pq_modules) == 7 * len(model.blocks)
    shared = set(s.pq_modules) & set(m.pq_modules)
    assert len(shared) >= 7 * 3
    for key in shared:
        a, b = s.pq_modules[key], m.pq_modules[key]
        assert a.pqlora_P["default"].shape == b.pqlora_P["default"].shape == (8, 8)
        assert a.pqlora_Q["default"].shape == b.pqlora_Q["default"].shape == (8,)
        assert a.pqlora_A["default"].shape == (8, a.in_features) and b.pqlora_B["default"].shape == (b.out_features, 8)
    assert any(s.pq_modules[k].in_features != m.pq_modules[k].in_features for k in shared)
    assert {k.rpartition(".")[0] for k in s.pq_state()} == set(s.pq_modules)
    # trainable: local P/Q at PQ layers, local A/B at LoRA layers, gates; never the frozen A/B or globals
    names = set(m.trainable_names())
    assert not any(".pqlora_global_" in n for n in names)
    pq_ab = {f"model.{n}.pqlora_{w}.default" for n, layer in m.layers.items() if layer.use_pq for w in "AB"}
    assert names.isdisjoint(pq_ab) and len(pq_ab) == 2 * len(m.pq_modules)
    params = dict(m.named_parameters())
    assert all(params[n].requires_grad for n in names) and not any(params[n].requires_grad for n in pq_ab)


def test_frozen_a_b_are_orthonormal_and_reproducible(tok) -> None:
    m = inject_pqlora(_loaded("tiny-qwen-m", tok).model, R8)
    again = inject_pqlora(_loaded("tiny-qwen-m", tok).model, R8)
    eye = torch.eye(8)
    for key, layer in m.pq_modules.items():
        a, b = layer.pqlora_A["default"], layer.pqlora_B["default"]
        assert torch.allclose(a @ a.T, eye, atol=1e-5) and torch.allclose(b.T @ b, eye, atol=1e-5)
        assert torch.equal(a, again.pq_modules[key].pqlora_A["default"])
    with pytest.raises(SpecError, match="exceeds the width"):
        inject_pqlora(_loaded("tiny-qwen-s", tok).model, PQLoraConfig(r=48))  # k/v projections are 32 wide


def _update_rank(a: torch.Tensor, b: torch.Tensor) -> int:
    r = a.shape[0]
    basis = []
    for i in range(r):
        for j in range(r):
            p = torch.zeros(r, r, dtype=torch.float64)
            p[i, j] = 1.0
            basis.append((b @ p.T @ a).reshape(-1))
    return int(torch.linalg.matrix_rank(torch.stack(basis)))


@pytest.mark.parametrize("r", [2, 3, 4])
def test_theorem1_span_of_updates_has_r_squared_dimensions(r: int) -> None:
    g = torch.Generator().manual_seed(r)
    a, b = orthonormal(r, 7, g).double(), orthonormal(9, r, g).double()
    assert _update_rank(a, b) == r * r
    degenerate = a.clone()
    degenerate[1] = degenerate[0]  # not orthogonal rows: the map P -> B P^T A loses dimensions
    assert _update_rank(degenerate, b) < r * r


def test_layer_delta_weight_matches_its_forward() -> None:
    torch.manual_seed(0)
    layer = Linear(nn.Linear(7, 9), "default", r=3, lora_alpha=6, lora_dropout=0.0, use_pq=True, gate="sample",
                   gate_noise=0.0, context=GateContext()).eval()  # fmt: skip
    with torch.no_grad():
        layer.pqlora_P["default"].normal_()
        layer.pqlora_Q["default"].normal_()
    x = torch.randn(2, 5, 7)
    layer.force_beta = 0.0
    expected = layer.base_layer(x) + x @ layer.get_delta_weight().T + layer.get_delta_bias()
    assert torch.allclose(layer(x), expected, atol=1e-5)
    deltas = []
    for i in range(3):
        for j in range(3):
            with torch.no_grad():
                layer.pqlora_P["default"].zero_()
                layer.pqlora_P["default"][i, j] = 1.0
            deltas.append(layer.get_delta_weight().reshape(-1).double())
    assert int(torch.linalg.matrix_rank(torch.stack(deltas))) == 9  # Theorem 1 on the layer itself


@pytest.mark.parametrize("use_pq", [True, False])
def test_gate_extremes_give_the_global_or_the_local_branch(use_pq: bool) -> None:
    torch.manual_seed(1)
    layer = Linear(nn.Linear(6, 5), "default", r=2, lora_alpha=4, lora_dropout=0.0, use_pq=use_pq, gate="sample",
                   gate_noise=0.0, context=GateContext()).eval()  # fmt: skip
    with torch.no_grad():
        for name in ("pqlora_P", "pqlora_Q", "pqlora_global_P", "pqlora_global_Q", "pqlora_B", "pqlora_global_B",
                     "pqlora_global_A", "pqlora_gate"):  # fmt: skip
            if "default" in getattr(layer, name):
                getattr(layer, name)["default"].normal_()
    x = torch.randn(3, 4, 6)
    base = layer.base_layer(x)
    s = layer.scaling["default"]
    a = "default"
    if use_pq:
        z = x @ layer.pqlora_A[a].T
        local = (z @ layer.pqlora_P[a] + layer.pqlora_Q[a]) @ layer.pqlora_B[a].T * s
        glob = (z @ layer.pqlora_global_P[a] + layer.pqlora_global_Q[a]) @ layer.pqlora_B[a].T * s
    else:
        local = x @ layer.pqlora_A[a].T @ layer.pqlora_B[a].T * s
        glob = x @ layer.pqlora_global_A[a].T @ layer.pqlora_global_B[a].T * s
    for beta, expected in ((1.0, base + glob), (0.0, base + local)):
        layer.force_beta = beta
        assert torch.allclose(layer(x), expected, atol=1e-5)
    layer.force_beta = None
    beta = layer.beta(x)  # input-dependent: one beta per sample, strictly between the two branches
    assert beta.shape == (3, 1, 1) and not torch.allclose(beta[0], beta[1])
    assert torch.allclose(layer(x), base + local + beta * (glob - local), atol=1e-5)


def test_sample_gate_ignores_padding() -> None:
    torch.manual_seed(2)
    ctx = GateContext()
    layer = Linear(nn.Linear(6, 5), "default", r=2, lora_alpha=4, lora_dropout=0.0, use_pq=True, gate="sample",
                   gate_noise=0.0, context=ctx).eval()  # fmt: skip
    with torch.no_grad():
        layer.pqlora_gate["default"].normal_()
    x = torch.randn(2, 6, 6)
    ctx.set_mask(torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]]))
    padded = layer.beta(x)[0]
    ctx.set_mask(None)
    alone = layer.beta(x[:1, :3])[0]
    assert torch.allclose(padded, alone, atol=1e-6)
    rows = torch.randn(4, 6)  # a 2-D input: every row is its own one-token sample
    assert torch.allclose(layer(rows), layer(rows.unsqueeze(1)).squeeze(1), atol=1e-6)
    layer.gate_noise = 0.6931  # the official noise: only in training
    assert torch.equal(layer.beta(x), layer.beta(x))
    layer.train()
    assert not torch.equal(layer.beta(x), layer.beta(x))


@pytest.mark.parametrize("tokens", ["prompt", "all"])
def test_gate_tokens_answer_and_decoding(tokens: str) -> None:
    """``prompt``: the answer tokens (labels) are left out, and decoding reuses the prompt's gate; ``all``
    (official): the answer tokens count, and a decode step gates on its own token."""
    torch.manual_seed(3)
    ctx = GateContext(tokens)
    layer = Linear(nn.Linear(6, 5), "default", r=2, lora_alpha=4, lora_dropout=0.0, use_pq=True, gate="sample",
                   gate_noise=0.0, context=ctx).eval()  # fmt: skip
    with torch.no_grad():
        layer.pqlora_gate["default"].normal_()
    x = torch.randn(1, 6, 6)
    ctx.set_mask(torch.ones(1, 4, dtype=torch.long))
    prompt = layer.beta(x[:, :4].clone())  # prefill: the 4 prompt tokens
    ctx.set_mask(torch.ones(1, 5, dtype=torch.long))
    decode = layer.beta(x[:, 4:5].clone())  # one new token, the cache holds the prompt
    ctx.labels = torch.tensor([[-100, -100, -100, -100, 7, 8]])
    ctx.set_mask(torch.ones(1, 6, dtype=torch.long))
    train = layer.beta(x)  # teacher forcing: prompt + answer
    ctx.labels = None
    if tokens == "prompt":
        assert torch.allclose(train, prompt, atol=1e-6) and torch.equal(decode, prompt)
    else:
        assert not torch.allclose(train, prompt, atol=1e-4) and not torch.allclose(decode, prompt, atol=1e-4)


def test_model_gate_extremes_and_pq_state_across_architectures(tok, rows) -> None:
    src = inject_pqlora(_loaded("tiny-llama-s", tok).model, R8)
    dst_loaded = _loaded("tiny-qwen-m", tok)
    dst = inject_pqlora(dst_loaded.model, R8).eval()
    torch.manual_seed(3)
    with torch.no_grad():
        for layer in src.pq_modules.values():
            layer.pqlora_P["default"].normal_(std=0.5)
            layer.pqlora_Q["default"].normal_(std=0.5)
    state = src.pq_state("local")
    assert set(src.blocks) <= set(dst.blocks)
    assert dst.load_pq_state(state, branch="global") == len(state) == 2 * 7 * len(src.blocks)
    got = dst.pq_state("global")
    assert all(torch.equal(got[k], state[k]) for k in state)
    # a model with fewer layers than blocks hosts some blocks and skips the others
    extra = PQLoraConfig(r=8, num_blocks=src.num_layers + 1)
    shallow = inject_pqlora(_loaded("tiny-llama-s", tok).model, extra)
    deep = inject_pqlora(_loaded("tiny-llama-m", tok).model, extra)
    assert len(shallow.blocks) == shallow.num_layers < extra.num_blocks == len(deep.blocks)
    assert shallow.load_pq_state(deep.pq_state(), branch="global") == 2 * 7 * len(shallow.blocks)
    with pytest.raises(DrakeError, match="canonical"):
        dst.load_pq_state({"bogus": torch.zeros(1)})
    # beta = 1 runs the global branch: same logits as loading the global into the local slot with beta = 0
    batch = collate(dst_loaded, rows[:3])
    with torch.no_grad(), dst.force_beta(1.0):
        via_global = dst(**batch).logits
    dst.load_pq_state(state, branch="local")
    with torch.no_grad(), dst.force_beta(0.0):
        via_local = dst(**batch).logits
    with torch.no_grad(), dst.disable_adapter():
        bare = dst(**batch).logits
    assert torch.allclose(via_global, via_local, atol=1e-4) and not torch.allclose(via_global, bare, atol=1e-3)


def test_gate_watch_reads_the_prompt_gate_off_the_scoring_forwards(tok) -> None:
    """The diagnostics' beta comes from the forwards that score a task (no forward of its own): with the
    shared-prompt scorer it must equal the gate of a forward over the prompts alone, row for row."""
    from drake.models.scoring import choice_scores, generate_answers, shares_prompt
    from fedmosaic.diagnostics import GateWatch, recorded_betas

    loaded = _loaded("tiny-llama-s", tok)
    pq = inject_pqlora(loaded.model, R8).eval()
    torch.manual_seed(5)
    with torch.no_grad():
        for layer in pq.layers.values():
            layer.pqlora_gate["default"].normal_(std=0.3)
    assert shares_prompt(pq)
    task_rows = [r for r in public_rows(40, seed=4) if r["choices"]][:5]
    watch = GateWatch(pq)
    with watch.task("t"):
        choice_scores(loaded, task_rows, model=pq, batch_size=3)
    prompt_only: list[torch.Tensor] = []
    with torch.no_grad(), recorded_betas(pq, prompt_only):
        for start in (0, 3):
            pq(**collate(loaded, task_rows[start : start + 3], with_answer=False))
    layers = len(pq.layers)
    assert sum(len(b) for b in watch.values["t"]) == layers * len(task_rows) == sum(len(b) for b in prompt_only)
    got, want = torch.cat(watch.values["t"]), torch.cat(prompt_only)
    assert torch.allclose(got, want, atol=1e-5) and got.std() > 1e-3  # per row and layer, not a constant
    assert watch.mean(["t"]) == pytest.approx(float(want.mean()), abs=1e-6)
    with watch.task("open"):  # greedy decoding: the prefill is recorded, the cached decode steps are not
        generate_answers(loaded, task_rows[:2], model=pq, max_new_tokens=3)
    assert sum(len(b) for b in watch.values["open"]) == layers * 2
    assert watch.mean(["unscored"]) is None and not any(hasattr(x, "__dict__") and "beta" in x.__dict__
                                                        for x in pq.layers.values())  # fmt: skip


def test_bf16_base_forward_backward_and_sketch(tok, rows) -> None:
    loaded = _loaded("tiny-llama-s", tok, torch.bfloat16)
    model = inject_pqlora(loaded.model, PQLoraConfig(r=8, lora_alpha=16)).train()
    out = model(**collate(loaded, rows[:2]))
    assert out.logits.dtype == torch.bfloat16
    out.loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if n.endswith("pqlora_P.default")]
    assert grads and all(g is not None and g.dtype == torch.float32 for g in grads)
    g = R.last_layer_gradient(loaded, rows[:2])
    text = loaded.model.config.text_config
    assert g.shape == (text.hidden_size, text.intermediate_size) and torch.isfinite(g).all()


# ----------------------------------------------------------------------------------------- RELA


def test_sketch_is_the_exact_last_layer_gradient(tok, rows) -> None:
    loaded = _loaded("tiny-llama-s", tok)
    down = loaded.model.model.language_model.layers[-1].mlp.down_proj
    down.weight.requires_grad_(True)
    try:
        loss = loaded.model(**collate(loaded, rows[:4])).loss
        (expected,) = torch.autograd.grad(loss, down.weight)
    finally:
        down.weight.requires_grad_(False)
    got = R.last_layer_gradient(loaded, rows[:4])
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-3)
    gen = torch.Generator().manual_seed(0)
    sketch = R.sanitize(got, 0.4, 1e-4, gen)
    keep = int(0.4 * got.shape[0])
    assert sketch.shape == (keep, got.shape[1])  # the first 40% of the rows
    assert 0 < (sketch - got[:keep]).abs().max() < 1e-3
    assert torch.equal(R.ema(None, sketch, 0.5), sketch)
    assert torch.allclose(R.ema(torch.zeros_like(sketch), sketch, 0.5), sketch / 2)


def test_rela_weights_rows_sum_to_one_self_excluded_similar_weigh_more() -> None:
    torch.manual_seed(4)
    base = torch.randn(5, 12)
    sketches = [base, base + 0.1 * torch.randn(5, 12), torch.randn(5, 12), -base]
    sim = R.similarity(sketches)
    assert torch.allclose(sim, sim.T) and torch.allclose(sim.diagonal(), torch.ones(4, dtype=torch.float64))
    w = R.relevance_weights(sim, tau=0.5)
    assert torch.allclose(w.sum(1), torch.ones(4, dtype=torch.float64))
    assert torch.all(w.diagonal() == 0)
    assert w[0, 1] > w[0, 2] > w[0, 3] and w[1, 0] > w[1, 2]
    sharp = R.relevance_weights(sim, tau=0.05)
    assert sharp[0, 1] > w[0, 1]
    allowed = torch.ones(4, 4, dtype=torch.bool)
    allowed[:, 1] = False
    masked = R.relevance_weights(sim, tau=0.5, allowed=allowed)
    assert torch.all(masked[:, 1] == 0) and torch.allclose(masked.sum(1), torch.ones(4, dtype=torch.float64))
    uniform = R.uniform_weights(4)
    assert torch.allclose(uniform, (1 - torch.eye(4, dtype=torch.float64)) / 3)


def _updates(values: dict[int, float], sketches: dict[int, torch.Tensor], archs: dict[int, str]) -> list[ClientUpdate]:
    out = []
    for cid, v in values.items():
        arrays = {"pq.0.mlp.down_proj.P": torch.full((2, 2), v), "pq.0.mlp.down_proj.Q": torch.full((2,), v)}
        if cid != 3:  # client 3 is a 3-layer model without block 1
            arrays["pq.1.mlp.down_proj.P"] = torch.full((2, 2), v)
        width = 4 if archs[cid] == "a" else 6
        arrays["model.layers.0.q_proj.pqlora_A.default"] = torch.full((2, width), v)
        out.append(ClientUpdate(cid, arrays, 10, {}, {"sketch": sketches[cid]}))
    return out


def test_per_client_payloads_follow_relevance() -> None:
    torch.manual_seed(5)
    archs = {0: "a", 1: "a", 2: "a", 3: "b"}
    clients = {c: ClientInfo(c, archs[c], ("t",)) for c in archs}
    ctx = RoundContext(0, load_scenario("smoke"), 0, (0, 1, 2, 3), clients)
    base = torch.randn(4, 10)
    sketches = {0: base, 1: base + 0.05 * torch.randn(4, 10), 2: torch.randn(4, 10), 3: torch.randn(4, 10)}
    values = {0: 0.0, 1: 1.0, 2: 2.0, 3: 3.0}
    method = FedMosaic(FedMosaicConfig())
    server = method.aggregate(ctx, method.init_server(clients), _updates(values, sketches, archs))
    w = torch.tensor(server.method_state["relevance"], dtype=torch.float64)
    assert torch.allclose(w.sum(1), torch.ones(4, dtype=torch.float64)) and torch.all(w.diagonal() == 0)
    assert w[0, 1] > w[0, 2] and w[1, 0] > w[1, 2]
    g = server.per_client
    pq0 = float(g[0]["pq.0.mlp.down_proj.P"][0, 0])
    assert pq0 == pytest.approx(float(w[0, 1] * 1 + w[0, 2] * 2 + w[0, 3] * 3), rel=1e-5)  # all architectures
    assert pq0 != pytest.approx(2.0) and not torch.equal(g[0]["pq.0.mlp.down_proj.P"], g[2]["pq.0.mlp.down_proj.P"])
    # LoRA parts only from the same architecture, renormalised over it; client 3 is alone in "b"
    lora0 = float(g[0]["model.layers.0.q_proj.pqlora_A.default"][0, 0])
    assert lora0 == pytest.approx(float((w[0, 1] * 1 + w[0, 2] * 2) / (w[0, 1] + w[0, 2])), rel=1e-5)
    assert "model.layers.0.q_proj.pqlora_A.default" not in g[3]
    assert "pq.1.mlp.down_proj.P" not in g[3] and "pq.1.mlp.down_proj.P" in g[0]  # only blocks the client has
    payloads = method.configure_round(ctx, server)
    assert payloads[0].nbytes > 0 and not torch.equal(payloads[0].arrays["pq.0.mlp.down_proj.Q"],
                                                      payloads[1].arrays["pq.0.mlp.down_proj.Q"])  # fmt: skip
    # no RELA: uniform over the others, whatever the sketches say
    flat = FedMosaic(FedMosaicConfig(rela=False))
    server = flat.aggregate(ctx, flat.init_server(clients), _updates(values, sketches, archs))
    assert float(server.per_client[0]["pq.0.mlp.down_proj.P"][0, 0]) == pytest.approx(2.0)
    log = server.method_state["fedmosaic"]["rounds"][0]
    assert log["sketch_bytes"] > 0 and log["pq_payload_bytes"] > 0


def test_config_and_homogeneous_checks() -> None:
    with pytest.raises(SpecError, match="tau"):
        FedMosaicConfig(tau=0)
    with pytest.raises(SpecError, match="gate"):
        FedMosaicConfig(gate="bogus")
    clients = {0: ClientInfo(0, "a", ("t",)), 1: ClientInfo(1, "b", ("t",))}
    with pytest.raises(SpecError, match="one architecture"):
        FedMosaic(FedMosaicConfig(homogeneous=True)).init_server(clients)
    assert not FedMosaicConfig(homogeneous=True).pqlora().use_pq


# ------------------------------------------------------------------------------------ alignment


def test_align_a_reduces_the_loss_and_keeps_orthonormal_rows() -> None:
    torch.manual_seed(6)
    x_small = torch.randn(400, 10)
    x_large = x_small @ torch.randn(10, 16) + 0.01 * torch.randn(400, 16)
    a_small = orthonormal(4, 10, torch.Generator().manual_seed(0))
    a_init = orthonormal(4, 16, torch.Generator().manual_seed(1))
    a, before, after = align_a(x_large, x_small @ a_small.T, a_init, AlignSettings(steps=200, lr=2e-2))
    assert after < 0.5 * before
    assert torch.allclose(a @ a.T, torch.eye(4), atol=1e-5)


def test_align_pair_on_tiny_models_and_its_cache(tok, tmp_path: Path) -> None:
    anchor, large = _loaded("tiny-llama-s", tok), _loaded("tiny-llama-m", tok)
    pq = inject_pqlora(large.model, R8)
    settings = AlignSettings(samples=6, steps=40, batch_size=6)
    before = pq.ab_state()
    report = align_to_anchor(anchor, large, pq, settings, cache_dir=tmp_path)
    assert not report["cached"] and report["mse_after"] < report["mse_before"]
    shared = set(block_layers(anchor.num_layers)) & set(pq.blocks)  # blocks both models host
    assert {int(k.split(".")[1]) for k in report["modules"]} == shared
    state = pq.ab_state()
    eye = torch.eye(8)
    for key, t in state.items():
        assert torch.equal(t, before[key]) == (int(key.split(".")[1]) not in shared), key
        gram = t @ t.T if key.endswith(".A") else t.T @ t
        assert torch.allclose(gram, eye, atol=1e-4), key
    pq.load_ab_state(before)
    again = align_to_anchor(anchor, large, pq, settings, cache_dir=tmp_path)
    assert again["cached"] and all(torch.equal(pq.ab_state()[k], state[k]) for k in state)
    pq.load_ab_state(before)
    fresh, _ = align_pair(anchor, large, pq, settings)
    assert all(torch.allclose(fresh[k], state[k], atol=1e-5) for k in fresh)  # deterministic


# ------------------------------------------------------------------------------ through the engine


def test_two_rounds_through_the_engine(untrained_models, tmp_path: Path) -> None:
    from conftest import write_scenario

    from drake.runner import add_run_arguments, make_engine, plan_from_args, seed_record

    m = untrained_models
    scenario = write_scenario(tmp_path / "mix.yaml", [m["tiny-llama-s"], m["tiny-qwen-s"], m["tiny-llama-m"]])
    p = argparse.ArgumentParser()
    add_run_arguments(p)
    fast = ["--scale", "0.1", "--no-progress", "--set", "local_steps=2", "--set", "batch_size=2",
            "--set", "grad_every=1", "--set", "num_blocks=4", "--set", "align_samples=4", "--set", "align_steps=10", "--set", f"align_cache={tmp_path / 'align'}",
            "--set", "engine.others_limit=2", "--set", "engine.self_limit=2", "--set", "engine.unseen_limit=2"]  # fmt: skip
    args = p.parse_args(["--method", "fedmosaic", "--scenario", str(scenario), "--out", str(tmp_path / "o"), *fast,
                         "--set", "engine.diagnostic_passes=true"])  # fmt: skip
    plan = plan_from_args(args)
    engine, method = make_engine(plan, 0, None)
    sent: list[ClientUpdate] = []
    received: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
    scored_global: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
    original = method.client_update

    def spy(ctx, client, payload):
        received[ctx.round + 1, client.id] = dict(payload.arrays)
        u = original(ctx, client, payload)
        assert not (set(u.arrays) & set(client.adapter.names("local"))), "gates left the client"
        sent.append(u)
        return u

    from drake.fl.client import ClientRuntime

    evaluate = ClientRuntime.evaluate

    def spy_evaluate(self, task, **kw):
        scored_global.setdefault((self.round + 1, self.id), self.model.global_state())
        return evaluate(self, task, **kw)

    method.client_update = spy  # type: ignore[method-assign]
    ClientRuntime.evaluate = spy_evaluate  # type: ignore[method-assign]
    try:
        raw = engine.run(method, plan.scenario, seed=0)
    finally:
        ClientRuntime.evaluate = evaluate  # type: ignore[method-assign]
    # the scored model's global branch is exactly the G_i the client received and trained with that round
    # (official protocol: the server's next G_i is never loaded); round 1's payload is empty (G_i = L_i)
    for cid in range(3):
        payload, held = received[2, cid], scored_global[2, cid]
        assert payload and all(torch.equal(held[k], v) for k, v in payload.items()), f"client {cid}"
    record = seed_record(0, plan.scenario, raw, wall_seconds=0.0)
    archs = [str(m[n]) for n in ("tiny-llama-s", "tiny-qwen-s", "tiny-llama-m")]
    anchor = R.smallest_model(archs)
    text = R.shared_model(anchor, "cpu").model.config.text_config  # W_s = the smallest model
    shape = (int(0.4 * text.hidden_size), text.intermediate_size)
    assert len(sent) == 6 and all(u.side_info["sketch"].shape == shape for u in sent)
    hosted = [set(block_layers(R.text_shape(a)["layers"], method.config.num_blocks)) for a in archs]
    for u, blocks in zip(sent[:3], hosted):  # each client uploads the blocks its model hosts
        assert {int(k.split(".")[1]) for k in u.arrays} == blocks
    assert [r["round"] for r in record["relevance"]] == [1, 2]
    for rel in record["relevance"]:
        w = torch.tensor(rel["matrix"])
        assert torch.allclose(w.sum(1), torch.ones(3)) and torch.all(w.diagonal() == 0)
    per_round = record["comm_bytes"]["per_round"]
    assert per_round[0]["down"] == 0 and per_round[1]["down"] > 0 and per_round[0]["up"] > 0
    for entry in record["rounds"]:
        for scores in entry["eval"].values():
            assert all(0.0 <= v <= 1.0 for v in scores.values())
    # the gate diagnostics: beta on own vs others' prompts at each Others round, Others per branch at the last
    diagnostics = record["extra"]["diagnostics"]
    assert diagnostics and set(diagnostics[-1]["clients"]) == {"0", "1", "2"}
    for d in diagnostics[-1]["clients"].values():
        assert 0.0 < d["beta_own"] < 1.0 and 0.0 < d["beta_others"] < 1.0
        assert set(d["others_by_branch"]) == {"global", "local"}
    # they only read the model: without the passes (the default), the config hash, every score and the
    # gate stay the same, and Others per branch is left out
    quiet = p.parse_args(["--method", "fedmosaic", "--scenario", str(scenario), "--out", str(tmp_path / "q"), *fast])
    quiet_plan = plan_from_args(quiet)
    assert quiet_plan.config_hash == plan.config_hash
    engine, method = make_engine(quiet_plan, 0, None)
    plain = seed_record(0, quiet_plan.scenario, engine.run(method, quiet_plan.scenario, seed=0), wall_seconds=0.0)
    assert [e.get("eval") for e in plain["rounds"]] == [e.get("eval") for e in record["rounds"]]
    for d, full in zip(plain["extra"]["diagnostics"][-1]["clients"].values(), diagnostics[-1]["clients"].values()):
        assert "others_by_branch" not in d and d["beta_own"] == full["beta_own"]
    assert method.aligned[anchor] == {"anchors": {}}  # the anchor keeps its random orthonormal A/B
    for arch in archs:
        for rep in method.aligned[arch]["anchors"].values():
            assert rep["mse_after"] < rep["mse_before"]
    # 4 blocks on 3-5 layer models: a block the smallest model lacks is anchored at the next model having it
    for arch, blocks in zip(archs, hosted):
        for a, rep in method.aligned[arch]["anchors"].items():
            aligned_blocks = {int(k.split(".")[1]) for k in rep["modules"]}
            assert aligned_blocks and aligned_blocks <= blocks & set(block_layers(R.text_shape(a)["layers"], 4))
    assert sum(len(method.aligned[a]["anchors"]) for a in archs) >= 2
    # same seed, same numbers (the second run reads the aligned A/B from the cache)
    engine, method = make_engine(plan, 0, None)
    again = seed_record(0, plan.scenario, engine.run(method, plan.scenario, seed=0), wall_seconds=0.0)
    assert again["rounds"] == record["rounds"] and again["relevance"] == record["relevance"]
    assert all(r["cached"] for a in archs for r in method.aligned[a]["anchors"].values())
