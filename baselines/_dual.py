"""Methods with a shared adapter and personal ones on one model (Ditto, PerAda, APFL, FedDAT, FedDPA, FedSim):
the base class that attaches the adapters and averages the shared one, access to one adapter's parameters
and to the model's adapter mix, and the batch splitting of dual updates.

Compute matching (FedMosaic README, Sec. A.8): the paper's table gives iterations/round x batch for equal
FLOPs (SFT/FedAvg/FedDPA 100x4, FedSim 75x4, Ditto/PerAda 50x8, FedDAT 43x8). Our ``local``/``fedavg``
budget is 20 x 8, so a row maps to round(iterations x 20/100) x (batch x 2). Every personalized baseline
processes ``local_steps x batch_size`` examples per client per round; dual-update methods (Ditto, PerAda,
FedDAT, APFL) split each batch in halves, one half per adapter step, as the FedMosaic code does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from baselines.fedavg import average_per_architecture
from drake.adapters.handle import AdapterHandle, AdapterSpec
from drake.adapters.lora import apply_lora
from drake.adapters.mix import peft_of
from drake.adapters.multi import DEFAULT, Mix, add_lora_adapters, mixed, rename_adapter, set_mix
from drake.fl.client import ClientRuntime, Row
from drake.fl.method import C, Method, ServerState
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


# ---------------------------------------------------------------------------------------- dual updates


def split_halves(batches: Sequence[Sequence[Row]]) -> tuple[list[list[Row]], list[list[Row]]]:
    """Each batch's even rows for the first adapter step and odd rows for the second (equal compute)."""
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
    client: ClientRuntime, batches: Sequence[Sequence[Row]], phases: Sequence[dict[str, Any]]
) -> dict[str, float]:
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
