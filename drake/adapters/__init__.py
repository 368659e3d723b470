"""Adapters: how trainable parameters are attached to a frozen base model and exchanged by scope."""

from drake.adapters.handle import AdapterHandle, AdapterSpec
from drake.adapters.lora import apply_lora

__all__ = ["AdapterHandle", "AdapterSpec", "apply_lora"]
