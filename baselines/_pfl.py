"""Pieces the personalized-FL baselines share: several adapters on one model, per-architecture FedAvg of
the shared adapter, batch splitting for dual-update methods, KD losses and a logit-mixing model wrapper.

Compute matching (FedMosaic README, Sec. A.8): the paper's table gives iterations/round x batch for equal
FLOPs (SFT/FedAvg/FedDPA 100x4, FedSim 75x4, Ditto/PerAda 50x8, FedDAT 43x8). Our ``local``/``fedavg``
budget is 20 x 8, so a row maps to round(iterations x 20/100) x (batch x 2). Every method here processes
``local_steps x batch_size`` examples per client per round; dual-update methods (Ditto, PerAda, FedDAT,
APFL) split each batch in halves, one half per adapter step, as the FedMosaic code does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from drake.adapters.handle import AdapterHandle, AdapterSpec
from drake.adapters.lora import apply_lora
from drake.adapters.multi import DEFAULT, Mix, adapter_key, add_lora_adapters, mixed, rename_adapter, set_mix
from drake.fl.client import ClientRuntime, Row
from drake.fl.method import C, Method, ServerState, group_by_architecture, weighted_mean
from drake.fl.types import Arrays, ClientUpdate, RoundContext
from drake.models.batching import IGNORE_INDEX, collate

Params = dict[str, nn.Parameter]


# ------------------------------------------------------------------------------------------ methods


class SharedAdapterMethod(Method[C]):
    """A method whose ``default`` LoRA adapter is the shared global and whose other adapters
    (``extra_adapters``) never leave the client. The server averages the shared adapter, weighted by
    examples, within each architecture only (no parameter averaging across backbones)."""

    extra_adapters: ClassVar[tuple[str, ...]] = ()
    #: adapters initialised as copies of the global at attach time (e.g. Ditto's v^0 = w^0)
    copy_global_into: ClassVar[tuple[str, ...]] = ()
    #: extra client-local trainable parameters registered on the model: name -> initial value
    extra_params: ClassVar[Mapping[str, float]] = {}
    #: adapters the server's global is loaded into under a ``server`` protocol (``load_server_model``)
    server_model_into: ClassVar[tuple[str, ...]] = (DEFAULT,)

    def adapter_spec(self) -> AdapterSpec:
        local = tuple(f"*.{a}.*" for a in self.extra_adapters) + tuple(self.extra_params)
        return AdapterSpec(kind="lora", params={"r": self.config.lora_r}, shared=(f"*.{DEFAULT}.*",), local=local)

    def attach(self, model: nn.Module, arch: str) -> tuple[nn.Module, AdapterHandle]:
        peft_model, _ = apply_lora(model, self.config.lora(), self.adapter_spec())
        add_lora_adapters(peft_model, self.extra_adapters)
        device = next(peft_model.parameters()).device
        for name, value in self.extra_params.items():
            peft_model.register_parameter(name, nn.Parameter(torch.tensor(float(value), device=device)))
        names = [n for n, _ in peft_model.named_parameters() if ".lora_" in n] + list(self.extra_params)
        handle = AdapterHandle(peft_model, self.adapter_spec(), trainable=names)
        state = handle.get_state("all")
        for dst in self.copy_global_into:
            handle.set_state(rename_adapter(state, DEFAULT, dst))
        return self.wrap(peft_model), handle

    def load_server_model(self, ctx: RoundContext, client: ClientRuntime, server: ServerState) -> None:
        load_global(client, server.per_arch.get(client.architecture, {}), into=self.server_model_into)

    def wrap(self, peft_model: nn.Module) -> nn.Module:
        """The model the runtime trains and scores (default: the peft model itself)."""
        return peft_model

    def aggregate(self, ctx: RoundContext, server: ServerState, updates: Sequence[ClientUpdate]) -> ServerState:
        for arch, group in group_by_architecture(updates, ctx.clients).items():
            server.per_arch[arch] = weighted_mean([u.arrays for u in group], [u.num_examples for u in group])
        return server


def peft_of(model: nn.Module) -> nn.Module:
    """The peft model under a ``MixModel`` wrapper (or the model itself)."""
    return model.peft if isinstance(model, MixModel) else model


def adapter_params(client: ClientRuntime, adapter: str) -> Params:
    """The named parameters of one adapter on the client's model."""
    handle = client.adapter
    return {n: p for n, p in zip(handle.names("all"), handle.parameters("all")) if f".{adapter}." in n}


def load_global(client: ClientRuntime, arrays: Arrays, into: Sequence[str] = (DEFAULT,)) -> None:
    """Load a received global (``default`` keys) into each adapter of ``into`` (e.g. FedDAT's frozen copy)."""
    if not arrays:
        return
    for dst in into:
        client.adapter.set_state(arrays if dst == DEFAULT else rename_adapter(arrays, DEFAULT, dst))


def snapshot(params: Params) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in params.items()}


def prox_term(params: Params, anchor: Mapping[str, torch.Tensor], coef: float) -> torch.Tensor:
    """(coef / 2) * sum ||p - anchor||^2 over matching names; its gradient is coef * (p - anchor)."""
    total = sum(((p - anchor[n].to(p.device)) ** 2).sum() for n, p in params.items())
    return 0.5 * coef * total  # type: ignore[return-value]


def prox_to_other_adapter(params: Params, anchor: Mapping[str, torch.Tensor], coef: float, src: str, dst: str):
    """An ``extra_loss`` for Ditto/PerAda: (coef/2) ||v - w||^2 where v = adapter ``src`` and the anchor w
    is adapter ``dst``'s snapshot (keys mapped between the two adapters)."""
    mapped = {n: anchor[adapter_key(n, src, dst)] for n in params}
    return lambda _client: prox_term(params, mapped, coef)


def split_halves(batches: Sequence[Sequence[Row]]) -> tuple[list[list[Row]], list[list[Row]]]:
    """Each batch's even rows for the first adapter step and odd rows for the second (equal compute)."""
    first = [list(b[0::2]) for b in batches if b[0::2]]
    second = [list(b[1::2]) for b in batches if b[1::2]]
    return first, second


def merge_metrics(parts: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Mean loss (weighted by steps), total steps and examples over several ``train`` calls."""
    steps = sum(p.get("steps", 0.0) for p in parts)
    loss = sum(p["loss"] * p.get("steps", 0.0) for p in parts if p.get("steps")) / steps if steps else float("nan")
    return {"loss": float(loss), "steps": float(steps), "examples": float(sum(p.get("examples", 0.0) for p in parts))}


def alternate(client: ClientRuntime, batches: Sequence[Sequence[Row]], phases: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Per batch, one optimizer step per phase (phase i trains on the i-th slice of the batch).

    Each phase is a dict of ``ClientRuntime.train`` keyword arguments (params, loss_fn, extra_loss,
    lr_groups, on_step); the runtime keeps each parameter set's optimizer state, so interleaving steps
    is the same as running the phases' optimizers side by side.
    """
    n = len(phases)
    parts = []
    for batch in batches:
        for i, phase in enumerate(phases):
            rows = list(batch[i::n])
            if rows:
                parts.append(client.train(1, batches=[rows], **phase))
    return merge_metrics(parts)


# ------------------------------------------------------------------------------------------- losses


def forward(client: ClientRuntime, rows: Sequence[Row]) -> tuple[Any, torch.Tensor]:
    """The client's model on ``rows`` with answers (training mode): (outputs, labels)."""
    inputs = collate(client.arch.loaded, rows, with_answer=True)
    return client.model(**inputs), inputs["labels"]


def answer_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The logits that predict answer tokens, flattened to (n_answer_tokens, vocab), row-major."""
    mask = labels[:, 1:] != IGNORE_INDEX
    return logits[:, :-1][mask]


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)), averaged over positions (Hinton et al.)."""
    t = temperature
    log_p_s = F.log_softmax(student.float() / t, dim=-1)
    log_p_t = F.log_softmax(teacher.float() / t, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)
    return kl.mean() * t * t if kl.numel() else student.sum() * 0.0


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over non-ignored labels (what HF's causal LM loss computes)."""
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten().to(logits.device), ignore_index=IGNORE_INDEX
    )


# ------------------------------------------------------------------------------------------ wrapper


RowMix = Callable[[torch.Tensor, torch.Tensor], "Mix | None"]


class MixModel(nn.Module):
    """A peft model whose outputs mix adapters beyond what one LoRA pass can express.

    - ``branches``: one forward pass per adapter mix, logits summed (FedSim as run by FedMosaic: a
      global-only pass plus a local-only pass); the loss is next-token CE on the summed logits.
    - ``row_mix(input_ids, attention_mask)``: a per-row mix (weights shaped (batch, 1, 1)) applied to
      the pass when there are no branches (FedDPA's instance-wise weights at inference); returning
      ``None`` keeps the current mix.

    With neither set it is the peft model. ``generate`` is greedy (what the harness scores with).
    """

    def __init__(self, peft_model: nn.Module) -> None:
        super().__init__()
        self.peft = peft_model
        self.branches: list[dict[str, float]] | None = None
        self.row_mix: RowMix | None = None

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs: Any) -> Any:
        if not self.branches:
            mix = self.row_mix(input_ids, attention_mask) if self.row_mix is not None else None
            with mixed(self.peft, mix) if mix else nullcontext():
                return self.peft(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
        logits = None
        for branch in self.branches:
            with mixed(self.peft, branch):
                out = self.peft(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            logits = out.logits if logits is None else logits + out.logits
        from transformers.modeling_outputs import CausalLMOutputWithPast

        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    @torch.no_grad()
    def generate(self, input_ids, attention_mask, max_new_tokens: int = 8, pad_token_id=None, eos_token_id=None,
                 do_sample: bool = False, **kwargs: Any) -> torch.Tensor:
        """Greedy decoding without a cache (the few answer tokens of the benchmark's open tasks)."""
        if not self.branches:
            mix = self.row_mix(input_ids, attention_mask) if self.row_mix is not None else None
            with mixed(self.peft, mix) if mix else nullcontext():
                return self.peft.generate(input_ids=input_ids, attention_mask=attention_mask,
                                          max_new_tokens=max_new_tokens, pad_token_id=pad_token_id,
                                          eos_token_id=eos_token_id, do_sample=do_sample, **kwargs)
        from drake.models.scoring import position_ids

        ids, mask = input_ids, attention_mask
        pad = pad_token_id if pad_token_id is not None else 0
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        for _ in range(max_new_tokens):
            out = self(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), logits_to_keep=1,
                       use_cache=False, **kwargs)
            nxt = out.logits[:, -1].argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            mask = torch.cat([mask, (~done).to(mask.dtype)[:, None]], dim=1)
            if eos_token_id is not None:
                done |= nxt == eos_token_id
            if bool(done.all()):
                break
        return ids


def set_model_mix(client: ClientRuntime, mix: Mix) -> None:
    """Set the adapter mix of the client's model (through a MixModel wrapper if there is one)."""
    set_mix(peft_of(client.model), mix)


def model_mix(client: ClientRuntime, mix: Mix):
    """Context manager: run a block with the client's model under ``mix``."""
    return mixed(peft_of(client.model), mix)


# ------------------------------------------------------------------------------------- FedPer/FedRep


def top_block_patterns(model: nn.Module, personal_layers: int) -> tuple[str, ...]:
    """fnmatch patterns for the LoRA of the text model's top ``personal_layers`` blocks."""
    config = getattr(model, "config", None)
    text = getattr(config, "text_config", config)
    n = int(getattr(text, "num_hidden_layers", 0))
    if n <= 0:
        raise ValueError("cannot find the text model's number of layers (config.text_config.num_hidden_layers)")
    k = max(0, min(personal_layers, n))
    return tuple(f"*.language_model.layers.{i}.*" for i in range(n - k, n))
