"""FedPer on LoRA adapters: the top blocks' adapters are personal layers that never leave the client."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from baselines.fedavg import FedAvg
from drake.adapters.handle import AdapterHandle, AdapterSpec
from drake.adapters.lora import apply_lora
from drake.fl.method import MethodConfig


def top_block_patterns(model: nn.Module, personal_layers: int) -> tuple[str, ...]:
    """fnmatch patterns for the LoRA of the text model's top ``personal_layers`` blocks."""
    config = getattr(model, "config", None)
    text = getattr(config, "text_config", config)
    n = int(getattr(text, "num_hidden_layers", 0))
    if n <= 0:
        raise ValueError(
            "cannot find the text model's number of layers (config.text_config.num_hidden_layers)"
        )
    k = max(0, min(personal_layers, n))
    return tuple(f"*.language_model.layers.{i}.*" for i in range(n - k, n))


@dataclass(frozen=True)
class FedPerConfig(MethodConfig):
    """FedPer settings. Budget: FedAvg's row of the FedMosaic equal-compute table (100 x 4 -> 20 x 8)."""

    personal_layers: int = field(
        default=1, metadata={"help": "top text-model blocks whose LoRA stays on the client (the personal head)"}
    )


class FedPer(FedAvg):
    """FedPer (Arivazhagan et al., "Federated Learning with Personalization Layers", arXiv 1912.00818).

    Same rounds as FedAvg (inherited); only the adapter's scope differs. Update rule: each client trains its whole adapter (base + personal layers) on its data; only the base
    is uploaded and the server sets base_arch = sum_k n_k base_k / sum_k n_k within each architecture.
    The personal layers are the LoRA of the text model's top ``personal_layers`` blocks (the LoRA-on-LLM
    analogue of FedPer's top fully connected layers); they are never sent. Evaluation (drake/protocol.py):
    under the official protocol each client is scored right after its own local training, on its own
    locally trained base and personal layers; under ``--protocol server-global`` on the architecture's
    fresh average of the base with its own personal layers. Not used by the FedMosaic code.
    """

    name = "fedper"
    config_cls = FedPerConfig

    def spec_for(self, model: nn.Module) -> AdapterSpec:
        local = top_block_patterns(model, self.config.personal_layers)
        return AdapterSpec(kind="lora", params={"r": self.config.lora_r}, shared=("*",), local=local)

    def attach(self, model: nn.Module, arch: str) -> tuple[nn.Module, AdapterHandle]:
        return apply_lora(model, self.config.lora(), self.spec_for(model))
