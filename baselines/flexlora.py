"""FlexLoRA: clients at their own LoRA ranks; average the full delta W, give each client its rank by SVD."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from baselines._lora_rank import RankHeteroMethod, lora_pairs
from drake.errors import SpecError
from drake.fl.method import MethodConfig, ServerState
from drake.fl.types import Arrays, ClientUpdate, Payload, RoundContext

SPLITS = ("B", "sqrt")


@dataclass(frozen=True)
class FlexLoRAConfig(MethodConfig):
    """FlexLoRA settings. Budget: plain LoRA SFT steps (``local``'s 20 x 8); the ranks come from the scenario."""

    sigma_split: str = field(
        default="B",
        metadata={"help": "how the singular values go back into the factors: B (B = U S, A = V^T) or sqrt "
                          "(B = U sqrt(S), A = sqrt(S) V^T)"},
    )

    def __post_init__(self) -> None:
        if self.sigma_split not in SPLITS:
            raise SpecError(f"flexlora: sigma_split={self.sigma_split!r} is not one of {', '.join(SPLITS)}")


def svd_factors(delta: torch.Tensor, r: int, split: str = "B") -> tuple[torch.Tensor, torch.Tensor]:
    """(B, A) of rank ``r`` with B A the best rank-r approximation of ``delta`` (Eckart-Young), zero-padded
    where ``delta`` has fewer than r singular values. ``split="B"``: B = U_r S_r, A = V_r^T; ``"sqrt"``:
    sqrt(S_r) on each side, except that a zero singular value keeps its row of V^T in A (B's column is zero,
    so B A is the same) rather than leaving a component with both factors zero, which could never train."""
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    k = min(r, s.numel())
    u, s, vh = u[:, :k], s[:k], vh[:k]
    if split == "B":
        b, a = u * s, vh
    else:
        root = s.sqrt()
        b, a = u * root, torch.where(s > 0, root, torch.ones_like(root))[:, None] * vh
    b = torch.cat([b, b.new_zeros(b.shape[0], r - k)], 1)
    a = torch.cat([a, a.new_zeros(r - k, a.shape[1])], 0)
    return b, a


def weighted_delta(states: Sequence[Arrays], weights: Sequence[float], a_key: str, b_key: str) -> torch.Tensor:
    """sum_k p_k B_k A_k in float64, p_k = weights / sum(weights) (the LoRA scaling, equal for every rank,
    is left out on both sides)."""
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("weights must sum to a positive number")
    return sum((w / total) * (s[b_key].double() @ s[a_key].double()) for s, w in zip(states, weights))  # type: ignore[return-value]


def flexlora_merge(states: Sequence[Arrays], weights: Sequence[float], r_max: int, split: str = "B") -> Arrays:
    """The global LoRA at rank ``r_max``: per module, the SVD factors of the weighted mean delta W. Its first
    r_k components are the best rank-r_k approximation of that mean (singular values sorted), so truncation
    hands every client its rank. Non-LoRA keys, if any, are averaged with the same weights."""
    out: Arrays = {}
    for a, b in lora_pairs(states[0]):
        fb, fa = svd_factors(weighted_delta(states, weights, a, b), r_max, split)
        out[a], out[b] = fa.to(states[0][a].dtype), fb.to(states[0][b].dtype)
    total = float(sum(weights))
    for key in states[0]:
        if key not in out:
            out[key] = sum((w / total) * s[key].double() for s, w in zip(states, weights)).to(states[0][key].dtype)  # type: ignore[union-attr]
    return out


class FlexLoRA(RankHeteroMethod[FlexLoRAConfig]):
    """FlexLoRA (Bai, Chen, Qian, Yao, Li, "Federated Fine-tuning of Large Language Models under
    Heterogeneous Tasks and Client Resources", NeurIPS 2024, arXiv 2402.11505).

    Update rule: client k trains a rank-r_k LoRA (baselines/_lora_rank.py: masked components of one r_max
    adapter, exactly equivalent) and uploads B_k, A_k; the server forms each module's full-size update and
    averages it by data size, delta W = sum_k (n_k / n) B_k A_k, then redistributes by SVD: client k receives
    B = U_{r_k} S_{r_k}, A = V_{r_k}^T, the best rank-r_k approximation of delta W. One SVD per module and
    architecture serves every rank (the server keeps the factors at r_max, sorted by singular value, and
    truncates per client). Averaging stays within an architecture.

    The split of S between B and A: ``sigma_split=B`` (default) puts S on B, as the official code does
    (alibaba/FederatedScope, FlexLoRA branch, ``distribute_weight_fast``: B = U S, A = V^T), so A = V^T keeps
    orthonormal rows and every component, even one of singular value zero, can train (as a fresh LoRA's
    nonzero A does); ``sqrt`` splits sqrt(S) over both. Either way B A is the same.

    LoRA scaling: every rank keeps s = lora_alpha / r_max (baselines/_lora_rank.py), which makes padding and
    truncation exact on s B A. The official code instead fixes alpha = 16 for every client, so a rank-r_k
    client trains at s_k = 16 / r_k (a rank-4 client at 8x the scale of a rank-32 one). Aggregation is exact
    either way; local training dynamics differ on ``hetrank``, not on scenarios where every client has one rank.

    A client starts every round with a fresh AdamW (the harness keeps optimizer state across rounds, as the
    FedMosaic code does): the SVD hands it new factors in a new basis each round (rotated, signs arbitrary),
    in which last round's per-element moments mean nothing. The paper's clients build a new optimizer each
    round too.

    On a scenario without per-client ranks (``smoke``, drake-dynamic) every client trains at ``lora_r``:
    FlexLoRA is then FedAvg of the products B A, re-factored by SVD at ``lora_r`` (lossy where a module's mean
    update exceeds that rank), with a fresh optimizer every round. The official code falls back to plain
    FedAvg of the factors when every client has one rank (``--aggregation homo``); this harness keeps
    FlexLoRA's rule. The FedMosaic code does not run FlexLoRA.
    """

    name = "flexlora"
    config_cls = FlexLoRAConfig

    def client_update(self, ctx: RoundContext, client: Any, payload: Payload) -> ClientUpdate:
        if payload.arrays:
            client.state.optimizer = None  # new SVD factors: a fresh optimizer (see the class docstring)
        return super().client_update(ctx, client, payload)

    def merge(self, ctx: RoundContext, server: ServerState, group: Sequence[ClientUpdate]) -> Arrays:
        weights = [float(u.num_examples) for u in group]
        if sum(weights) <= 0:
            weights = [1.0] * len(group)
        return flexlora_merge([u.arrays for u in group], weights, self.config.lora_r, self.config.sigma_split)
