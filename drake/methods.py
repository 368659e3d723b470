"""The method registry: one lazy line per federated method (a method = one file + one line here)."""

from __future__ import annotations

from drake.registry import Registry

METHODS: Registry = Registry("method")

METHODS.register("local", "baselines.local:Local", summary="local LoRA fine-tuning only, no communication (lower bound)")
METHODS.register(
    "fedavg", "baselines.fedavg:FedAvg", summary="FedAvg/FedIT on LoRA, averaged within each architecture"
)
