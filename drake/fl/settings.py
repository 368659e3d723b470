"""How the harness runs and evaluates a method: settings that are not part of the method's config
(``--set engine.key=value``; they enter the config hash, except ``progress``, ``workers``, ``diagnostics`` and ``diagnostic_passes``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from drake.errors import SpecError
from drake.protocol import DEFAULT_PROTOCOL, PROTOCOLS, Protocol


@dataclass(frozen=True)
class EngineSettings:
    """How the harness runs and evaluates (not part of a method's config)."""

    self_limit: int | None = field(default=None, metadata={"help": "test items per own task (None = all)"})
    others_limit: int | None = field(default=25, metadata={"help": "test items per other client's task"})
    unseen_limit: int | None = field(default=50, metadata={"help": "test items per unseen task"})
    eval_others: bool = field(default=True, metadata={"help": "also evaluate on other clients' tasks"})
    eval_batch_size: int = field(default=64, metadata={"help": "examples per scoring batch"})
    length_norm: bool = field(default=True, metadata={"help": "length-normalise choice log-likelihoods"})
    max_new_tokens: int = field(default=6, metadata={"help": "greedy tokens for open-ended answers"})
    offload_budget_mb: float = field(default=512.0, metadata={"help": "client states kept in RAM before disk"})
    diagnostics: bool = field(default=True, metadata={"help": "write the method's diagnostics beside the result at Others rounds (FedMosaic: its gate, read off the scoring forwards); not in the config hash: they never change a score"})
    diagnostic_passes: bool = field(default=False, metadata={"help": "also the diagnostics that need scoring passes of their own (FedMosaic and the dual-adapter methods APFL, Ditto, PerAda, FedDAT, FedDPA, FedSim: Others with each branch alone at the last Others round, two more Others passes, ~1 min of the default run); drake study turns them on; not in the config hash"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    protocol: str = field(default=DEFAULT_PROTOCOL, metadata={"help": "evaluation protocol: official (FedMosaic's: each client's post-local model, Self at 8 rounds on all its tasks, Others at 4) or server-global (see drake/protocol.py)"})
    unseen_adapt_steps: int | None = field(default=None, metadata={"help": "after the zero-shot unseen evaluation, fine-tune a copy of each client's scored model this many steps on each unseen task's train split (0 = zero-shot only; None = the protocol's)"})
    unseen_adapt_batch: int | None = field(default=None, metadata={"help": "examples per unseen-adaptation step (None = the method's batch_size)"})
    unseen_adapt_eval_every: int | None = field(default=None, metadata={"help": "score the adapted model every N steps (0 = only after the last step; None = the protocol's)"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute text-model activations in backward: less GPU memory, ~30% more compute"})
    workers: int = field(default=0, metadata={"help": "--engine processes: worker processes (0 = one per core at the run's torch threads, at most one per client)"})
    micro_batch: int | str = field(default=0, metadata={"help": "examples per forward pass: 0 = the method's grad_accum; N = at most N; auto = the largest that fits (probed on CUDA, as 0 on CPU)"})

    def __post_init__(self) -> None:
        mb = self.micro_batch
        if not (mb == "auto" or (isinstance(mb, int) and not isinstance(mb, bool) and mb >= 0)):
            raise SpecError(f"engine settings: micro_batch {mb!r}: expected auto, 0 or a positive integer")
        for name in ("unseen_adapt_steps", "unseen_adapt_eval_every", "workers"):
            if (getattr(self, name) or 0) < 0:
                raise SpecError(f"engine settings: {name} {getattr(self, name)}: expected 0 or more")
        for name in ("unseen_adapt_batch", "self_limit", "others_limit", "unseen_limit"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise SpecError(f"engine settings: {name} {getattr(self, name)}: expected 1 or more (or none: all)")
        for name in ("eval_batch_size", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise SpecError(f"engine settings: {name} {getattr(self, name)}: expected 1 or more")
        if self.offload_budget_mb < 0:
            raise SpecError(f"engine settings: offload_budget_mb {self.offload_budget_mb}: expected 0 or more")
        PROTOCOLS.get(self.protocol)  # an unknown name fails here, with suggestions

    def effective_protocol(self) -> Protocol:
        """The named protocol with this run's unseen-adaptation overrides."""
        return PROTOCOLS.get(self.protocol).with_overrides(
            unseen_steps=self.unseen_adapt_steps, unseen_eval_every=self.unseen_adapt_eval_every
        )
