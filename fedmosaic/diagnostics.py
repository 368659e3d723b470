"""Is FedMosaic's global branch used? The gate beta on a client's own prompts vs other clients' prompts, and
Others scored with each branch alone.

beta weighs the global adapter G_i (1) against the client's local one (0) in every PQ-LoRA / dual-LoRA layer
(pqlora/layer.py). The paper motivates the global branch by knowledge from related clients, so a useful gate
should lean on G_i more on prompts that are not the client's own; these numbers let a reader check that.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import torch

from drake.models.batching import collate
from fedmosaic.pqlora import PQLoraModel

#: test rows per task whose prompts the gate is read on (enough for a stable mean, cheap next to scoring)
GATE_ROWS = 16


@contextmanager
def recorded_betas(pq: PQLoraModel, into: list[torch.Tensor]):
    """Every layer's beta of the forwards inside the block, appended to ``into`` (one tensor per call)."""
    layers = list(pq.layers.values())

    def recorder(original):
        def beta(x: torch.Tensor) -> torch.Tensor:
            out = original(x)
            into.append(out.detach().float().reshape(-1).cpu())
            return out

        return beta

    for layer in layers:
        layer.beta = recorder(layer.beta)  # an instance attribute shadows the method for this block only
    try:
        yield
    finally:
        for layer in layers:
            del layer.beta


def mean_beta(client: Any, pq: PQLoraModel, tasks: Sequence[str], rows_per_task: int = GATE_ROWS) -> float | None:
    """Mean gate over layers and samples on the prompts (no answers) of the first test rows of ``tasks``."""
    rows = [r for t in tasks for r in list(client.data[t].splits.get("test", []))[:rows_per_task]]
    if not rows:
        return None
    betas: list[torch.Tensor] = []
    was_training = client.model.training
    client.model.eval()
    try:
        with torch.no_grad(), recorded_betas(pq, betas):
            for i in range(0, len(rows), client.eval_batch_size):
                client.model(**collate(client.arch.loaded, rows[i : i + client.eval_batch_size], with_answer=False))
    finally:
        client.model.train(was_training)
    return float(torch.cat(betas).mean()) if betas else None


def gate_report(
    client: Any, pq: PQLoraModel, own: Sequence[str], others: Sequence[str], *, final: bool, limit: int | None
) -> dict[str, Any]:
    """``{"beta_own", "beta_others"}``, and at the final evaluation ``others_by_branch``: the client's mean
    Others score with the global branch only (beta = 1) and the local branch only (beta = 0).

    The gate is read on at most ``limit`` rows per task (the Others scoring limit): an engine whose clients
    run elsewhere ships only the rows its evaluations score, so every engine reads the gate on the same rows."""
    n = GATE_ROWS if limit is None else min(GATE_ROWS, limit)
    out: dict[str, Any] = {"beta_own": mean_beta(client, pq, own, n), "beta_others": mean_beta(client, pq, others, n)}
    if final and others:
        by_branch = {}
        for branch, beta in (("global", 1.0), ("local", 0.0)):
            with pq.force_beta(beta):
                scores = [client.evaluate(t, limit=limit)["score"] for t in others]
            by_branch[branch] = sum(scores) / len(scores)
        out["others_by_branch"] = by_branch
    return out
