"""FedMS / FedFMSL: a federated global expert trained with Sparsely Activated LoRA, then a gated mixture of
the frozen global expert and a local expert per client (stage 2)."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from baselines._dual import adapter_params
from drake.adapters.handle import AdapterHandle, AdapterSpec
from drake.adapters.lora import apply_lora
from drake.adapters.multi import DEFAULT, add_lora_adapters, lora_layers, rename_adapter, set_mix
from drake.errors import DrakeError, SpecError
from drake.fl.method import Method, MethodConfig, ServerState, group_by_architecture, weighted_mean
from drake.fl.types import Arrays, ClientInfo, ClientUpdate, Payload, RoundContext, nbytes
from drake.models.batching import IGNORE_INDEX

GLOBAL = DEFAULT  # the global expert is the peft ``default`` adapter
LOCAL = "local"
GATE = "fedms_gate"  # the gate adapter + head (a submodule of FedMSModel)
SAL_ORDERS = ("top", "bottom")
LOCAL_INITS = ("global", "fresh")
_BLOCK = re.compile(r"\.layers\.(\d+)\.")


@dataclass(frozen=True)
class FedMSConfig(MethodConfig):
    """FedMS settings. The paper's schedule, gate form and hyper-parameters were not recoverable (no code,
    body unread); every key below is our choice, documented on ``FedMS``."""

    stage1_fraction: float = field(default=0.5, metadata={"help": "stage 1 (global expert) = the first ceil(fraction x rounds) rounds; the rest is stage 2 (reference default T1 = T/2)"})
    sal_phases: int = field(default=4, metadata={"help": "SAL: stage 1 in this many equal phases; phase p trains ceil(p x L / phases) blocks (reference: L/4 blocks more every T1/4 rounds); 1 = all blocks from the start"})
    sal_order: str = field(default="top", metadata={"help": "SAL: which blocks switch on first: top (nearest the output; the backward stops at the lowest active block) or bottom"})
    local_init: str = field(default="global", metadata={"help": "stage 2 local expert starts as a copy of the global expert (global) or a fresh LoRA (fresh)"})
    gate_dim: int = field(default=16, metadata={"help": "bottleneck width of the gate adapter"})

    def __post_init__(self) -> None:
        if not 0.0 <= self.stage1_fraction <= 1.0:
            raise SpecError(f"fedms: stage1_fraction must be in [0, 1], got {self.stage1_fraction}")
        if self.sal_phases < 1 or self.gate_dim < 1:
            raise SpecError(f"fedms: sal_phases and gate_dim must be 1 or more, got {self.sal_phases}, {self.gate_dim}")
        if self.sal_order not in SAL_ORDERS:
            raise SpecError(f"fedms: unknown sal_order {self.sal_order!r}; use one of {', '.join(SAL_ORDERS)}")
        if self.local_init not in LOCAL_INITS:
            raise SpecError(f"fedms: unknown local_init {self.local_init!r}; use one of {', '.join(LOCAL_INITS)}")


# ------------------------------------------------------------------------------------------- schedule


def stage1_rounds(rounds: int, fraction: float) -> int:
    """T1: the number of stage-1 rounds (0-based rounds < T1 train the global expert)."""
    return min(rounds, math.ceil(fraction * rounds - 1e-9))


def active_blocks(num_layers: int, round_idx: int, t1: int, phases: int, order: str = "top") -> tuple[int, ...]:
    """SAL: the text blocks whose LoRA trains in stage-1 round ``round_idx`` (0-based).

    Stage 1 is cut into ``phases`` equal phases; phase p (1-based) activates ceil(p x L / phases) blocks, so
    the set only grows and the last phase has all L. After stage 1 every block is active."""
    if round_idx >= t1:
        return tuple(range(num_layers))
    phase = min(phases, round_idx * phases // t1 + 1)
    n = min(num_layers, math.ceil(phase * num_layers / phases))
    return tuple(range(num_layers - n, num_layers)) if order == "top" else tuple(range(n))


def block_of(name: str) -> int | None:
    """The text block index in a parameter or module name (``...layers.3...`` -> 3)."""
    m = _BLOCK.search(name)
    return int(m.group(1)) if m else None


def block_passes(num_layers: int, active: Sequence[int]) -> float:
    """Text-model block passes of one training step relative to all blocks active: every block runs forward
    (1 unit), the backward (2 units) runs from the top down to the lowest active block only."""
    if not active:
        return 1.0 / 3.0
    backward = num_layers - min(active)
    return (num_layers + 2 * backward) / (3 * num_layers)


# --------------------------------------------------------------------------------------------- model


class Gate(nn.Module):
    """The gate network's trainable part: a bottleneck gate adapter on the pooled prompt representation and a
    linear head. g = sigmoid(head(z + up(gelu(down(z))))), z = RMS-normalised pooled input embeddings. The up
    projection and the head start at zero: g = 0.5 and the adapter is the identity at the start."""

    def __init__(self, hidden: int, width: int) -> None:
        super().__init__()
        self.down = nn.Linear(hidden, width)
        self.up = nn.Linear(width, hidden)
        self.head = nn.Linear(hidden, 1)
        for lin in (self.up, self.head):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        z = pooled.float()
        z = z * torch.rsqrt(z.pow(2).mean(-1, keepdim=True) + 1e-6)
        z = z + self.up(F.gelu(self.down(z)))
        return torch.sigmoid(self.head(z)).squeeze(-1)


def _text_model(model: nn.Module) -> nn.Module:
    named = [(n, m) for n, m in model.named_modules() if n.endswith("language_model") and hasattr(m, "layers")]
    if not named:
        raise DrakeError("fedms: the model has no text decoder (a '...language_model' module with layers)")
    return min(named, key=lambda nm: len(nm[0]))[1]


class FedMSModel(nn.Module):
    """The peft model (adapters ``default`` = global expert, ``local`` = local expert) plus the gate.

    ``gated`` off (stage 1): the global expert alone, on the blocks ``set_blocks`` activates (the others run
    no LoRA at all). ``gated`` on (stage 2): a hook before the text decoder pools the input embeddings (image
    features + text) over the prompt tokens, runs the gate and sets the per-row mix g x global + (1 - g) x
    local on every LoRA layer. Prompt tokens: ``prompt_tokens`` (the scorer's), else the attention mask
    without the answer tokens (training), else the attention mask (generation's prefill; decode steps
    reuse the prefill's g). The gate never sees an answer, so scoring may share the prompt.
    """

    prefix_causal = True  # LoRA is token-wise and the gate pools over the prompt alone (drake.models.scoring)

    def __init__(self, peft_model: nn.Module, hidden: int, gate_dim: int) -> None:
        super().__init__()
        self.peft = peft_model
        device = next(peft_model.parameters()).device
        setattr(self, GATE, Gate(hidden, gate_dim).to(device))
        self.gated = False
        wrapped = set(lora_layers(peft_model))
        self.layer_blocks = [(m, block_of(name)) for name, m in peft_model.named_modules() if m in wrapped]
        self.num_layers = 1 + max(b for _, b in self.layer_blocks if b is not None)
        self._labels: torch.Tensor | None = None
        self._prompt: torch.Tensor | None = None
        self._g: torch.Tensor | None = None
        self._hook = _text_model(peft_model).register_forward_pre_hook(self._before_decoder, with_kwargs=True)

    @property
    def gate(self) -> Gate:
        return getattr(self, GATE)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self._labels = kwargs.get("labels")
        try:
            return self.peft(*args, **kwargs)
        finally:
            self._labels = None

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        return self.peft.generate(*args, **kwargs)

    @contextmanager
    def prompt_tokens(self, mask: torch.Tensor) -> Iterator[None]:
        """Forwards inside pool the gate over ``mask`` (B, T; True = prompt), as the scorer tells it."""
        self._prompt = mask
        try:
            yield
        finally:
            self._prompt = None

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "peft":
                raise
            return getattr(self.peft, name)

    # ---- modes -----------------------------------------------------------------------------------
    def set_blocks(self, active: Sequence[int]) -> None:
        """Stage 1: the global expert alone, LoRA switched on only in blocks ``active``."""
        self.gated = False
        set_mix(self.peft, {GLOBAL: 1.0})
        keep = set(active)
        for layer, block in self.layer_blocks:
            if block not in keep:
                layer._active_adapter = []  # peft then runs the base layer only: no LoRA compute

    def set_gated(self) -> None:
        """Stage 2: the gated mix of the global and the local expert on every block."""
        self.gated = True
        set_mix(self.peft, {GLOBAL: 0.5, LOCAL: 0.5})  # replaced by the per-row gate at every forward

    def _before_decoder(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        if not self.gated:
            return
        x = kwargs.get("inputs_embeds")
        if x is None:
            raise DrakeError("fedms: the text decoder was called without inputs_embeds; the gate needs them")
        mask = kwargs.get("attention_mask")
        mask = mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None
        if mask is not None and x.shape[1] < mask.shape[1] and self._g is not None and self._g.shape[0] == x.shape[0]:
            g = self._g  # a decode step with a KV cache: keep the prefill's gate
        else:
            g = self.gate(self._pool(x, mask))
            self._g = g.detach()
        w = g.to(x.dtype).reshape(-1, 1, 1)
        set_mix(self.peft, {GLOBAL: w, LOCAL: 1.0 - w})

    def _pool(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        weights = None
        if self._prompt is not None and self._prompt.shape == x.shape[:2]:
            weights = self._prompt
        elif mask is not None and mask.shape == x.shape[:2]:
            weights = mask.bool()
            labels = self._labels
            if labels is not None and labels.shape == mask.shape:
                weights = weights & (labels == IGNORE_INDEX).to(weights.device)
        if weights is None:
            return x.mean(1)
        w = weights.to(device=x.device, dtype=x.dtype)
        return (w.unsqueeze(-1) * x).sum(1) / w.sum(1, keepdim=True).clamp(min=1.0)


def fedms_model(client: Any) -> FedMSModel:
    model = client.model
    if not isinstance(model, FedMSModel):
        raise DrakeError("fedms: the client's model has no FedMS gate; attach it with FedMS.attach")
    return model


# -------------------------------------------------------------------------------------------- method


class FedMS(Method[FedMSConfig]):
    """FedMS (Wu, Wang, Li, Wang, "FedMS: Federated Learning with Mixture of Sparsely Activated Foundations
    Models", arXiv 2312.15926; journal version "FedFMSL", IEEE TMC 2024).

    Stage 1 (rounds 1..T1, T1 = ceil(stage1_fraction x rounds)): a global expert LoRA trained by FedAvg
    (weights n_i) within each architecture, with Sparsely Activated LoRA (SAL): in stage-1 round t only the
    blocks of ``active_blocks`` carry LoRA. Inactive blocks run no LoRA (peft layer with no active adapter),
    get no gradient and no optimizer state, and are neither uploaded nor downloaded. Stage 2 (the remaining
    rounds): the global expert G (the last stage-1 average, downloaded once) is frozen; each client trains a
    local expert L_i (never sent) and the gate, and the forward is W x + g(x) dG(x) + (1 - g(x)) dL_i(x). Only
    the gate (adapter + head) is uploaded and averaged (weights n_i) within each architecture. Scored state
    (official protocol: each client's post-local model): stage 1 the client's global expert, stage 2 the
    gated mix.

    Choices where the paper is silent (no code exists; only the abstract could be read):
    - T1 = T/2 (``stage1_fraction``). On the dynamic stream stage 1 then sees the first tasks only and the
      global expert stops learning at T1; stage 2 keeps adapting through the local expert and the gate.
    - SAL schedule (``sal_phases``, ``sal_order``): L/phases blocks more every T1/phases rounds, the top
      blocks first. Top first because the backward then stops at the lowest active block, which is where
      the compute saving comes from (bottom first saves only the LoRA weight gradients).
    - The gate (``Gate``): one scalar g per input from the input embeddings (the frozen multimodal front of the
      foundation model: projected image features + token embeddings) pooled over the prompt, through a
      bottleneck gate adapter and a linear head. This reading avoids the second backbone pass that a
      "gate foundation model with an inserted adapter" would cost; the gate never sees the answer, so the
      same gate runs in training, scoring and generation.
    - L_i starts as a copy of G (``local_init``): stage 2 starts from the stage-1 model whatever g is.
    - The optimizer's moments belong to a parameter set (``ClientRuntime.train``), so they restart when SAL
      adds blocks and when stage 2 begins.
    - Heterogeneous pools: both stages run per architecture group (no averaging across backbones).

    Savings report (``server.method_state["fedms"]``, in the result's ``extra.method``): per round the active
    blocks, bytes up/down against the same round with every block active (blocks have equal shapes, so
    bytes scale with the block count), and text-model block passes per training step (``block_passes``);
    a summary over stage 1. The result's ``compute_ratio_to_local`` is scaled by the mean block passes over
    all rounds (``compute_scale``), so the cost plot shows what SAL saves.
    """

    name = "fedms"
    config_cls = FedMSConfig

    # ---- engine side -----------------------------------------------------------------------------
    def adapter_spec(self) -> AdapterSpec:
        return AdapterSpec(kind="lora", params={"r": self.config.lora_r}, shared=(f"*.{GLOBAL}.*", f"{GATE}.*"),
                           local=(f"*.{LOCAL}.*",))  # fmt: skip

    def attach(self, model: nn.Module, arch: str) -> tuple[nn.Module, AdapterHandle]:
        config = getattr(model, "config", None)
        hidden = int((getattr(config, "text_config", None) or config).hidden_size)
        peft_model, _ = apply_lora(model, self.config.lora(), self.adapter_spec())
        add_lora_adapters(peft_model, (LOCAL,))
        wrapped = FedMSModel(peft_model, hidden, self.config.gate_dim)
        names = [n for n, _ in wrapped.named_parameters() if ".lora_" in n or n.startswith(f"{GATE}.")]
        return wrapped, AdapterHandle(wrapped, self.adapter_spec(), trainable=names)

    def t1(self, rounds: int) -> int:
        return stage1_rounds(rounds, self.config.stage1_fraction)

    def stage(self, ctx: RoundContext) -> int:
        return 1 if ctx.round < self.t1(ctx.num_rounds) else 2

    # ---- server side -----------------------------------------------------------------------------
    def init_server(self, clients: Mapping[int, ClientInfo]) -> ServerState:
        return ServerState(method_state={"fedms": {"rounds": []}, "fedms_has_global": []})

    def configure_round(self, ctx: RoundContext, server: ServerState) -> dict[int, Payload]:
        """Stage 1: the architecture's global (only blocks that were active before, a subset of this round's
        active set). Stage 2: the gate, and the frozen global expert once per client."""
        stage = self.stage(ctx)
        out = {}
        for cid in ctx.participants:
            held = server.per_arch.get(ctx.clients[cid].architecture, {})
            experts = {k: v for k, v in held.items() if not k.startswith(f"{GATE}.")}
            if stage == 1:
                out[cid] = Payload(experts, {"stage": 1})
                continue
            arrays = {k: v for k, v in held.items() if k.startswith(f"{GATE}.")}
            first = cid not in server.method_state.get("fedms_has_global", [])
            if first:
                arrays.update(experts)
            out[cid] = Payload(arrays, {"stage": 2, "global": first})
        return out

    def aggregate(self, ctx: RoundContext, server: ServerState, updates: Sequence[ClientUpdate]) -> ServerState:
        for arch, group in group_by_architecture(updates, ctx.clients).items():
            avg = weighted_mean([u.arrays for u in group], [u.num_examples for u in group])
            server.per_arch.setdefault(arch, {}).update(avg)  # stage 1: the global expert; stage 2: the gate
        if self.stage(ctx) == 2:
            have = set(server.method_state.setdefault("fedms_has_global", []))
            server.method_state["fedms_has_global"] = sorted(have | {u.client_id for u in updates})
        log = server.method_state.setdefault("fedms", {"rounds": []})
        log["stage1_rounds"] = self.t1(ctx.num_rounds)
        log["rounds"].append(self._round_log(ctx, updates))
        log["summary"] = _summary(log["rounds"])
        return server

    def compute_scale(self, server: ServerState) -> float:
        """The mean block passes per training step over the rounds (stage 1's sparse activation below 1,
        stage 2 at 1): what SAL saves on the run's training compute."""
        rounds = (server.method_state.get("fedms") or {}).get("rounds") or []
        return sum(r["block_passes"] for r in rounds) / len(rounds) if rounds else 1.0

    def _round_log(self, ctx: RoundContext, updates: Sequence[ClientUpdate]) -> dict[str, Any]:
        keys = ("sal_up_bytes", "sal_up_bytes_all", "sal_down_bytes", "sal_down_bytes_all", "train_seconds")
        entry: dict[str, Any] = {"round": ctx.round + 1, "stage": self.stage(ctx)}
        for k in keys:
            entry[k.removeprefix("sal_")] = float(sum(u.metrics.get(k, 0.0) for u in updates))
        n = max(1, len(updates))
        entry["block_passes"] = sum(u.metrics.get("sal_block_passes", 1.0) for u in updates) / n
        entry["active_fraction"] = sum(u.metrics.get("sal_active_fraction", 1.0) for u in updates) / n
        return entry

    def load_server_model(self, ctx: RoundContext, client: Any, server: ServerState) -> None:
        held = server.per_arch.get(client.architecture, {})
        if held:
            client.adapter.set_state(held)

    # ---- client side -----------------------------------------------------------------------------
    def client_update(self, ctx: RoundContext, client: Any, payload: Payload) -> ClientUpdate:
        model = fedms_model(client)
        client.adapter.set_state(payload.arrays)
        t0 = time.perf_counter()
        if self.stage(ctx) == 1:
            update = self._stage1(ctx, client, model, payload)
        else:
            update = self._stage2(ctx, client, model, payload)
        update.metrics["train_seconds"] = time.perf_counter() - t0
        for kind, size in (("up", nbytes(update.arrays)), ("down", payload.nbytes)):  # stage 2: no SAL saving
            update.metrics.setdefault(f"sal_{kind}_bytes", float(size))
            update.metrics.setdefault(f"sal_{kind}_bytes_all", float(size))
        return update

    def _stage1(self, ctx: RoundContext, client: Any, model: FedMSModel, payload: Payload) -> ClientUpdate:
        cfg, L = self.config, model.num_layers
        active = active_blocks(L, ctx.round, self.t1(ctx.num_rounds), cfg.sal_phases, cfg.sal_order)
        model.set_blocks(active)
        params = {n: p for n, p in adapter_params(client, GLOBAL).items() if block_of(n) in active}
        metrics = client.train(cfg.local_steps, params=list(params.values()))
        arrays = {n: p.detach().to("cpu", copy=True) for n, p in params.items()}
        blocks_down = {block_of(k) for k in payload.arrays}
        metrics.update({
            "sal_active_fraction": len(active) / L,
            "sal_block_passes": block_passes(L, active),
            "sal_up_bytes": float(nbytes(arrays)),
            "sal_up_bytes_all": nbytes(arrays) * L / len(active),
            "sal_down_bytes": float(payload.nbytes),
            "sal_down_bytes_all": payload.nbytes * L / len(blocks_down) if blocks_down else 0.0,
        })  # fmt: skip
        return ClientUpdate(client.id, arrays, client.num_examples, metrics)

    def _stage2(self, ctx: RoundContext, client: Any, model: FedMSModel, payload: Payload) -> ClientUpdate:
        if payload.config.get("global") and self.config.local_init == "global":  # G arrived: L_i := G
            client.adapter.set_state(rename_adapter(client.adapter.get_state("all"), GLOBAL, LOCAL))
        model.set_gated()
        gate = gate_params(client)
        params = [*adapter_params(client, LOCAL).values(), *gate.values()]
        metrics = client.train(self.config.local_steps, params=params)
        arrays = {n: p.detach().to("cpu", copy=True) for n, p in gate.items()}
        return ClientUpdate(client.id, arrays, client.num_examples, metrics)

    def select_scored_state(self, ctx: RoundContext, client: Any) -> None:
        """Stage 1: the client's global expert on the blocks it trained; stage 2: the gated mix."""
        model = fedms_model(client)
        if self.stage(ctx) == 1:
            cfg = self.config
            model.set_blocks(active_blocks(model.num_layers, ctx.round, self.t1(ctx.num_rounds), cfg.sal_phases, cfg.sal_order))
        else:
            model.set_gated()


def gate_params(client: Any) -> dict[str, nn.Parameter]:
    """The gate adapter + head parameters on the client's model (the only thing stage 2 sends)."""
    handle = client.adapter
    return {n: p for n, p in zip(handle.names("all"), handle.parameters("all")) if n.startswith(f"{GATE}.")}


def _summary(rounds: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Stage-1 totals: bytes with SAL vs every block active, and the mean block passes per step."""
    s1 = [r for r in rounds if r["stage"] == 1]
    if not s1:
        return {}
    up, up_all = sum(r["up_bytes"] for r in s1), sum(r["up_bytes_all"] for r in s1)
    down, down_all = sum(r["down_bytes"] for r in s1), sum(r["down_bytes_all"] for r in s1)
    return {
        "stage1_up_bytes": up, "stage1_up_bytes_all_blocks": up_all,
        "stage1_up_saved": 1.0 - up / up_all if up_all else 0.0,
        "stage1_down_bytes": down, "stage1_down_bytes_all_blocks": down_all,
        "stage1_down_saved": 1.0 - down / down_all if down_all else 0.0,
        "stage1_block_passes": sum(r["block_passes"] for r in s1) / len(s1),
        "stage1_lora_active_fraction": sum(r["active_fraction"] for r in s1) / len(s1),
    }  # fmt: skip


def payload_blocks(arrays: Arrays) -> set[int | None]:
    """The text blocks a payload or upload carries (tests and reports)."""
    return {block_of(k) for k in arrays}
