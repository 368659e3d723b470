"""Methods with a shared adapter and personal ones on one model (Ditto, PerAda, APFL, FedDAT, FedDPA, FedSim):
the base class that attaches the adapters and averages the shared one, access to one adapter's parameters
and to the model's adapter mix, and the batching of dual updates.

Compute matching (FedMosaic README, Sec. A.8): the paper's table gives iterations/round x batch for equal
FLOPs (SFT/FedAvg/FedDPA 100x4, FedSim 75x4, Ditto/PerAda 50x8, FedDAT 43x8). Our ``local``/``fedavg``
budget is 20 x 8, so a row maps to round(iterations x 20/100) x (batch x 2); ``compute_cost`` counts the
forward+backward passes per example relative to plain LoRA SFT.

Dual updates (one step of the shared adapter and one of a personal one per batch): the FedMosaic code runs
its lora1 step and its lora2 step on the same micro-batch inputs (federated_methods/perada.py and
feddat.py: ``training_step(model, inputs, ..., update_adapter="lora1")`` then ``"lora2"`` on the same
``inputs``), so each sample is seen by both adapters (50 iterations x 4 samples x 2 passes = SFT's 400).
Here APFL (its Algorithm 1 takes the w, v and alpha gradients on the same sample) and FedDAT (mutual
distillation between the two adapters on the same inputs) do that with ``alternate(..., same_rows=True)``,
and PerAda (whose own code trains both models over the same loader) with Ditto's update and
``same_rows``: 8-row batches, ``compute_cost`` counting both passes. Ditto gives the global step a batch's
even rows and the personal step its odd rows (``split_halves``): its paper draws independent minibatches
for its global and personal solvers, which disjoint halves of a 16-row batch reproduce at the same compute
(each adapter 10 steps of 8 examples).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, ClassVar

import torch
from torch import nn

from baselines.fedavg import average_per_architecture
from drake.adapters.handle import AdapterHandle, AdapterSpec
from drake.adapters.lora import apply_lora
from drake.adapters.mix import peft_of
from drake.adapters.multi import DEFAULT, Mix, add_lora_adapters, mixed, rename_adapter, set_mix
from drake.fl.client import ClientRuntime, Row
from drake.fl.method import C, Method, ServerState, others_under
from drake.fl.types import Arrays, ClientUpdate, RoundContext

Params = dict[str, nn.Parameter]


class SharedAdapterMethod(Method[C]):
    """A method whose ``default`` LoRA adapter is the shared global and whose other adapters
    (``extra_adapters``) never leave the client. The server averages the shared adapter as FedAvg does,
    weighted by examples, within each architecture only (no parameter averaging across backbones)."""

    extra_adapters: ClassVar[tuple[str, ...]] = ()
    #: adapters initialised as copies of the global at attach time (e.g. Ditto's v^0 = w^0)
    copy_global_into: ClassVar[tuple[str, ...]] = ()
    #: extra client-local trainable parameters registered on the model: name -> initial value
    extra_params: ClassVar[Mapping[str, float]] = {}
    #: adapters the server's global is loaded into under a ``server`` protocol (``load_server_model``)
    server_model_into: ClassVar[tuple[str, ...]] = (DEFAULT,)
    #: the scored model's parts, each scored alone on Others at the last Others round when diagnostics may
    #: cost passes (FedMosaic's keys: ``global`` and ``local``)
    branches: ClassVar[Mapping[str, Mix]] = {}

    def adapter_spec(self) -> AdapterSpec:
        local = tuple(f"*.{a}.*" for a in self.extra_adapters) + tuple(self.extra_params)
        return AdapterSpec(
            kind="lora", params={"r": self.config.lora_r}, shared=(f"*.{DEFAULT}.*",), local=local
        )

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

    def aggregate(
        self, ctx: RoundContext, server: ServerState, updates: Sequence[ClientUpdate]
    ) -> ServerState:
        return average_per_architecture(ctx, server, updates)

    def diagnostics(
        self, ctx: RoundContext, client: ClientRuntime, own: Sequence[str], others: Sequence[str], *, final: bool,
        limit: int | None, watch: Any = None, passes: bool = False,
    ) -> dict[str, Any] | None:
        """With ``passes``, at the last Others round: Others with each of ``branches`` alone."""
        if not (final and passes and others and self.branches):
            return None
        return {"others_by_branch": others_by_mix(client, others, self.branches, limit)}


# --------------------------------------------------------------------------------- adapters on a client


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


def set_model_mix(client: ClientRuntime, mix: Mix) -> None:
    """Set the adapter mix of the client's model (through a MixModel wrapper if there is one)."""
    set_mix(peft_of(client.model), mix)


def model_mix(client: ClientRuntime, mix: Mix):
    """Context manager: run a block with the client's model under ``mix``."""
    return mixed(peft_of(client.model), mix)


def others_by_mix(client: ClientRuntime, others: Sequence[str], mixes: Mapping[str, Mix], limit: int | None) -> dict[str, float]:
    """The client's mean Others score under each named adapter mix (e.g. one adapter alone), on the rows Others
    is scored on (``limit`` per task): one more Others pass per mix, for diagnostics with ``passes``."""
    return others_under(client, others, {name: partial(model_mix, client, mix) for name, mix in mixes.items()}, limit)


# ---------------------------------------------------------------------------------------- dual updates


def split_halves(batches: Sequence[Sequence[Row]]) -> tuple[list[list[Row]], list[list[Row]]]:
    """Each batch's even rows for the first adapter step and odd rows for the second (equal compute): Ditto's
    client update, its paper drawing independent minibatches for its two solvers."""
    first = [list(b[0::2]) for b in batches if b[0::2]]
    second = [list(b[1::2]) for b in batches if b[1::2]]
    return first, second


def merge_metrics(parts: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Mean loss (weighted by steps), total steps and examples over several ``train`` calls."""
    steps = sum(p.get("steps", 0.0) for p in parts)
    loss = (
        sum(p["loss"] * p.get("steps", 0.0) for p in parts if p.get("steps")) / steps
        if steps
        else float("nan")
    )
    return {
        "loss": float(loss),
        "steps": float(steps),
        "examples": float(sum(p.get("examples", 0.0) for p in parts)),
    }


def alternate(
    client: ClientRuntime,
    batches: Sequence[Sequence[Row]],
    phases: Sequence[dict[str, Any]],
    *,
    same_rows: bool = False,
) -> dict[str, float]:
    """Per batch, one optimizer step per phase, in the order of ``phases``.

    ``same_rows=False``: phase i of n trains on rows i, i+n, ... of the batch (disjoint slices, as
    ``split_halves``). ``same_rows=True``: every phase trains on the whole batch (the FedMosaic code's
    dual-adapter loop; APFL's and FedDAT's papers). Each phase is a dict of ``ClientRuntime.train`` keyword
    arguments (params, loss_fn, extra_loss, lr_groups, on_step); the runtime keeps each parameter set's
    optimizer state, so interleaving steps is the same as running the phases' optimizers side by side.
    The metrics' ``examples`` counts distinct rows (the batches' sizes), not row passes: the extra passes of
    ``same_rows`` are in the method's ``compute_cost``.
    """
    n = len(phases)
    parts = []
    for batch in batches:
        for i, phase in enumerate(phases):
            rows = list(batch) if same_rows else list(batch[i::n])
            if rows:
                parts.append(client.train(1, batches=[rows], **phase))
    merged = merge_metrics(parts)
    merged["examples"] = float(sum(len(b) for b in batches))
    return merged
