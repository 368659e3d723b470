"""PQLoraModel: inject PQ-LoRA / dual-LoRA layers into a model's text layers (peft's ``BaseTuner`` shape).

Placement (official ``get_target_layers``): PQ layers are the last layer of each of ``num_blocks`` equal-depth
blocks; every other layer gets a dual (global + local) LoRA that is shared only within one architecture.
Blocks are matched across models of different depth by their index, i.e. by relative depth, so the PQ state
travels between architectures under canonical keys ``pq.<block>.<module>.<P|Q>`` (e.g.
``pq.2.mlp.down_proj.P``), while LoRA state keeps the model's own parameter names.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from drake.errors import DrakeError, SpecError
from drake.models.loading import language_model_target_regex
from drake.seeds import derive_seed
from fedmosaic.pqlora.config import PQLoraConfig
from fedmosaic.pqlora.layer import GateContext, Linear, orthonormal

_LAYER = re.compile(r"\.layers\.(\d+)\.(.+)$")
PQ_KEY = re.compile(r"^pq\.(\d+)\.(.+)\.(P|Q)$")


def block_layers(num_layers: int, num_blocks: int = 4) -> dict[int, int]:
    """Block index -> 0-based layer index hosting that block's PQ adapter (the block's last layer).

    Block k (1-based) ends at layer ``ceil(k * L / B) - 1``, which equals the official
    ``get_target_layers`` (``step = L // B``) whenever B divides L (every model of the paper: 16 -> 3,7,11,15;
    28 -> 6,13,20,27) and keeps the blocks equally deep otherwise (official L=6 gives 0,1,2,5; ours 1,2,4,5).
    With fewer layers than blocks, each layer hosts the block whose end depth is nearest to its own, and the
    other blocks are absent for that model (they are shared only among models that have them).
    """
    if num_layers <= 0:
        raise SpecError(f"PQ-LoRA: a model needs at least one layer, got {num_layers}")
    if num_layers >= num_blocks:
        return {k: math.ceil((k + 1) * num_layers / num_blocks) - 1 for k in range(num_blocks)}
    out: dict[int, int] = {}
    for layer in range(num_layers):
        depth = (layer + 1) / num_layers
        block = min(range(num_blocks), key=lambda b: (abs((b + 1) / num_blocks - depth), -b))
        out[block] = layer
    return dict(sorted(out.items()))


def get_target_layers(num_layers: int, num_blocks: int = 4) -> list[int]:
    """Sorted layer indices that carry PQ-LoRA (see ``block_layers``)."""
    return sorted(set(block_layers(num_layers, num_blocks).values()))


def locate_linears(model: nn.Module, config: PQLoraConfig) -> list[tuple[str, nn.Linear, int, str]]:
    """``(name, linear, layer index, module suffix such as "mlp.down_proj")`` of every text-model target."""
    regex = re.compile(language_model_target_regex(config.target_modules))
    out = []
    for name, module in model.named_modules():
        if regex.fullmatch(name) and isinstance(module, nn.Linear):
            m = _LAYER.search(name)
            if m:
                out.append((name, module, int(m.group(1)), m.group(2)))
    return out


def frozen_ab(config: PQLoraConfig, block: int, suffix: str, base: nn.Linear, name: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """The initial frozen (A, B) of a PQ module: orthonormal, seeded by (init_seed, block, module, shape).

    Seeding by block and shape (not by model) lets the alignment step rebuild the anchor's A/B from a bare
    copy of the anchor model.
    """
    r, d_in, d_out = config.r, base.in_features, base.out_features
    if r > min(d_in, d_out):
        raise SpecError(
            f"PQ-LoRA: rank r={r} exceeds the width of {name or suffix} ({d_in} -> {d_out}); "
            f"set lora_r <= {min(d_in, d_out)}"
        )
    gen = torch.Generator().manual_seed(derive_seed("pqlora-ab", config.init_seed, block, suffix, d_in, d_out, r))
    return orthonormal(r, d_in, gen), orthonormal(d_out, r, gen)


def _find_text_model(model: nn.Module) -> nn.Module:
    """The decoder stack whose ``forward`` receives the attention mask (``...language_model`` in LLaVA)."""
    named = [(n, m) for n, m in model.named_modules() if n.endswith("language_model") and hasattr(m, "layers")]
    if named:
        return min(named, key=lambda nm: len(nm[0]))[1]
    return model


class PQLoraModel(nn.Module):
    """A base model with PQ-LoRA injected; forwards (and ``generate``) go to the wrapped model.

    Args:
        model (`nn.Module`): the frozen base model (LLaVA-style or a text-only causal LM).
        config (`PQLoraConfig`): rank, blocks, gate, ...
        adapter_name (`str`): key of the adapter in every layer's parameter dicts.
    """

    prefix = "pqlora_"

    def __init__(self, model: nn.Module, config: PQLoraConfig, adapter_name: str = "default") -> None:
        super().__init__()
        self.model = model
        self.pq_config = config  # ``config`` stays the wrapped model's (HF code reads it)
        self.adapter_name = adapter_name
        self.context = GateContext(config.gate_tokens)
        #: scoring may run one prompt for all choices (drake.models.scoring.shares_prompt) when no layer
        #: output depends on the answer tokens: a scalar gate, or a sample gate over the prompt only
        self.prefix_causal = config.gate == "scalar" or config.gate_tokens == "prompt"
        for p in model.parameters():
            p.requires_grad_(False)
        located = locate_linears(model, config)
        if not located:
            raise DrakeError("PQ-LoRA found no text-model linear layers to adapt; check target_modules")
        self.num_layers = 1 + max(layer for _, _, layer, _ in located)
        self.blocks = block_layers(self.num_layers, config.num_blocks) if config.use_pq else {}
        self.pq_layers = {layer: block for block, layer in self.blocks.items()}
        #: canonical block key "pq.<block>.<module>" -> layer module (PQ layers only)
        self.pq_modules: dict[str, Linear] = {}
        self.layers: dict[str, Linear] = {}  # model-relative module name -> layer
        for name, base, layer, suffix in located:
            use_pq = layer in self.pq_layers
            ab = frozen_ab(config, self.pq_layers[layer], suffix, base, name) if use_pq else None
            new = Linear(
                base, adapter_name, r=config.r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                use_pq=use_pq, gate=config.gate, gate_noise=config.gate_noise, context=self.context, ab=ab,
            )  # fmt: skip
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, new)
            self.layers[name] = new
            if use_pq:
                self.pq_modules[f"pq.{self.pq_layers[layer]}.{suffix}"] = new
        self._hook = _find_text_model(model).register_forward_pre_hook(self._capture_mask, with_kwargs=True)

    # ---- plumbing --------------------------------------------------------------------------------
    def _capture_mask(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        self.context.set_mask(kwargs.get("attention_mask"))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.context.labels = kwargs.get("labels")  # the answer tokens, left out of a prompt gate
        try:
            return self.model(*args, **kwargs)
        finally:
            self.context.labels = None

    @contextmanager
    def prompt_tokens(self, mask: torch.Tensor) -> Iterator[None]:
        """Forwards inside see ``mask`` (B, T; 1 = prompt token) as the tokens the gate averages: how a scorer
        that packs several answers after one prompt (or pads pairs) tells the gate where the prompt is."""
        self.context.prompt = mask
        try:
            yield
        finally:
            self.context.prompt = None

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        return self.model.generate(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "model":
                raise
            return getattr(self.model, name)

    # ---- parameter names -------------------------------------------------------------------------
    def _pname(self, module_name: str, dict_name: str) -> str:
        return f"model.{module_name}.{dict_name}.{self.adapter_name}"

    def trainable_names(self) -> list[str]:
        """Local P/Q at PQ layers, local A/B at LoRA layers, every gate (the client trains these)."""
        out = []
        for name, layer in self.layers.items():
            dicts = ("pqlora_P", "pqlora_Q") if layer.use_pq else ("pqlora_A", "pqlora_B")
            out += [self._pname(name, d) for d in (*dicts, "pqlora_gate")]
        return out

    def lora_names(self) -> list[str]:
        """Parameter names of the local LoRA A/B at non-PQ layers (shared within an architecture)."""
        return [self._pname(n, d) for n, layer in self.layers.items() if not layer.use_pq for d in ("pqlora_A", "pqlora_B")]

    @staticmethod
    def global_name(local_name: str) -> str:
        """The frozen global slot that mirrors a local parameter name."""
        return re.sub(r"\.pqlora_(A|B|P|Q)\.", r".pqlora_global_\1.", local_name)

    # ---- state exchange --------------------------------------------------------------------------
    def pq_state(self, branch: str = "local") -> dict[str, torch.Tensor]:
        """Canonical ``pq.<block>.<module>.<P|Q>`` -> detached CPU copy (same shapes in every architecture)."""
        a, out = self.adapter_name, {}
        for key, layer in self.pq_modules.items():
            p = layer.pqlora_P[a] if branch == "local" else layer.pqlora_global_P[a]
            q = layer.pqlora_Q[a] if branch == "local" else layer.pqlora_global_Q[a]
            out[f"{key}.P"] = p.detach().to("cpu", copy=True)
            out[f"{key}.Q"] = q.detach().to("cpu", copy=True)
        return out

    @torch.no_grad()
    def load_pq_state(self, state: Mapping[str, torch.Tensor], branch: str = "global") -> int:
        """Copy canonical PQ tensors in; blocks this model lacks are skipped. Returns tensors loaded."""
        a, n = self.adapter_name, 0
        for key, value in state.items():
            m = PQ_KEY.match(key)
            if m is None:
                raise DrakeError(f"PQ-LoRA: {key!r} is not a canonical PQ key (pq.<block>.<module>.<P|Q>)")
            layer = self.pq_modules.get(f"pq.{m.group(1)}.{m.group(2)}")
            if layer is None:
                continue
            pre = "pqlora_" if branch == "local" else "pqlora_global_"
            target = getattr(layer, pre + m.group(3))[a]
            if target.shape != value.shape:
                raise DrakeError(f"PQ-LoRA: {key!r} has shape {tuple(value.shape)}, expected {tuple(target.shape)}")
            target.copy_(value.to(device=target.device, dtype=target.dtype))
            n += 1
        return n

    def lora_state(self, branch: str = "local") -> dict[str, torch.Tensor]:
        """Non-PQ LoRA A/B under their *local* parameter names (branch picks the local or global slot)."""
        params = dict(self.named_parameters())
        names = self.lora_names()
        return {n: params[n if branch == "local" else self.global_name(n)].detach().to("cpu", copy=True) for n in names}

    @torch.no_grad()
    def load_lora_state(self, state: Mapping[str, torch.Tensor], branch: str = "global") -> None:
        """Copy LoRA tensors (keyed by local names) into the local or global slot; unknown keys raise."""
        params = dict(self.named_parameters())
        known = set(self.lora_names())
        for name, value in state.items():
            if name not in known:
                raise DrakeError(f"PQ-LoRA: {name!r} is not a LoRA parameter of this model")
            target = params[name if branch == "local" else self.global_name(name)]
            if target.shape != value.shape:
                raise DrakeError(f"PQ-LoRA: {name!r} has shape {tuple(value.shape)}, expected {tuple(target.shape)}")
            target.copy_(value.to(device=target.device, dtype=target.dtype))

    def global_state(self) -> dict[str, torch.Tensor]:
        """The whole frozen global slot (PQ canonical + LoRA local names): what a client evaluates with."""
        return {**self.pq_state("global"), **self.lora_state("global")}

    def load_global(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load a payload: ``pq.*`` keys go to the PQ global slots, the rest to the LoRA global slots."""
        self.load_pq_state({k: v for k, v in state.items() if k.startswith("pq.")}, branch="global")
        self.load_lora_state({k: v for k, v in state.items() if not k.startswith("pq.")}, branch="global")

    def copy_local_to_global(self) -> None:
        """G := L (the official round-0 global, and the fallback for parts nobody else shares)."""
        self.load_global({**self.pq_state("local"), **self.lora_state("local")})

    def ab_state(self) -> dict[str, torch.Tensor]:
        """Frozen A/B of the PQ layers under canonical keys ``pq.<block>.<module>.<A|B>``."""
        a = self.adapter_name
        out = {}
        for key, layer in self.pq_modules.items():
            out[f"{key}.A"] = layer.pqlora_A[a].detach().to("cpu", copy=True)
            out[f"{key}.B"] = layer.pqlora_B[a].detach().to("cpu", copy=True)
        return out

    @torch.no_grad()
    def load_ab_state(self, state: Mapping[str, torch.Tensor]) -> None:
        a = self.adapter_name
        for key, value in state.items():
            base, _, which = key.rpartition(".")
            layer = self.pq_modules.get(base)
            if layer is None or which not in ("A", "B"):
                raise DrakeError(f"PQ-LoRA: {key!r} names no frozen A/B of this model")
            target = getattr(layer, f"pqlora_{which}")[a]
            if target.shape != value.shape:
                raise DrakeError(f"PQ-LoRA: {key!r} has shape {tuple(value.shape)}, expected {tuple(target.shape)}")
            target.copy_(value.to(device=target.device, dtype=target.dtype))

    # ---- modes -----------------------------------------------------------------------------------
    @contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Run the bare base model (peft's name for the same context manager)."""
        prev = {n: layer.disable_adapters for n, layer in self.layers.items()}
        for layer in self.layers.values():
            layer.disable_adapters = True
        try:
            yield
        finally:
            for n, layer in self.layers.items():
                layer.disable_adapters = prev[n]

    @contextmanager
    def force_beta(self, beta: float) -> Iterator[None]:
        """Fix the gate: 1 = global branch only, 0 = local branch only."""
        for layer in self.layers.values():
            layer.force_beta = beta
        try:
            yield
        finally:
            for layer in self.layers.values():
                layer.force_beta = None


def inject_pqlora(model: nn.Module, config: PQLoraConfig, adapter_name: str = "default") -> PQLoraModel:
    """Freeze ``model``, inject PQ-LoRA into its text layers, and return the wrapper."""
    return PQLoraModel(model, config, adapter_name)
