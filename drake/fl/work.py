"""The client side of a run: what every engine asks of the clients it hosts, as four public calls.

``ClientWork`` trains a round and scores (Self/Others, unseen tasks zero-shot and after a short fine-tune)
for the clients this process hosts, one at a time, swapping each client's state onto the architecture's
shared model. SequentialEngine calls it in-process; the node engines (drake/fl/nodes.py) send the call names
(``CALLS``) and their arguments in messages, and every node answers with a ``ClientWork`` of its own over its
share of the clients, so every engine computes the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from drake.data.stream import ClientStream
from drake.fl import evaluation
from drake.fl.client import ArchModel, ClientRuntime, ClientState, TaskRows
from drake.fl.method import Method, ServerState
from drake.fl.settings import EngineSettings
from drake.fl.state_store import StateStore
from drake.fl.types import ClientInfo, ClientUpdate, RoundContext


@dataclass
class RoundTraining:
    """One round's client work: the updates for the server, bytes on the wire per client, training metrics."""

    updates: list[ClientUpdate]
    comm: dict[str, Any]  # {"round": n, "up": {client: bytes}, "down": {client: bytes}}
    log: dict[int, dict[str, float]]


class ClientWork:
    """Training and scoring of the hosted clients (all of them unless ``hosted`` names a share)."""

    #: the calls an engine may make; the node engines send these names, and a node refuses any other
    CALLS = ("train", "evaluate", "evaluate_unseen", "adapt_unseen")

    def __init__(
        self, archs: Mapping[str, ArchModel], data: Mapping[str, TaskRows], settings: EngineSettings,
        hosted: Iterable[int] | None = None,
    ) -> None:
        self.archs = archs
        self.data = data
        self.settings = settings
        self.protocol = settings.effective_protocol()
        self.hosted = None if hosted is None else frozenset(hosted)
        #: per architecture, micro-batches per step when ``micro_batch`` overrides the method's grad_accum
        self.grad_accum: dict[str, int] = {}

    def hosts(self, ids: Iterable[int]) -> list[int]:
        """The clients of ``ids`` this process runs, in id order."""
        return sorted(c for c in ids if self.hosted is None or c in self.hosted)

    def runtime(
        self, method: Method, info: ClientInfo, stream: ClientStream, state: ClientState, seed: int, rnd: int,
        lr_scale: float = 1.0,
    ) -> ClientRuntime:
        """Client ``info``'s turn: its state on its architecture's model, with the method's training settings."""
        arch = self.archs[info.architecture]
        stream.load_state_dict(state.stream) if state.stream else None
        arch.adapter.set_state(state.adapter)
        cfg = method.config
        s = self.settings
        return ClientRuntime(
            info, arch, self.data, stream, state, seed=seed, round_idx=rnd, lr=cfg.lr * lr_scale,
            weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, batch_size=cfg.batch_size,
            grad_accum=self.grad_accum.get(info.architecture, cfg.grad_accum), eval_batch_size=s.eval_batch_size,
            length_norm=s.length_norm,
            max_new_tokens=s.max_new_tokens,
        )  # fmt: skip

    # ---- the calls ---------------------------------------------------------------------------------
    def train(
        self, method: Method, ctx: RoundContext, payloads: Mapping[int, Any], store: StateStore,
        streams: Mapping[int, ClientStream], bar: Any = None,
    ) -> RoundTraining:
        """Each hosted participant's ``client_update``, one at a time; their states go back to ``store``."""
        out = RoundTraining([], {"round": ctx.round + 1, "up": {}, "down": {}}, {})
        hosted = self.hosts(ctx.participants)
        for i, cid in enumerate(hosted):
            state = store.get(cid)
            rt = self.runtime(method, ctx.clients[cid], streams[cid], state, ctx.seed, ctx.round)
            payload = payloads[cid]
            upd = method.client_update(ctx, rt, payload)
            state.adapter = rt.adapter.get_state("all")
            state.stream = streams[cid].state_dict()
            store.put(cid, state)
            out.updates.append(upd)
            out.log[cid] = {k: float(v) for k, v in upd.metrics.items()}
            down, up = (payload.nbytes, upd.nbytes) if method.communicates else (0, 0)
            out.comm["down"][cid], out.comm["up"][cid] = down, up
            if bar is not None:
                bar.set_postfix(client=f"{i + 1}/{len(hosted)}", loss=f"{upd.metrics.get('loss', float('nan')):.3f}")
        return out

    def evaluate(
        self, method: Method, ctx: RoundContext, server: ServerState, store: StateStore,
        streams: Mapping[int, ClientStream],
    ) -> dict[int, dict[str, Any]]:
        """Self (and Others at the protocol's rounds) after round ``ctx.round``: drake/fl/evaluation.py."""
        return evaluation.evaluate_round(self, method, ctx, server, store, streams)

    def evaluate_unseen(
        self, method: Method, ctx: RoundContext, server: ServerState, store: StateStore,
        streams: Mapping[int, ClientStream],
    ) -> dict[int, dict[str, float]]:
        """Each hosted client's scored model on the unseen tasks the protocol gives it, zero-shot."""
        return evaluation.evaluate_unseen(self, method, ctx, server, store, streams)

    def adapt_unseen(
        self, method: Method, ctx: RoundContext, server: ServerState, store: StateStore,
        streams: Mapping[int, ClientStream],
    ) -> dict[int, dict[str, dict[str, Any]]]:
        """The same after the protocol's short fine-tune on each unseen task (scores along the way)."""
        return evaluation.adapt_unseen(self, method, ctx, server, store, streams)

