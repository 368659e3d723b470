"""Bridge to peft: attach LoRA to the *text model's* linear layers of a LLaVA-style model.

Plain module names (``q_proj``) would also hit the vision tower, so targets are a regex anchored on
``language_model`` (peft accepts a regex string for ``target_modules``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from peft import LoraConfig, get_peft_model
from torch import nn

from drake.adapters.handle import AdapterHandle, AdapterSpec
from drake.models.loading import TEXT_LINEAR as ALL_TEXT_LINEAR
from drake.models.loading import language_model_target_regex

# peft probes a transformers attribute that 5.x deprecates; the warning is noise for users of the harness. Set
# here, where peft wraps models, so every process that attaches adapters (engine workers included) has it.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyper-parameters. The paper uses r=128, alpha=256 on 1B-3B models (hidden 2048-3072); the
    tiny zoo's hidden sizes are 128-256, so the defaults keep the same alpha/r = 2 at a rank that fits."""

    r: int = field(default=8, metadata={"help": "LoRA rank"})
    alpha: int = field(default=16, metadata={"help": "LoRA alpha (scaling = alpha / r)"})
    dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    target_modules: tuple[str, ...] = field(default=ALL_TEXT_LINEAR, metadata={"help": "text-model linear layers"})


def apply_lora(model: nn.Module, settings: LoraSettings, spec: AdapterSpec | None = None) -> tuple[nn.Module, AdapterHandle]:
    """Wrap ``model`` with a LoRA adapter (base weights frozen) and return (peft model, handle)."""
    for p in model.parameters():
        p.requires_grad_(False)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=language_model_target_regex(settings.target_modules),
        bias="none",
    )
    peft_model = get_peft_model(model, config)
    return peft_model, AdapterHandle(peft_model, spec or AdapterSpec())
