"""Is FedMosaic's global branch used? The gate beta on a client's own prompts vs other clients' prompts, and
Others scored with each branch alone.

beta weighs the global adapter G_i (1) against the client's local one (0) in every PQ-LoRA / dual-LoRA layer
(pqlora/layer.py). The paper motivates the global branch by knowledge from related clients, so a useful gate
should lean on G_i more on prompts that are not the client's own; these numbers let a reader check that.

The betas are read off the forwards that score each task (``GateWatch``), so they cost no forward of their
own: every layer's beta of every scored sequence, decode steps left out (they reuse the prompt's gate).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch

from drake.fl.method import TaskValues, others_under
from fedmosaic.pqlora import PQLoraModel


@contextmanager
def recorded_betas(pq: PQLoraModel, into: list[torch.Tensor]) -> Iterator[None]:
    """Every layer's beta of the full forwards inside the block, appended to ``into`` (one tensor per call);
    cached decode steps are left out: their gate is the prompt's, already recorded at the prefill."""
    layers = list(pq.layers.values())

    def recorder(layer: Any):
        original = layer.beta

        def beta(x: torch.Tensor) -> torch.Tensor:
            out = original(x)
            if not layer.context.decoding(x):
                into.append(out.detach().float().reshape(-1).cpu())
            return out

        return beta

    for layer in layers:
        layer.beta = recorder(layer)  # an instance attribute shadows the method for this block only
    try:
        yield
    finally:
        for layer in layers:
            del layer.beta


class GateWatch(TaskValues):
    """The betas of the forwards that score each task, recorded while the engine scores (``task(name)``);
    ``mean`` is over every layer and scored sequence."""

    def __init__(self, pq: PQLoraModel) -> None:
        super().__init__()
        self.pq = pq

    @contextmanager
    def task(self, name: str) -> Iterator[None]:
        with super().task(name), recorded_betas(self.pq, self.values[name]):
            yield


def gate_report(
    client: Any, pq: PQLoraModel, watch: GateWatch, own: Sequence[str], others: Sequence[str], *,
    by_branch: bool, limit: int | None,
) -> dict[str, Any]:
    """``{"beta_own", "beta_others"}`` (from ``watch``), and with ``by_branch`` ``others_by_branch``: the
    client's mean Others score with the global branch only (beta = 1) and the local branch only (beta = 0),
    on the rows Others is scored on (``limit`` per task); two more Others passes."""
    out: dict[str, Any] = {"beta_own": watch.mean(own), "beta_others": watch.mean(others)}
    if by_branch and others:
        branches = {"global": partial(pq.force_beta, 1.0), "local": partial(pq.force_beta, 0.0)}
        out["others_by_branch"] = others_under(client, others, branches, limit)
    return out
