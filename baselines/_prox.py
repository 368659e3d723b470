"""Proximal terms: (coef / 2) ||theta - anchor||^2 toward a snapshot taken at the start of a round (FedProx's
pull toward the received global, Ditto's and PerAda's pull of the personal adapter toward it)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from drake.adapters.multi import adapter_key
from drake.fl.client import ExtraLoss


def snapshot(params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A detached copy of ``params`` (the anchor of a proximal term)."""
    return {n: p.detach().clone() for n, p in params.items()}


def prox_term(
    params: Mapping[str, torch.Tensor], anchor: Mapping[str, torch.Tensor], coef: float
) -> torch.Tensor:
    """(coef / 2) * sum ||p - anchor||^2 over matching names; its gradient is coef * (p - anchor)."""
    total = sum(((p - anchor[n].to(p.device)) ** 2).sum() for n, p in params.items())
    return 0.5 * coef * total  # type: ignore[return-value]


def prox_to_other_adapter(
    params: Mapping[str, torch.Tensor], anchor: Mapping[str, torch.Tensor], coef: float, src: str, dst: str
) -> ExtraLoss:
    """An ``extra_loss`` for Ditto/PerAda: (coef/2) ||v - w||^2 where v = adapter ``src`` and the anchor w
    is adapter ``dst``'s snapshot (keys mapped between the two adapters)."""
    mapped = {n: anchor[adapter_key(n, src, dst)] for n in params}
    return lambda _client: prox_term(params, mapped, coef)
