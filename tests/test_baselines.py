"""PFL baselines: each update/aggregation/personalization rule on synthetic tensors, then every method for
2 rounds on the hetero tiny scenario (finite metrics, personal parameters never sent, compute recorded),
and same seed -> same numbers on the methods with the most moving parts (a subset, to stay fast)."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from baselines._distill import answer_logits, ensemble_teacher, kd_loss, teacher_groups
from baselines._dual import alternate, merge_metrics, others_by_mix, split_halves
from baselines._prox import prox_term, prox_to_other_adapter
from baselines.apfl import ALPHA, APFL, AlphaStep, APFLConfig, clamp_alpha, personal_mix
from baselines.feddat import FedDAT, FedDATConfig, dat_mix
from baselines.feddpa import inference_mix, instance_weights, prefix_lookup
from baselines.fedper import top_block_patterns
from baselines.fedrep import phase_steps
from drake.adapters.handle import AdapterHandle, AdapterSpec
from drake.adapters.mix import MixModel, causal_lm_loss
from drake.adapters.multi import add_lora_adapters, current_mix, mixed, rename_adapter, set_mix
from drake.fl.method import ServerState
from drake.fl.types import ClientInfo, ClientUpdate, RoundContext
from drake.method_registry import METHODS
from drake.runner import add_run_arguments, make_engine, plan_from_args, seed_record
from drake.spec import load_scenario

PFL = ["fedprox", "fedper", "fedrep", "ditto", "fedsim", "feddpa", "feddat", "perada", "apfl"]
FAST = ["--scale", "0.1", "--no-progress", "--set", "local_steps=2", "--set", "batch_size=4",
        "--set", "engine.others_limit=4", "--set", "engine.self_limit=6", "--set", "engine.unseen_limit=4"]  # fmt: skip
EXTRA = {"perada": ["--set", "kd_samples=8", "--set", "kd_steps=2", "--set", "kd_batch=4"]}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread avoids oversubscription (~10x faster)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------- toy model


class Toy(nn.Module):
    """A 'language model' with one LoRA-able projection: logits = proj(emb(ids))."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(12, 6)
        self.proj = nn.Linear(6, 12)

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        logits = self.proj(self.emb(input_ids))
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return SimpleNamespace(logits=logits, loss=loss)


def toy_peft(adapters=("local",)) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    toy = Toy()
    for p in toy.parameters():
        p.requires_grad_(False)
    model = get_peft_model(toy, LoraConfig(r=2, lora_alpha=4, target_modules=["proj"], init_lora_weights=False))
    add_lora_adapters(model, adapters)
    return model


def delta(model: nn.Module, adapter: str, h: torch.Tensor) -> torch.Tensor:
    """scaling * B_a A_a h for the toy's projection."""
    layer = model.base_model.model.proj
    return layer.lora_B[adapter](layer.lora_A[adapter](h)) * 2.0  # alpha / r = 4 / 2


IDS = torch.tensor([[1, 2, 3], [4, 5, 6]])


def base_and_h(model):
    toy = model.base_model.model
    h = toy.emb(IDS)
    return toy.proj.base_layer(h), h


# ------------------------------------------------------------------------------- rule unit tests


def test_ditto_personal_step_moves_toward_global_by_lr_lambda() -> None:
    v = {"m.lora_A.local.weight": nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))}
    w = {"m.lora_A.default.weight": torch.tensor([0.0, 0.0, 1.0])}
    lam, lr = 0.5, 0.1
    reg = prox_to_other_adapter(v, w, lam, "local", "default")
    opt = torch.optim.SGD(list(v.values()), lr=lr)
    reg(None).backward()
    p = v["m.lora_A.local.weight"]
    assert torch.allclose(p.grad, lam * (p.detach() - w["m.lora_A.default.weight"]))
    before = p.detach().clone()
    opt.step()
    expected = before - lr * lam * (before - w["m.lora_A.default.weight"])  # v <- v - lr*lam*(v - w)
    assert torch.allclose(p.detach(), expected)
    assert (p.detach() - w["m.lora_A.default.weight"]).norm() < (before - w["m.lora_A.default.weight"]).norm()


def test_fedprox_term_value_and_gradient() -> None:
    theta = {"x": nn.Parameter(torch.tensor([2.0, 0.0]))}
    anchor = {"x": torch.tensor([1.0, 1.0])}
    term = prox_term(theta, anchor, coef=0.2)
    assert float(term.detach()) == pytest.approx(0.1 * 2.0)  # mu/2 * ||(1, -1)||^2
    term.backward()
    assert torch.allclose(theta["x"].grad, 0.2 * torch.tensor([1.0, -1.0]))


def test_shared_adapter_aggregation_is_weighted_and_per_architecture() -> None:
    ditto = METHODS.get("ditto")()
    clients = {0: ClientInfo(0, "s", ("t",)), 1: ClientInfo(1, "m", ("t",)), 2: ClientInfo(2, "s", ("t",))}
    ctx = RoundContext(0, load_scenario("smoke"), 0, (0, 1, 2), clients)
    key = "l.lora_A.default.weight"
    ups = [ClientUpdate(0, {key: torch.tensor([1.0])}, 1), ClientUpdate(1, {key: torch.tensor([9.0])}, 1),
           ClientUpdate(2, {key: torch.tensor([4.0])}, 2)]  # fmt: skip
    server = ditto.aggregate(ctx, ServerState(), ups)
    assert torch.equal(server.per_arch["s"][key], torch.tensor([3.0]))  # (1*1 + 4*2) / 3
    assert torch.equal(server.per_arch["m"][key], torch.tensor([9.0]))


def test_fedper_fedrep_personal_blocks_and_phases() -> None:
    model = SimpleNamespace(config=SimpleNamespace(text_config=SimpleNamespace(num_hidden_layers=4)))
    patterns = top_block_patterns(model, 1)
    assert patterns == ("*.language_model.layers.3.*",)
    root = nn.Module()
    root.base = nn.Module()
    root.base.language_model = nn.Module()
    root.base.language_model.layers = nn.ModuleList([nn.Linear(1, 1, bias=False) for _ in range(4)])
    handle = AdapterHandle(root, AdapterSpec(shared=("*",), local=patterns))
    names = [f"base.language_model.layers.{i}.weight" for i in range(4)]
    assert handle.names("local") == names[3:] and handle.names("shared") == names[:3]
    assert phase_steps(20, 0.2) == (16, 4)  # FL-bench: 1 body epoch of 5
    assert phase_steps(2, 0.2) == (1, 1)  # the body always gets a step


def test_split_halves_and_metric_merge() -> None:
    batches = [[1, 2, 3, 4], [5, 6, 7, 8]]
    first, second = split_halves(batches)
    assert first == [[1, 3], [5, 7]] and second == [[2, 4], [6, 8]]
    merged = merge_metrics([{"loss": 1.0, "steps": 1, "examples": 2}, {"loss": 3.0, "steps": 3, "examples": 6}])
    assert merged == {"loss": 2.5, "steps": 4.0, "examples": 8.0}


def test_mix_is_a_weighted_sum_of_adapter_updates() -> None:
    """FedDAT's DAT = 0.5 (A_l + A_g'), and any mix = base + sum_k w_k delta_W_k x."""
    model = toy_peft(("local", "frozen"))
    base, h = base_and_h(model)
    with mixed(model, dat_mix(0.5)):
        out = model(input_ids=IDS).logits
    assert torch.allclose(out, base + 0.5 * delta(model, "local", h) + 0.5 * delta(model, "frozen", h), atol=1e-6)
    set_mix(model, {"default": 1.0})
    assert torch.allclose(model(input_ids=IDS).logits, base + delta(model, "default", h), atol=1e-6)


def test_feddpa_instance_weights_and_per_row_mix() -> None:
    h = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    refs = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    lam = instance_weights(h, refs, max_weight=0.5)
    assert torch.allclose(lam, 0.5 * torch.tensor([(1 + 2**-0.5) / 2, (0 + 2**-0.5) / 2]))
    model = toy_peft()
    base, hid = base_and_h(model)
    with mixed(model, inference_mix(lam)):
        out = model(input_ids=IDS).logits
    for i in range(2):  # row i: lambda_i * global + (1 - lambda_i) * local
        want = base[i] + lam[i] * delta(model, "default", hid)[i] + (1 - lam[i]) * delta(model, "local", hid)[i]
        assert torch.allclose(out[i], want, atol=1e-6)


def test_feddpa_prefix_lookup_ignores_padding_and_choice() -> None:
    table = {(7, 8): 0.3, (7, 8, 9): 0.9}
    ids = torch.tensor([[0, 0, 7, 8, 5], [7, 8, 9, 4, 4], [1, 2, 3, 4, 5]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert prefix_lookup(table, ids, mask).tolist() == pytest.approx([0.3, 0.9, 0.5])


def test_apfl_alpha_gets_the_mixture_gradient_and_stays_in_unit_interval() -> None:
    model = toy_peft()
    alpha = nn.Parameter(torch.tensor(0.3))
    base, h = base_and_h(model)
    dv, dw = delta(model, "local", h).detach(), delta(model, "default", h).detach()
    with mixed(model, personal_mix(alpha)):
        out = model(input_ids=IDS).logits
    assert torch.allclose(out, base + 0.3 * dv + 0.7 * dw, atol=1e-6)  # alpha v + (1 - alpha) w
    out.sum().backward()
    assert math.isclose(float(alpha.grad), float((dv - dw).sum()), rel_tol=1e-4)  # <delta_v - delta_w, grad>
    with torch.no_grad():
        alpha.fill_(1.7)
    clamp_alpha(alpha)
    assert float(alpha.detach()) == 1.0


def test_apfl_alpha_takes_the_plain_gradient_step_not_adams() -> None:
    model = toy_peft()
    alpha = nn.Parameter(torch.tensor(0.5))

    def loss(rows: slice) -> torch.Tensor:
        with mixed(model, personal_mix(alpha)):
            return model(input_ids=IDS[rows]).logits.pow(2).mean() / 2

    want = torch.autograd.grad(loss(slice(0, 1)) + loss(slice(1, 2)), alpha)[0]  # the two micro-batches' sum
    lora = [p for n, p in model.named_parameters() if ".lora_" in n and ".local." in n]
    opt = torch.optim.AdamW([{"params": lora, "lr": 1e-2}, {"params": [alpha], "lr": 0.0}])  # as the runtime
    step = AlphaStep(alpha, lr=0.1)
    for rows in (slice(0, 1), slice(1, 2)):
        loss(rows).backward()
    opt.step()
    step.step()
    step.close()
    assert float(alpha.detach()) == pytest.approx(0.5 - 0.1 * float(want), abs=1e-6)  # Adam would move it by ~lr
    assert float(want) != 0.0 and step.grad == 0.0
    alpha.grad = None
    loss(slice(0, 2)).backward()  # the hook is gone: nothing recorded
    assert step.grad == 0.0


def test_apfl_scores_others_with_each_model_alone_only_when_asked() -> None:
    """Diagnostics with ``passes`` at the last Others round: Others under w alone and v_k alone, on the rows
    Others is scored on, and the scored mix alpha v_k + (1 - alpha) w restored afterwards."""
    model = toy_peft()
    alpha = nn.Parameter(torch.tensor(0.25))
    scored = personal_mix(0.25)
    set_mix(model, scored)
    calls: list = []

    def evaluate(task: str, limit: int | None = None) -> dict[str, float]:
        mix = current_mix(model)
        calls.append((task, limit, dict(mix)))
        return {"score": 0.6 if mix == {"default": 1.0} else 0.2 if mix == {"local": 1.0} else 0.0}

    client = SimpleNamespace(model=model, evaluate=evaluate,
                             adapter=SimpleNamespace(names=lambda _: [ALPHA], parameters=lambda _: [alpha]))  # fmt: skip
    method = APFL(APFLConfig())
    plain = method.diagnostics(None, client, ["t0"], ["t1", "t2"], final=True, limit=3)
    assert plain == {"alpha": 0.25, "beta_own": 0.75, "beta_others": 0.75} and not calls
    full = method.diagnostics(None, client, ["t0"], ["t1", "t2"], final=True, limit=3, passes=True)
    assert full["others_by_branch"] == pytest.approx({"global": 0.6, "local": 0.2})
    assert [(t, n) for t, n, _ in calls] == [("t1", 3), ("t2", 3)] * 2
    assert current_mix(model) == scored
    assert others_by_mix(client, ["t1"], {"w": {"default": 1.0}}, None) == {"w": 0.6}


@pytest.mark.parametrize("method", ["ditto", "perada", "apfl", "feddat", "feddpa", "fedsim"])
def test_dual_methods_name_branches_they_hold(method: str) -> None:
    """Others per branch (diagnostics with passes) mixes only adapters the method attaches, under the keys the
    gate table and plot read; FedSim's logit-sum variant has no adapter mix to split."""
    m = METHODS.get(method)()
    assert set(m.branches) == {"global", "local"}
    for mix in m.branches.values():
        assert set(mix) <= {"default", *m.extra_adapters}
    if method == "fedsim":
        assert METHODS.get(method)(METHODS.get(method).config_cls(combine="logits")).branches == {}


def test_fedsim_logit_sum_and_its_loss() -> None:
    model = toy_peft()
    wrapper = MixModel(model)
    wrapper.branches = [{"default": 1.0}, {"local": 1.0}]
    labels = torch.tensor([[-100, 3, 4], [-100, -100, 5]])
    out = wrapper(input_ids=IDS, labels=labels)
    base, h = base_and_h(model)
    want = 2 * base + delta(model, "default", h) + delta(model, "local", h)
    assert torch.allclose(out.logits, want, atol=1e-6)
    assert torch.allclose(out.loss, causal_lm_loss(want, labels))


def test_kd_loss_is_t2_kl_and_zero_on_agreement() -> None:
    s, t = torch.tensor([[1.0, 0.0, -1.0]]), torch.tensor([[0.0, 2.0, 0.0]])
    T = 3.0
    p_t, log_p_s = torch.softmax(t / T, -1), torch.log_softmax(s / T, -1)
    want = T * T * (p_t * (p_t.log() - log_p_s)).sum()
    assert torch.allclose(kd_loss(s, t, T), want)
    assert float(kd_loss(t, t, T)) == pytest.approx(0.0, abs=1e-7)
    labels = torch.tensor([[-100, -100, 1, 2]])
    logits = torch.arange(4 * 5, dtype=torch.float).reshape(1, 4, 5)
    assert torch.equal(answer_logits(logits, labels), logits[0, 1:3])  # positions predicting 1 and 2


def test_perada_teacher_is_the_mean_over_same_vocabulary_clients() -> None:
    a = [torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 1.0], [3.0, 3.0]])]
    b = [torch.tensor([[2.0, 0.0]]), torch.tensor([[3.0, 1.0], [1.0, 1.0]])]
    mean = ensemble_teacher([a, b])
    assert torch.equal(mean[0], torch.tensor([[1.0, 1.0]])) and torch.equal(mean[1], torch.tensor([[2.0, 1.0], [2.0, 2.0]]))
    sigs = {"llama": "v1", "qwen": "v1", "other": "v2"}
    clients = {0: "llama", 1: "qwen", 2: "llama", 3: "other"}
    assert teacher_groups(sigs, clients, cross_arch=True) == {"llama": [0, 1, 2], "qwen": [0, 1, 2], "other": [3]}
    assert teacher_groups(sigs, clients, cross_arch=False) == {"llama": [0, 2], "qwen": [1], "other": [3]}


def test_rename_adapter_maps_a_global_into_a_copy() -> None:
    state = {"x.lora_A.default.weight": torch.ones(1), "x.lora_A.local.weight": torch.zeros(1)}
    assert set(rename_adapter(state, "default", "frozen")) == {"x.lora_A.frozen.weight"}


@pytest.mark.parametrize(
    ("method", "ratio"),
    [("fedprox", 1.0), ("fedper", 1.0), ("fedrep", 1.0), ("ditto", 1.0), ("perada", 1.0), ("apfl", 1.0),
     ("feddpa", 1.0), ("fedsim", 1.0), ("feddat", 1.05), ("local", 1.0)],
)  # fmt: skip
def test_default_budgets_follow_the_equal_compute_table(method: str, ratio: float) -> None:
    m = METHODS.get(method)()
    assert m.compute_ratio_to_local() == pytest.approx(ratio)
    assert "averaged within each architecture" in METHODS.summary(method) or method == "local"


def test_bad_settings_are_one_line_spec_errors() -> None:
    from drake.config import build_config
    from drake.errors import SpecError

    with pytest.raises(SpecError, match="combine"):
        build_config(METHODS.get("fedsim").config_cls, {"combine": "sum"}, where="fedsim")
    with pytest.raises(SpecError, match="body_fraction"):
        build_config(METHODS.get("fedrep").config_cls, {"body_fraction": 0}, where="fedrep")
    layer = METHODS.get("fedsim")(build_config(METHODS.get("fedsim").config_cls, {"combine": "layer"}, where="x"))
    assert layer.compute_cost() == 1.0  # one pass with both adapters active


class SpyClient:
    """A client runtime whose ``train`` records which parameters (by name) each call trains and on which rows,
    instead of stepping: enough to check how a dual-update method schedules its phases."""

    def __init__(self, model: nn.Module, handle: AdapterHandle, batches: list[list[int]]) -> None:
        self.model, self.adapter, self.batches = model, handle, batches
        self.id, self.architecture, self.num_examples = 0, "toy", sum(len(b) for b in batches)
        self.calls: list[tuple[set[str], list[int]]] = []

    def next_batches(self, n: int) -> list[list[int]]:
        return self.batches[:n]

    def train(self, steps: int, *, batches, params, **_kw) -> dict[str, float]:
        names = {id(p): n for n, p in zip(self.adapter.names("all"), self.adapter.parameters("all"))}
        assert steps == len(batches)
        self.calls += [({names[id(p)] for p in params}, list(b)) for b in batches]
        return {"loss": 1.0, "steps": float(steps), "examples": float(sum(len(b) for b in batches))}


def spy_client(method, adapters: tuple[str, ...], extra: dict[str, float]) -> SpyClient:
    """A toy peft model with the method's adapters (and extra parameters) under the method's spec."""
    model = toy_peft(adapters)
    for name, value in extra.items():
        model.register_parameter(name, nn.Parameter(torch.tensor(value)))
    names = [n for n, _ in model.named_parameters() if ".lora_" in n] + list(extra)
    handle = AdapterHandle(model, method.adapter_spec(), trainable=names)
    return SpyClient(model, handle, [list(range(8)), list(range(8, 16))])


def phase_of(names: set[str]) -> str:
    kinds = {"alpha" if n == ALPHA else n.split(".")[-2] for n in names}
    assert len(kinds - {"alpha"}) == 1, kinds
    return "+".join(sorted(kinds))


def test_alternate_slices_by_default_and_gives_every_phase_the_whole_batch_with_same_rows() -> None:
    method = METHODS.get("ditto")()
    client = spy_client(method, ("local",), {})
    params = client.adapter.parameters("all")
    phases = [{"params": params[:1]}, {"params": params[-1:]}]
    halves = alternate(client, client.batches, phases)
    assert [rows for _, rows in client.calls] == [[0, 2, 4, 6], [1, 3, 5, 7], [8, 10, 12, 14], [9, 11, 13, 15]]
    client.calls.clear()
    same = alternate(client, client.batches, phases, same_rows=True)
    assert [rows for _, rows in client.calls] == [list(range(8))] * 2 + [list(range(8, 16))] * 2
    # ``examples`` counts distinct rows in both modes (the extra passes are the method's compute_cost)
    assert halves == {"loss": 1.0, "steps": 4.0, "examples": 16.0} and same == halves


def test_apfl_personal_phase_first_and_both_phases_on_the_same_rows() -> None:
    method = APFL(APFLConfig(local_steps=2))
    client = spy_client(method, ("local",), {ALPHA: 0.5})
    ctx = RoundContext(0, load_scenario("smoke"), 0, (0,), {0: ClientInfo(0, "toy", ("t",))})
    update = method.client_update(ctx, client, SimpleNamespace(arrays={}))
    phases = [(phase_of(names), rows) for names, rows in client.calls]
    # Algorithm 1: v, alpha and w take their gradients on the same sample at the pre-step iterate
    assert phases == [("alpha+local", list(range(8))), ("default", list(range(8))),
                      ("alpha+local", list(range(8, 16))), ("default", list(range(8, 16)))]  # fmt: skip
    assert update.metrics["examples"] == 16.0 and update.metrics["steps"] == 4.0
    assert set(update.arrays) == set(client.adapter.names("shared")) and all(".default." in k for k in update.arrays)
    assert (method.config.batch_size, method.compute_cost()) == (8, 2.0)


def test_feddat_global_and_personal_steps_on_the_same_rows() -> None:
    method = FedDAT(FedDATConfig(local_steps=2))
    client = spy_client(method, ("local", "frozen"), {})
    ctx = RoundContext(0, load_scenario("smoke"), 0, (0,), {0: ClientInfo(0, "toy", ("t",))})
    update = method.client_update(ctx, client, SimpleNamespace(arrays={}))
    phases = [(phase_of(names), rows) for names, rows in client.calls]
    assert phases == [("default", list(range(8))), ("local", list(range(8))),
                      ("default", list(range(8, 16))), ("local", list(range(8, 16)))]  # fmt: skip
    assert update.metrics["examples"] == 16.0
    assert (method.config.batch_size, method.compute_cost()) == (8, pytest.approx(7 / 3))  # (3 + 1 + 3) / 3


class SteppingClient(SpyClient):
    """A spy that also runs each phase's loss and then moves the phase's parameters (a stand-in step)."""

    def train(self, steps: int, *, batches, params, loss_fn=None, **kw) -> dict[str, float]:
        out = super().train(steps, batches=batches, params=params, **kw)
        for rows in batches:
            loss_fn(self, rows).backward()
            with torch.no_grad():
                for p in params:
                    p.add_(0.5)
        return out


def test_feddat_personal_teacher_is_the_global_output_before_its_step(monkeypatch) -> None:
    import baselines.feddat as feddat

    labels = torch.tensor([[-100, 3, 4], [-100, 5, 6]])
    monkeypatch.setattr(feddat, "forward", lambda rt, rows: (rt.model(input_ids=IDS, labels=labels), labels))
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def recording_kd(student, teacher, t):
        seen.append((student.detach().clone(), teacher.clone()))
        return kd_loss(student, teacher, t)

    monkeypatch.setattr(feddat, "kd_loss", recording_kd)
    method = FedDAT(FedDATConfig(local_steps=1))
    base = spy_client(method, ("local", "frozen"), {})
    client = SteppingClient(base.model, base.adapter, base.batches)
    ctx = RoundContext(0, load_scenario("smoke"), 0, (0,), {0: ClientInfo(0, "toy", ("t",))})
    method.client_update(ctx, client, SimpleNamespace(arrays={}))
    (global_out, _), (_, personal_teacher) = seen
    with torch.no_grad(), mixed(client.model, {"default": 1.0}):
        after = answer_logits(client.model(input_ids=IDS).logits, labels)
    assert torch.equal(personal_teacher, global_out)  # A_g's own training pass, before its step
    assert not torch.allclose(personal_teacher, after)  # not a fresh pass after it


def test_fedsim_defaults_to_the_papers_one_network_with_fedmosaics_variant_available() -> None:
    from drake.config import build_config

    cls = METHODS.get("fedsim")
    layer = cls()
    assert (layer.config.combine, layer.config.local_steps, layer.compute_cost()) == ("layer", 20, 1.0)
    peft_model = toy_peft()
    assert layer.wrap(peft_model) is peft_model  # one pass, both adapters active in every layer
    fedmosaic = cls(build_config(cls.config_cls, {"combine": "logits", "local_steps": 15}, where="fedsim"))
    assert fedmosaic.compute_cost() == 2.0 and fedmosaic.compute_ratio_to_local() == pytest.approx(1.5)
    assert fedmosaic.wrap(toy_peft()).branches == [{"default": 1.0}, {"local": 1.0}]


def test_perada_gives_both_adapters_every_row_and_ditto_splits_them() -> None:
    """Ditto's global and personal solvers draw their own rows (a batch's halves); PerAda's adapters both
    see every row, as the official PerAda and FedMosaic codes train them."""
    ctx = RoundContext(0, load_scenario("smoke"), 0, (0,), {0: ClientInfo(0, "toy", ("t",))})
    for name, rows in (("ditto", ([0, 2, 4, 6], [8, 10, 12, 14], [1, 3, 5, 7], [9, 11, 13, 15])),
                       ("perada", (list(range(8)), list(range(8, 16))) * 2)):  # fmt: skip
        method = METHODS.get(name)(METHODS.get(name).config_cls(local_steps=2))
        client = spy_client(method, ("local",), {})
        update = method.client_update(ctx, client, SimpleNamespace(arrays={}))
        phases = [(phase_of(names), r) for names, r in client.calls]
        assert phases == [("default", rows[0]), ("default", rows[1]), ("local", rows[2]), ("local", rows[3])]
        assert update.metrics["examples"] == 16.0  # distinct rows; PerAda's second pass is in compute_cost
    perada = METHODS.get("perada")()
    assert (perada.config.batch_size, perada.compute_cost(), perada.compute_ratio_to_local()) == (8, 2.0, 1.0)


def test_perada_defaults_equal_the_official_code() -> None:
    """Official PerAda: lmbda ||v - w||^2 with lmbda = 1 (our (lam/2)||v - w||^2 with lam = 2), KD at T = 1.
    Ditto keeps its published lambda."""
    cfg = METHODS.get("perada")().config
    assert (cfg.lam, cfg.kd_temperature) == (2.0, 1.0)
    assert METHODS.get("ditto")().config.lam == 0.1
    v = {"m.lora_A.local.weight": nn.Parameter(torch.tensor([1.0, -2.0]))}
    w = {"m.lora_A.default.weight": torch.tensor([0.5, 0.0])}
    ours = prox_to_other_adapter(v, w, cfg.lam, "local", "default")(None)
    official = 1.0 * ((v["m.lora_A.local.weight"] - w["m.lora_A.default.weight"]) ** 2).sum()
    assert torch.allclose(ours, official)


# -------------------------------------------------------------------------------- with a model


def test_fedsim_greedy_generation_matches_hf_generate(untrained_models: dict[str, Path]) -> None:
    from drake.models.batching import collate
    from drake.models.loading import load_model

    loaded = load_model(untrained_models["tiny-llama-s"], device="cpu", progress=False)
    method = METHODS.get("fedsim")()
    model, _ = method.attach(loaded.model, "tiny-llama-s")
    rows = [{"images": [], "prompt": "What color is it ? Your answer is :", "answer": "red"},
            {"images": [], "prompt": "Is it big ? Your answer is :", "answer": "no"}]  # fmt: skip
    batch = collate(loaded.processor, rows, with_answer=False, padding_side="left")
    tok = loaded.tokenizer
    kw = {"max_new_tokens": 4, "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id, "do_sample": False}
    model.branches = [{"default": 1.0}]  # one branch: our greedy loop must equal HF's greedy decoding
    mine = model.generate(**batch, **kw)
    model.branches = None
    theirs = model.generate(**batch, **kw)
    n, k = batch["input_ids"].shape[1], min(mine.shape[1], theirs.shape[1])
    assert k > n and mine[:, n:k].tolist() == theirs[:, n:k].tolist()


def _args(scenario: Path, out: Path, method: str, extra: Sequence[str] = ()) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_run_arguments(p)
    return p.parse_args(
        ["--scenario", str(scenario), "--out", str(out), *FAST, "--method", method, *EXTRA.get(method, []), *extra]
    )


def _strip_timing(record: dict) -> dict:
    r = json.loads(json.dumps(record))
    r.pop("wall_seconds")
    r["extra"].pop("wall_by_phase")
    return r


def _run(scenario: Path, out: Path, method: str, spy: bool = False, extra: Sequence[str] = ()) -> tuple[dict, list]:
    plan = plan_from_args(_args(scenario, out, method, extra))
    engine, m = make_engine(plan, 0, None)
    sent: list = []
    if spy:
        original = m.client_update

        def watch(ctx, client, payload):
            u = original(ctx, client, payload)
            sent.append((u, set(client.adapter.names("local")), set(client.adapter.names("shared"))))
            return u

        m.client_update = watch  # type: ignore[method-assign]
    raw = engine.run(m, plan.scenario, seed=0)
    return seed_record(0, plan.scenario, raw, wall_seconds=0.0), sent


@pytest.fixture
def last_round_eval(tiny_scenario: Path) -> Path:
    """The hetero tiny scenario (llama-s, qwen-s, llama-s) evaluated after round 2 only (half the eval time)
    under the server-global protocol; the official protocol keeps its own rounds (1, 2)."""
    text = tiny_scenario.read_text()
    assert "eval_rounds: [1, 2]" in text
    tiny_scenario.write_text(text.replace("eval_rounds: [1, 2]", "eval_rounds: [2]"))
    return tiny_scenario


@pytest.mark.parametrize("method", PFL)
def test_two_round_smoke_on_hetero_models(method: str, last_round_eval: Path, tmp_path: Path) -> None:
    record, sent = _run(last_round_eval, tmp_path / "a", method, spy=True)
    assert len(sent) == 2 * 3
    for u, local, shared in sent:
        assert set(u.arrays) == shared, "a client must send exactly its shared adapter"
        assert not (set(u.arrays) & local), "personal/local parameters left the client"
        assert all(torch.isfinite(t).all() for t in u.arrays.values())
        assert method == "fedprox" or local, "a personalized method keeps something local"
    assert set(record["rounds"][-1]["eval"]) == {"0", "1", "2"}
    # the official protocol tests each unseen task on one client: the smoke's one task on client 0
    assert set(record["final"]) == {"0", "1", "2"} and record["final"]["0"]["unseen"]
    for entry in record["rounds"]:
        for scores in entry["eval"].values():
            assert scores and all(0.0 <= v <= 1.0 for v in scores.values())
        for m in entry["train"].values():
            assert math.isfinite(m["loss"]) and m["examples"] == 2 * 4  # local_steps x batch_size
    assert record["comm_bytes"]["total_up"] > 0
    cost = METHODS.get(method)().compute_cost()
    clients = record["extra"]["compute_ratio_clients_to_local"]
    assert clients == pytest.approx(2 * 4 * cost / (20 * 8))
    # the headline counts a server's distillation on top (PerAda's KD; Method.compute_scale)
    assert (record["extra"]["compute_ratio_to_local"] > clients) == (method == "perada")
    assert record["extra"]["wall_by_phase"]["train_s_per_example"] > 0
    if method == "apfl":  # each client's learned alpha, and the global weight 1 - alpha under the gate keys
        gate = record["extra"]["diagnostics"][-1]["clients"]
        assert set(gate) == {"0", "1", "2"}
        assert all(0.0 <= d["alpha"] <= 1.0 and d["beta_own"] == d["beta_others"] == 1.0 - d["alpha"] for d in gate.values())
    if method == "feddpa":  # its instance-wise global weight on own vs others' prompts, read while scoring
        gate = record["extra"]["diagnostics"][-1]["clients"]
        assert set(gate) == {"0", "1", "2"}
        assert all(-0.5 <= d[k] <= 0.5 for d in gate.values() for k in ("beta_own", "beta_others"))
    again, _ = _run(last_round_eval, tmp_path / "b", method)
    assert _strip_timing(record) == _strip_timing(again), "same seed, different numbers"


@pytest.mark.parametrize("method", ["fedsim", "feddpa"])
def test_branch_scores_through_the_engine_change_no_score(method: str, last_round_eval: Path, tmp_path: Path) -> None:
    """``engine.diagnostic_passes`` adds Others per branch at the last Others round and nothing else (FedDPA:
    its instance-wise mix is set aside for the passes and back for what follows)."""
    plain, _ = _run(last_round_eval, tmp_path / "a", method)
    full, _ = _run(last_round_eval, tmp_path / "b", method, extra=["--set", "engine.diagnostic_passes=true"])
    assert [e["eval"] for e in full["rounds"]] == [e["eval"] for e in plain["rounds"]]
    assert plain["final"] == full["final"]
    last = full["extra"]["diagnostics"][-1]["clients"]
    assert set(last) == {"0", "1", "2"}
    for d in last.values():
        assert set(d["others_by_branch"]) == {"global", "local"}
        assert all(0.0 <= v <= 1.0 for v in d["others_by_branch"].values())
    quiet = plain["extra"].get("diagnostics") or [{"clients": {}}]
    for c, d in quiet[-1]["clients"].items():
        assert "others_by_branch" not in d and d["beta_own"] == last[c]["beta_own"]
    assert bool(quiet[-1]["clients"]) == (method == "feddpa")
