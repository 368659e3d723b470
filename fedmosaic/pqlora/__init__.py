"""PQ-LoRA (Co-LoRA) in peft's shape: ``config.py`` (PQLoraConfig), ``layer.py`` (Linear), ``model.py`` (PQLoraModel).

Parameters are prefixed ``pqlora_`` so states can be filtered by name; the adapter is registered in DRAKE's
own registries (the peft ``PeftType`` enum cannot be extended from outside).
"""

from __future__ import annotations

from fedmosaic.pqlora.config import PQLoraConfig
from fedmosaic.pqlora.layer import GateContext, Linear, PQLoraLayer, orthonormal
from fedmosaic.pqlora.model import PQLoraModel, block_layers, get_target_layers, inject_pqlora

__all__ = [
    "GateContext",
    "Linear",
    "PQLoraConfig",
    "PQLoraLayer",
    "PQLoraModel",
    "block_layers",
    "get_target_layers",
    "inject_pqlora",
    "orthonormal",
]
