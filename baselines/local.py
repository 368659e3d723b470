"""Local training only (the lower bound; called SFT in the FedMosaic paper)."""

from __future__ import annotations

from collections.abc import Sequence

from drake.fl.method import Method, MethodConfig, ServerState
from drake.fl.types import ClientUpdate, Payload, RoundContext


class Local(Method[MethodConfig]):
    """Local: each client fine-tunes its own LoRA adapter on its own stream; nothing is communicated."""

    name = "local"
    communicates = False

    def configure_round(self, ctx: RoundContext, server: ServerState) -> dict[int, Payload]:
        return {cid: Payload() for cid in ctx.participants}

    def client_update(self, ctx, client, payload) -> ClientUpdate:
        metrics = client.train(self.config.local_steps)
        return ClientUpdate(client.id, {}, client.num_examples, metrics)

    def aggregate(self, ctx, server: ServerState, updates: Sequence[ClientUpdate]) -> ServerState:
        return server
