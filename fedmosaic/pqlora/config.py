"""PQLoraConfig: the settings of a PQ-LoRA (Co-LoRA) adapter, in peft's config shape (dataclass + help).

PQ-LoRA (Seo et al., "Not All Clients Are Equal" / "Co-LoRA", arXiv 2506.11024) freezes LoRA's A and B with
orthonormal rows/columns and trains only a dimension-invariant P (r x r) and Q (r), so P and Q have the same
shape in every architecture and can be averaged across architectures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from drake.errors import SpecError
from drake.models.loading import TEXT_LINEAR

GATES = ("sample", "scalar")
GATE_TOKENS = ("prompt", "all")


@dataclass(frozen=True)
class PQLoraConfig:
    """Settings of PQ-LoRA + dual (global/local) adapters with a gate.

    The paper uses r=128, alpha=256 on 1B-8B models (hidden 2048-4096); the defaults here are the tiny-zoo
    scale (r/hidden about 1/16, alpha/r = 2 as in the paper). ``r`` must not exceed the in/out width of any
    PQ module (the tiny Qwen members' k/v projections are 32 wide).
    """

    prefix: ClassVar[str] = "pqlora_"

    r: int = field(default=8, metadata={"help": "rank (P is r x r, Q has r entries)"})
    lora_alpha: int = field(default=16, metadata={"help": "scaling = lora_alpha / r"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the adapter input"})
    target_modules: tuple[str, ...] = field(default=TEXT_LINEAR, metadata={"help": "text-model linear layers"})
    num_blocks: int = field(default=4, metadata={"help": "equal-depth blocks; PQ sits on each block's last layer"})
    use_pq: bool = field(default=True, metadata={"help": "False: dual LoRA on every layer (no PQ layers)"})
    gate: str = field(default="sample", metadata={"help": "sample: beta(h) per sample (official); scalar: one beta"})
    gate_noise: float = field(default=0.0, metadata={"help": "per-token gate-logit noise std in training (official 0.6931)"})
    gate_tokens: str = field(default="prompt", metadata={"help": "tokens the sample gate averages: prompt (images + question) or all (the answer too, official)"})
    init_seed: int = field(default=0, metadata={"help": "seed of the frozen orthonormal A/B at PQ layers"})

    def __post_init__(self) -> None:
        if self.r <= 0 or self.num_blocks <= 0:
            raise SpecError(f"PQ-LoRA: r ({self.r}) and num_blocks ({self.num_blocks}) must be positive")
        if self.gate not in GATES:
            raise SpecError(f"PQ-LoRA: unknown gate {self.gate!r}; use one of {', '.join(GATES)}")
        if self.gate_tokens not in GATE_TOKENS:
            raise SpecError(f"PQ-LoRA: unknown gate_tokens {self.gate_tokens!r}; use one of {', '.join(GATE_TOKENS)}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise SpecError(f"PQ-LoRA: lora_dropout must be in [0, 1), got {self.lora_dropout}")

    @property
    def scaling(self) -> float:
        return self.lora_alpha / self.r

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        return d
