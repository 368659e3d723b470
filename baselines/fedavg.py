"""FedAvg on LoRA adapters (FedIT): average the shared adapter, weighted by examples, per architecture."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from drake.fl.method import Method, MethodConfig, ServerState, group_by_architecture, weighted_mean
from drake.fl.types import ClientUpdate, RoundContext


def average_per_architecture(
    ctx: RoundContext, server: ServerState, updates: Sequence[ClientUpdate]
) -> ServerState:
    """FedAvg's server step, global_arch = sum_k n_k * theta_k / sum_k n_k over each architecture's uploads
    (never across architectures); also the step of every method whose shared adapter is plain FedAvg."""
    for arch, group in group_by_architecture(updates, ctx.clients).items():
        server.per_arch[arch] = weighted_mean([u.arrays for u in group], [u.num_examples for u in group])
    return server


class FedAvg(Method[MethodConfig]):
    """FedAvg (McMahan et al., AISTATS 2017) on LoRA, i.e. FedIT (Zhang et al., ICASSP 2024).

    Update rule: each client starts the round from its architecture's global adapter, trains
    ``local_steps`` steps, and the server sets global_arch = sum_k n_k * theta_k / sum_k n_k over the
    clients of that architecture. With heterogeneous models, averaging happens only within the same
    architecture (as in the FedMosaic paper's adaptation). Under the official protocol a client is scored
    on its adapter right after its local training (as the FedMosaic code scores FedIT); under
    ``server-global`` on its architecture's fresh average.
    """

    name = "fedavg"

    def client_update(self, ctx: RoundContext, client, payload) -> ClientUpdate:
        if payload.arrays:
            client.adapter.set_state(payload.arrays)
        metrics = client.train(self.config.local_steps)
        return ClientUpdate(client.id, client.adapter.get_state("shared"), client.num_examples, metrics)

    def aggregate(self, ctx: RoundContext, server: ServerState, updates: Sequence[ClientUpdate]) -> ServerState:
        return average_per_architecture(ctx, server, updates)

    def load_server_model(self, ctx: RoundContext, client, server: ServerState) -> None:
        global_state = server.per_arch.get(client.architecture)
        if global_state:
            client.adapter.set_state(global_state)

    def eval_key(self, ctx: RoundContext, client, server: ServerState) -> Hashable | None:
        """Under a ``server`` protocol the clients of an architecture all evaluate its global adapter, where it
        is their whole adapter (not with local keys, e.g. FedPer's personal layers, nor under a subclass's
        own scored state)."""
        global_state = server.per_arch.get(client.architecture)
        own = (type(self).load_server_model, type(self).select_scored_state)
        if own != (FedAvg.load_server_model, FedAvg.select_scored_state) or not global_state:
            return None
        return "global" if set(global_state) == set(client.adapter.names("all")) else None
