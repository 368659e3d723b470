"""Per-client LoRA ranks on one adapter attached at the maximum rank (shared by HetLoRA and FlexLoRA).

The engine attaches one adapter per architecture (``runner.make_engine`` calls ``attach`` once) at the
method's ``lora_r`` = r_max and swaps the clients' state dicts in and out. A client of rank r_k < r_max keeps
components r_k.. of its LoRA at zero: rows r_k: of every A (r_max x d_in) and columns r_k: of every B
(d_out x r_max). Equivalence with a rank-r_k LoRA:

- forward: with A[r_k:] = 0 and B[:, r_k:] = 0 the layer adds s * B[:, :r_k] A[:r_k] x, exactly a rank-r_k
  LoRA with the same scaling s = lora_alpha / lora_r;
- training: the tails' gradients are exactly zero (dL/dA_tail = s B_tail^T g x^T, dL/dB_tail = s g (A_tail x)^T),
  so AdamW never moves them; ``mask_`` re-zeroes them after every step all the same, so that a rank pruned
  mid-run (HetLoRA) stays pruned despite its optimizer moments;
- initialisation: peft draws A kaiming-uniform with fan_in = d_in whatever the rank (B = 0), so the first
  r_k rows of the rank-r_max init are distributed as a fresh rank-r_k init.

The scaling s is the same at every rank (alpha_k = s * r_k, FLoRA's heterogeneous choice), which is what
makes zero-padding and truncation exact on delta W = s B A. Only a client's first r_k components travel (up
and down), so communication counts its own rank. Ranks come from the scenario's per-client ``lora_rank``
(drake/scenarios/hetrank.yaml); a client without one trains at ``lora_r``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from drake.adapters.handle import AdapterHandle
from drake.errors import DrakeError, SpecError
from drake.fl.method import C, Method, ServerState, group_by_architecture
from drake.fl.types import Arrays, ClientUpdate, Payload, RoundContext

A_TAG, B_TAG = ".lora_A.", ".lora_B."


def lora_pairs(keys: Iterable[str]) -> list[tuple[str, str]]:
    """(A key, B key) of every LoRA module in ``keys``, in key order."""
    keys = list(keys)
    known = set(keys)
    pairs = []
    for k in keys:
        if A_TAG in k:
            b = k.replace(A_TAG, B_TAG)
            if b not in known:
                raise DrakeError(f"LoRA key {k!r} has no matching lora_B key; the adapter state is incomplete")
            pairs.append((k, b))
    return pairs


def rank_of(arrays: Mapping[str, torch.Tensor]) -> int:
    """The rank of a LoRA state (rows of its A matrices; 0 when it holds no LoRA)."""
    return next((int(v.shape[0]) for k, v in arrays.items() if A_TAG in k), 0)


def truncate(arrays: Mapping[str, torch.Tensor], r: int) -> Arrays:
    """The first ``r`` rank components: A[:r] and B[:, :r] (other keys copied)."""
    out: Arrays = {}
    for k, v in arrays.items():
        out[k] = (v[:r] if A_TAG in k else v[:, :r] if B_TAG in k else v).clone()
    return out


def pad(arrays: Mapping[str, torch.Tensor], r: int) -> Arrays:
    """Zero-pad every A to r rows and every B to r columns (HetLoRA's padding; other keys copied)."""
    out: Arrays = {}
    for k, v in arrays.items():
        if A_TAG in k:
            out[k] = torch.cat([v, v.new_zeros(r - v.shape[0], *v.shape[1:])], 0)
        elif B_TAG in k:
            out[k] = torch.cat([v, v.new_zeros(v.shape[0], r - v.shape[1], *v.shape[2:])], 1)
        else:
            out[k] = v.clone()
    return out


@torch.no_grad()
def mask_(handle: AdapterHandle, r: int) -> None:
    """Zero the adapter's rank components r.. in place (rows of A, columns of B)."""
    for name, p in zip(handle.names("all"), handle.parameters("all")):
        if A_TAG in name:
            p[r:].zero_()
        elif B_TAG in name:
            p[:, r:].zero_()


def scenario_ranks(scenario: Any, r_max: int) -> dict[int, int]:
    """Each client's rank: its ``lora_rank`` in the scenario, else ``r_max``; a rank above r_max is an error."""
    ranks = {c.id: c.lora_rank or r_max for c in scenario.clients}
    for cid, r in ranks.items():
        if r > r_max:
            raise SpecError(
                f"{scenario.path or scenario.name}: client {cid} has lora_rank {r} > lora_r {r_max} (the rank the "
                f"adapter is attached at); lower it or run with --set lora_r={max(ranks.values())}"
            )
    return ranks


class RankHeteroMethod(Method[C]):
    """A method whose clients train LoRA at their own ranks within one architecture's r_max adapter.

    Server state: ``per_arch[arch]`` is the architecture's global LoRA at rank r_max (a subclass's ``merge``
    of the uploads) and ``extra["ranks"]`` each client's current rank (read off its last upload). Each round a
    client receives the global's first r_k components, zero-pads them to r_max, trains with its tail masked
    and uploads its first r_k components. Evaluation (official protocol): the client's adapter right after
    local training; under ``server-global``, the global truncated to the client's rank.
    """

    def ranks(self, ctx: RoundContext, server: ServerState | None = None) -> dict[int, int]:
        """Current ranks: the scenario's, lowered where a client reported a smaller one (HetLoRA pruning)."""
        ranks = scenario_ranks(ctx.scenario, self.config.lora_r)
        if server is not None:
            ranks.update({int(c): int(r) for c, r in server.method_state.get("ranks", {}).items()})
        return ranks

    # ---- server side -----------------------------------------------------------------------------
    def configure_round(self, ctx: RoundContext, server: ServerState) -> dict[int, Payload]:
        ranks = self.ranks(ctx, server)
        out = {}
        for cid in ctx.participants:
            glob = server.per_arch.get(ctx.clients[cid].architecture)
            out[cid] = Payload(truncate(glob, ranks[cid]) if glob else {}, {"rank": ranks[cid]})
        return out

    def aggregate(self, ctx: RoundContext, server: ServerState, updates: Sequence[ClientUpdate]) -> ServerState:
        ranks = dict(server.method_state.get("ranks", {}))
        ranks.update({u.client_id: rank_of(u.arrays) for u in updates})
        server.method_state["ranks"] = ranks
        for arch, group in group_by_architecture(updates, ctx.clients).items():
            server.per_arch[arch] = self.merge(ctx, server, group)
        return server

    @abstractmethod
    def merge(self, ctx: RoundContext, server: ServerState, group: Sequence[ClientUpdate]) -> Arrays:
        """One architecture's new global LoRA at rank ``lora_r`` from its clients' uploads (ranks r_k)."""

    # ---- client side -----------------------------------------------------------------------------
    def client_update(self, ctx: RoundContext, client: Any, payload: Payload) -> ClientUpdate:
        r = int(payload.config.get("rank") or self.ranks(ctx)[client.id])
        if payload.arrays:
            client.adapter.set_state(pad(payload.arrays, self.config.lora_r))
        mask_(client.adapter, r)
        metrics, r = self.local_train(ctx, client, r)
        state = truncate(client.adapter.get_state("shared"), r)
        return ClientUpdate(client.id, state, client.num_examples, {**metrics, "rank": float(r)})

    def local_train(self, ctx: RoundContext, client: Any, r: int) -> tuple[dict[str, float], int]:
        """``local_steps`` steps at rank ``r``: (metrics, the rank the client ends the round at)."""
        on_step = (lambda _step: mask_(client.adapter, r)) if r < self.config.lora_r else None
        return client.train(self.config.local_steps, on_step=on_step), r

    def load_server_model(self, ctx: RoundContext, client: Any, server: ServerState) -> None:
        glob = server.per_arch.get(client.architecture)
        if glob:
            client.adapter.set_state(pad(truncate(glob, self.ranks(ctx, server)[client.id]), self.config.lora_r))
