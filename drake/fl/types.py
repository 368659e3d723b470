"""Plain data passed between the engine, a method's client half and its server half."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from drake.spec import ScenarioSpec

Arrays = dict[str, torch.Tensor]


def nbytes(arrays: Mapping[str, torch.Tensor] | None) -> int:
    """Bytes on the wire for a dict of tensors (what communication accounting counts)."""
    if not arrays:
        return 0
    return sum(t.numel() * t.element_size() for t in arrays.values())


@dataclass
class Payload:
    """What the server sends one client at the start of a round."""

    arrays: Arrays = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return nbytes(self.arrays)


@dataclass
class ClientUpdate:
    """What one client sends back: shared arrays, their weight, training metrics and side information."""

    client_id: int
    arrays: Arrays
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)
    #: arrays sent besides the shared parameters, never averaged (FedMosaic's gradient sketch)
    side_info: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return nbytes(self.arrays) + nbytes(self.side_info)


@dataclass(frozen=True)
class ClientInfo:
    """What the server may know about a client: its id, architecture and task list (never its data)."""

    id: int
    architecture: str
    tasks: tuple[str, ...]


@dataclass(frozen=True)
class RoundContext:
    """Where the run is: 0-based round index, the scenario, the seed and the participating clients."""

    round: int
    scenario: ScenarioSpec
    seed: int
    participants: tuple[int, ...]
    clients: Mapping[int, ClientInfo]

    @property
    def num_rounds(self) -> int:
        return self.scenario.rounds


@dataclass
class RunResult:
    """What an engine returns for one seed; ``drake.runner.seed_record`` turns it into a result entry."""

    #: per round: {"round", "train": {client: metrics}, "eval"?: {client: {task: score}}, "relevance"?, "diagnostics"?}
    history: list[dict[str, Any]]
    unseen: dict[int, dict[str, float]]  # client -> unseen task -> zero-shot score
    unseen_adapted: dict[int, dict[str, dict[str, Any]]]  # client -> task -> {"score", "steps", "curve", "loss"}
    comm: dict[str, Any]  # {"total_up", "total_down", "per_round": [{"round", "up", "down"}]}
    wall: dict[str, float]  # seconds by phase: train, aggregate, eval, unseen_adapt
    method_state: dict[str, Any]
    grad_accum: dict[str, int]
    compute: dict[str, Any]  # {"cost_per_example", "ratio_to_local"}
    metrics: dict[str, str]  # task -> metric name
    n_eval: dict[str, dict[str, int]]  # "own" | "others" | "unseen" -> task -> items scored
