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
    """What one client sends back: shared arrays, their weight, training metrics and method extras."""

    client_id: int
    arrays: Arrays
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. FedMosaic's gradient sketch

    @property
    def nbytes(self) -> int:
        return nbytes(self.arrays) + nbytes(self.extras)


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
