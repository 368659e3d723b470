"""FedProx on LoRA adapters: FedAvg plus a proximal term that keeps local training near the global."""

from __future__ import annotations

from dataclasses import dataclass, field

from baselines._prox import prox_term, snapshot
from baselines.fedavg import FedAvg
from drake.fl.method import MethodConfig
from drake.fl.types import ClientUpdate, RoundContext


@dataclass(frozen=True)
class FedProxConfig(MethodConfig):
    """FedProx settings. Budget: FedAvg's row of the FedMosaic equal-compute table (100 iterations x 4)
    maps to 20 x 8 here (iterations x 20/100, batch x 2); the proximal term costs no extra passes."""

    mu: float = field(default=0.01, metadata={"help": "proximal coefficient mu (paper grid 0.001-1; OpenFedLLM 0.01)"})


class FedProx(FedAvg):
    """FedProx (Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020, arXiv 1812.06127).

    Update rule: client k minimises f_k(theta) + (mu/2) ||theta - theta^t||^2 over its LoRA parameters,
    theta^t being the global it received; the server averages as FedAvg (weights n_k), within each
    architecture only. Not used by the FedMosaic code. Evaluation uses the architecture's global.
    """

    name = "fedprox"
    config_cls = FedProxConfig

    def client_update(self, ctx: RoundContext, client, payload) -> ClientUpdate:
        if payload.arrays:
            client.adapter.set_state(payload.arrays)
        names, params = client.adapter.names("shared"), client.adapter.parameters("shared")
        shared = dict(zip(names, params))
        anchor = snapshot(shared)
        mu = self.config.mu
        metrics = client.train(self.config.local_steps, extra_loss=lambda _c: prox_term(shared, anchor, mu))
        return ClientUpdate(client.id, client.adapter.get_state("shared"), client.num_examples, metrics)
