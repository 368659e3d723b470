"""Several named LoRA adapters on one peft model, and how their outputs are mixed.

A peft LoRA layer adds ``scaling[name] * B_name(A_name(x))`` for every *active* adapter, so a mix is the set
of active adapters plus a weight that multiplies each one's scaling. Because LoRA's update is
``delta_W = scaling * B @ A``, mixing adapter outputs with weights ``w`` is exactly mixing their weight
updates (``sum_k w_k delta_W_k``), which is what Ditto/APFL/FedDAT/FedDPA mean by combining adapters.

A weight may be a float, a 0-d tensor that requires grad (APFL's learned alpha), or a ``(batch, 1, 1)``
tensor (FedDPA's instance-wise weights, one per row of the batch). The layer state is set directly rather
than through peft's ``set_adapter``, which would also flip ``requires_grad`` and fight
``ClientRuntime.train``'s choice of what moves.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from drake.errors import DrakeError

Weight = float | torch.Tensor
Mix = Mapping[str, Weight]
DEFAULT = "default"  # peft's name for the adapter that ``apply_lora`` creates
_BASE = "_drake_base_scaling"
_MIX = "_drake_mix"


def lora_layers(model: nn.Module) -> list[LoraLayer]:
    """Every LoRA-wrapped layer of ``model`` (in module order)."""
    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def add_lora_adapters(peft_model: nn.Module, names: Sequence[str]) -> None:
    """Add adapters ``names`` with the same LoRA config as the ``default`` one, and make every adapter's
    parameters trainable (``ClientRuntime.train`` then freezes what a step must not move)."""
    config = peft_model.peft_config[DEFAULT]  # type: ignore[union-attr,index]
    for name in names:
        if name == DEFAULT or name in peft_model.peft_config:  # type: ignore[operator,union-attr]
            raise DrakeError(f"adapter {name!r} already exists; pick another adapter name")
        peft_model.add_adapter(name, copy.deepcopy(config))  # type: ignore[operator]
    for n, p in peft_model.named_parameters():
        if ".lora_" in n:
            p.requires_grad_(True)
    for layer in lora_layers(peft_model):
        layer.__dict__[_BASE] = {k: float(v) for k, v in layer.scaling.items()}
    set_mix(peft_model, {DEFAULT: 1.0})


def set_mix(model: nn.Module, mix: Mix) -> None:
    """Activate exactly the adapters in ``mix``, each with its scaling multiplied by its weight."""
    if not mix:
        raise DrakeError("an adapter mix needs at least one adapter")
    for layer in lora_layers(model):
        if _BASE not in layer.__dict__:  # first mix on a single-adapter model: record peft's scalings
            layer.__dict__[_BASE] = {k: float(v) for k, v in layer.scaling.items()}
        base = layer.__dict__[_BASE]
        unknown = [n for n in mix if n not in base]
        if unknown:
            raise DrakeError(f"unknown adapter {unknown[0]!r}; this model has {', '.join(base)}")
        for name, w in mix.items():
            layer.scaling[name] = base[name] * w
        for name in base:
            if name not in mix:
                layer.scaling[name] = base[name]
        layer._active_adapter = list(mix)
    model.__dict__[_MIX] = dict(mix)


def current_mix(model: nn.Module) -> dict[str, Weight]:
    """The mix last set by ``set_mix`` (``{"default": 1.0}`` when none was set)."""
    return dict(model.__dict__.get(_MIX, {DEFAULT: 1.0}))


@contextmanager
def mixed(model: nn.Module, mix: Mix) -> Iterator[None]:
    """Run a block under ``mix``, then restore the previous mix."""
    before = current_mix(model)
    set_mix(model, mix)
    try:
        yield
    finally:
        set_mix(model, before)


def adapter_key(name: str, src: str, dst: str) -> str:
    """The parameter name of adapter ``dst`` that sits where ``name`` (of adapter ``src``) sits."""
    token = f".{src}."
    if token not in name:
        raise DrakeError(f"parameter {name!r} does not belong to adapter {src!r}")
    return name.replace(token, f".{dst}.")


def adapter_state(state: Mapping[str, torch.Tensor], adapter: str) -> dict[str, torch.Tensor]:
    """The entries of ``state`` that belong to adapter ``adapter``."""
    return {k: v for k, v in state.items() if f".{adapter}." in k}


def rename_adapter(state: Mapping[str, torch.Tensor], src: str, dst: str) -> dict[str, torch.Tensor]:
    """Adapter ``src``'s entries of ``state``, keyed as adapter ``dst`` (e.g. load a global into a copy)."""
    return {adapter_key(k, src, dst): v for k, v in adapter_state(state, src).items()}
