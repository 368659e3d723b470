"""Shared set-up of the server-side distillation tests (FedDF, FedMKT, TAKFL): a method attached to shipped zoo
members (untrained models give near-uniform outputs whose KL barely moves) and "trained" client updates."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from drake.fl.client import ArchModel
from drake.fl.types import ClientUpdate


def attach_zoo(method: Any, names: Iterable[str], public: Sequence[dict]) -> dict[str, ArchModel]:
    """``method`` attached (seeded adapter init) to each zoo member in ``names``, bound, with ``public`` rows."""
    from drake.models.loading import load_model

    archs = {}
    for name in sorted(set(names)):
        loaded = load_model(name, device="cpu", progress=False)
        torch.manual_seed(0)
        model, handle = method.attach(loaded.model, name)
        archs[name] = ArchModel(name, loaded, model, handle)
    method.bind(archs, None)
    method.set_public_rows(list(public))
    return archs


def random_updates(
    archs: Mapping[str, ArchModel], clients: Mapping[int, str], examples: Callable[[int], int]
) -> list[ClientUpdate]:
    """One update per client: a seeded random LoRA state of its architecture, ``examples(cid)`` examples."""
    updates = []
    for cid, arch in clients.items():
        g = torch.Generator().manual_seed(cid + 1)
        state = {k: torch.randn(v.shape, generator=g) * 0.1 for k, v in archs[arch].adapter.get_state().items()}
        updates.append(ClientUpdate(cid, state, examples(cid), {"examples": 8.0}))
    return updates
