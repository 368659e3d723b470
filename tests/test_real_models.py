"""Real-model support, checked on CPU: the *-real scenarios, bf16 on CUDA, gradient checkpointing through
peft adapters (same loss and gradients, activations really recomputed) and the memory-fitted micro-batch
(its search against a fake out-of-memory error, and how the engine applies it)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from drake.config import build_config
from drake.data.synth.public import public_context, public_sample
from drake.errors import DrakeError, SpecError
from drake.fl import memory
from drake.fl.client import ArchModel, ClientState, TaskRows
from drake.fl.engine import SequentialEngine
from drake.fl.memory import fit_micro_batches
from drake.fl.settings import EngineSettings
from drake.method_registry import METHODS
from drake.models.batching import collate
from drake.models.loading import (
    default_dtype,
    enable_gradient_checkpointing,
    fit_grad_accum,
    is_oom,
    load_model,
    text_model,
)
from drake.models.zoo import ZOO
from drake.spec import load_scenario


def _rows(n: int, start: int = 0) -> list[dict]:
    out = []
    for i in range(start, start + n):
        s = public_sample(public_context("train", i))
        out.append({"images": s.images, "prompt": s.prompt, "choices": s.choices, "answer": s.answer})
    return out


def _arch(folder: Path, method_name: str = "fedavg") -> tuple[ArchModel, object]:
    loaded = load_model(folder, device="cpu", progress=False)
    method = METHODS.get(method_name)()
    torch.manual_seed(0)
    model, handle = method.attach(loaded.model, str(folder))
    return ArchModel(str(folder), loaded, model, handle), method


# ------------------------------------------------------------------------------------------ scenarios


@pytest.mark.parametrize(("real", "synth"), [("drake-dynamic-real", "drake-dynamic"), ("drake-static-real", "drake-static")])
def test_real_scenarios_validate_and_mirror_the_synth_ones(real: str, synth: str, capsys) -> None:
    from drake.cli import main
    from drake.models.loading import _is_hub_id

    assert main(["validate", "--scenario", real, "--no-samples"]) == 0
    assert "ok:" in capsys.readouterr().out
    r, s = load_scenario(real), load_scenario(synth)
    assert r.source == "drake" and r.mode == s.mode and r.rounds == s.rounds and r.pool == "hetero"
    assert [c.tasks for c in r.clients] == [c.tasks for c in s.clients] and r.unseen == s.unseen
    assert set(r.pools) == {"hetero", "homo", "cross"}
    for pool, models in r.pools.items():
        assert all(m.startswith("llava-hf/") and _is_hub_id(m) and m not in ZOO for m in models), pool
    # hetero: small model on clients 0, 1, 8, 9 and one larger model elsewhere, as in the paper's default pool
    small = {r.clients[i].model for i in (0, 1, 8, 9)}
    assert len(small) == 1 and len(set(r.pools["hetero"])) == 2 and len(set(r.pools["homo"])) == 1
    assert len(set(r.pools["cross"])) == 3


def test_bf16_on_cuda_float32_on_cpu() -> None:
    assert default_dtype(torch.device("cuda")) == torch.bfloat16
    assert default_dtype(torch.device("cuda", 1)) == torch.bfloat16
    assert default_dtype(torch.device("cpu")) == torch.float32


# ------------------------------------------------------------------------------ gradient checkpointing


def test_gradient_checkpointing_same_loss_and_grads_through_lora(untrained_models: dict[str, Path]) -> None:
    arch, _ = _arch(untrained_models["tiny-llama-s"])
    model, rows = arch.model, _rows(4)
    layer = text_model(model).layers[0]
    calls = []
    # transformers checkpoints the block's forward (its own hooks stay outside); the first submodule shows
    # each run of the block's body, and a pre-hook counts runs that stop early once what backward needs is back
    layer.input_layernorm.register_forward_pre_hook(lambda *_: calls.append(1))

    def loss_and_grads() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        calls.clear()
        model.train()
        loss = model(**collate(arch.loaded, rows, with_answer=True)).loss
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        model.zero_grad(set_to_none=True)
        model.eval()
        return loss.detach(), grads

    loss_a, grads_a = loss_and_grads()
    assert calls == [1]
    text = enable_gradient_checkpointing(model)  # after peft wrapped the model, as the engine does
    assert text is text_model(arch.loaded.model)
    assert all(getattr(m, "gradient_checkpointing", True) for m in text.layers)
    vision = [m for n, m in model.named_modules() if "vision_tower" in n and hasattr(m, "gradient_checkpointing")]
    assert not any(m.gradient_checkpointing for m in vision)  # the frozen tower is left alone
    loss_b, grads_b = loss_and_grads()
    assert calls == [1, 1]  # the block ran again in backward: activations were recomputed, not stored
    assert torch.equal(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and grads_a and all("lora_" in n for n in grads_a)
    assert any(g.abs().sum() > 0 for g in grads_a.values())
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-6, atol=1e-8)


def test_engine_setting_enables_checkpointing(untrained_models: dict[str, Path]) -> None:
    arch, _ = _arch(untrained_models["tiny-qwen-s"])
    SequentialEngine({arch.name: arch}, {}, EngineSettings(gradient_checkpointing=True, progress=False))
    assert all(layer.gradient_checkpointing for layer in text_model(arch.model).layers)


# --------------------------------------------------------------------------------- micro-batch search


class FakeGPU:
    """try_micro_batch that runs out of memory above ``limit`` examples."""

    def __init__(self, limit: int) -> None:
        self.limit, self.sizes, self.freed = limit, [], 0

    def __call__(self, m: int) -> None:
        self.sizes.append(m)
        if m > self.limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {m} GiB")

    def free(self) -> None:
        self.freed += 1


@pytest.mark.parametrize("batch", range(1, 13))
def test_fit_grad_accum_finds_the_fewest_micro_batches(batch: int) -> None:
    for limit in range(1, batch + 1):
        gpu = FakeGPU(limit)
        k = fit_grad_accum(batch, gpu, on_oom=gpu.free)
        best = min(k for k in range(1, batch + 1) if -(-batch // k) <= limit)
        assert k == best, (batch, limit)
        assert len(gpu.sizes) == len(set(gpu.sizes)) <= 2 + batch.bit_length()  # no size tried twice
        assert gpu.freed == sum(m > limit for m in gpu.sizes)


def test_fit_grad_accum_edges() -> None:
    gpu = FakeGPU(64)
    assert fit_grad_accum(8, gpu) == 1 and gpu.sizes == [8]  # fits: one try, no accumulation
    with pytest.raises(DrakeError, match="even one example"):
        fit_grad_accum(8, FakeGPU(0), on_oom=None)

    def broken(m: int) -> None:
        raise ValueError("a real bug")

    with pytest.raises(ValueError, match="a real bug"):  # only out-of-memory is handled
        fit_grad_accum(8, broken)
    assert is_oom(RuntimeError("CUDA error: out of memory")) and is_oom(torch.cuda.OutOfMemoryError("x"))
    assert not is_oom(RuntimeError("shape mismatch")) and not is_oom(ValueError("out of memory"))


# ------------------------------------------------------------------------------ micro-batch in the engine


@pytest.fixture
def small_run(untrained_models: dict[str, Path], tmp_path: Path):
    folder = untrained_models["tiny-llama-s"]
    scenario = tmp_path / "one.yaml"
    scenario.write_text(
        f"name: one\ndescription: d\nmode: static\nrounds: 1\nsource: synth\npools:\n  p: [{folder}]\n"
        "clients:\n  - {id: 0, tasks: [vsr_0]}\n"
    )
    arch, method = _arch(folder)
    rows = _rows(12)
    data = {"vsr_0": TaskRows("vsr_0", "choice", "choice_accuracy", {"train": rows, "test": rows[:2]})}
    return load_scenario(scenario), arch, method, data


def _runtime_accum(engine: SequentialEngine, method, scenario) -> int:
    from drake.data.stream import ClientStream
    from drake.fl.types import ClientInfo

    c = scenario.clients[0]
    stream = ClientStream(c, scenario, {"vsr_0": 12}, 0, method.config.batch_size)
    state = ClientState(adapter=engine.archs[c.model].adapter.get_state("all"))
    return engine.work.runtime(method, ClientInfo(c.id, c.model, c.tasks), stream, state, 0, 0).grad_accum


@pytest.mark.parametrize(("value", "expected"), [("auto", "auto"), ("4", 4), ("0", 0), (3, 3)])
def test_micro_batch_setting_parses(value, expected) -> None:
    assert build_config(EngineSettings, {"micro_batch": value}, where="engine").micro_batch == expected


@pytest.mark.parametrize("value", ["fast", "-1", True])
def test_micro_batch_setting_rejects_nonsense(value) -> None:
    with pytest.raises(SpecError, match="micro_batch"):
        build_config(EngineSettings, {"micro_batch": value}, where="engine settings")


def test_micro_batch_fixed_and_auto_on_cpu(small_run) -> None:
    scenario, arch, method, data = small_run
    archs = {arch.name: arch}
    batch = method.config.batch_size  # 8
    fixed = SequentialEngine(archs, data, EngineSettings(micro_batch=3, progress=False))
    fixed.work.grad_accum = fit_micro_batches(archs, data, 3, method.config, scenario)
    assert fixed.work.grad_accum == {arch.name: -(-batch // 3)} and _runtime_accum(fixed, method, scenario) == 3
    auto = SequentialEngine(archs, data, EngineSettings(micro_batch="auto", progress=False))
    assert fit_micro_batches(archs, data, "auto", method.config, scenario) == {}  # CPU: the method's own grad_accum
    assert _runtime_accum(auto, method, scenario) == method.config.grad_accum


def test_micro_batch_auto_probes_the_largest_rows_on_cuda(small_run, monkeypatch) -> None:
    scenario, arch, method, data = small_run
    fake_cuda = dataclasses.replace(arch, loaded=dataclasses.replace(arch.loaded, device=torch.device("cuda")))
    seen: list[list[dict]] = []

    def probe(a: ArchModel, rows) -> None:
        seen.append(list(rows))
        if len(rows) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(memory, "probe", probe)
    assert memory.fit_micro_batches({arch.name: fake_cuda}, data, "auto", method.config, scenario) == {arch.name: 3}  # ceil(8 / 3) = 3 examples fit
    images = sorted((len(r["images"]) for r in data["vsr_0"].splits["train"]), reverse=True)
    assert [len(r["images"]) for r in seen[0]] == images[:8]  # worst-case rows first
    assert all(s == seen[0][: len(s)] for s in seen)


def test_probe_runs_a_training_pass_and_leaves_no_trace(small_run) -> None:
    _, arch, _, data = small_run
    before = arch.adapter.get_state("all")
    memory.probe(arch, data["vsr_0"].splits["train"][:3])
    assert not arch.model.training
    assert all(p.grad is None for p in arch.adapter.parameters("all"))
    after = arch.adapter.get_state("all")
    assert all(torch.equal(before[k], after[k]) for k in before)
