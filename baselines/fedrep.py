"""FedRep on LoRA adapters: per round, train the personal head with the body frozen, then the body."""

from __future__ import annotations

from dataclasses import dataclass, field

from baselines._dual import merge_metrics
from baselines.fedper import FedPer, FedPerConfig
from drake.errors import SpecError
from drake.fl.types import ClientUpdate, RoundContext


@dataclass(frozen=True)
class FedRepConfig(FedPerConfig):
    """FedRep settings. Budget: FedAvg's row of the FedMosaic equal-compute table (100 x 4 -> 20 x 8),
    split as head steps then body steps (FL-bench's default: 1 body epoch of 5 local epochs -> 16 + 4). The
    official scripts (lgcollins/FedRep) give the body ``local_rep_ep`` of ``local_ep`` epochs, from about a
    tenth to a third by dataset (FEMNIST: 5 of 15); 0.2 lies in that range."""

    body_fraction: float = field(
        default=0.2, metadata={"help": "share of local_steps (at least one) that train the body, head frozen"}
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.body_fraction <= 1.0:
            raise SpecError(f"fedrep: body_fraction={self.body_fraction} must be in (0, 1]; e.g. --set body_fraction=0.2")


def phase_steps(local_steps: int, body_fraction: float) -> tuple[int, int]:
    """(head steps, body steps) of one round: the body gets round(fraction x steps), at least one."""
    body = min(local_steps, max(1, round(body_fraction * local_steps)))
    return local_steps - body, body


class FedRep(FedPer):
    """FedRep (Collins et al., "Exploiting Shared Representations for Personalized Federated Learning",
    ICML 2021, arXiv 2102.07078).

    Update rule: client k loads the global body phi, trains its head h_k with phi frozen, then phi with
    h_k frozen (the last ``body_fraction`` of ``local_steps``), and uploads phi only; the
    server averages phi (weights n_k) within each architecture. Head = the LoRA of the top
    ``personal_layers`` text blocks, as in FedPer. Evaluation (drake/protocol.py): under the official
    protocol each client is scored right after its own local training, on its own locally trained body and
    its head; under ``--protocol server-global`` on the architecture's fresh average of the body with its
    own head. Compute: a head step backpropagates only through the top block(s) (the body's LoRA is
    frozen, so no gradient flows below the head), so ``compute_cost`` 1.0 overstates FedRep's compute a
    little. Not used by the FedMosaic code.
    """

    name = "fedrep"
    config_cls = FedRepConfig

    def client_update(self, ctx: RoundContext, client, payload) -> ClientUpdate:
        if payload.arrays:
            client.adapter.set_state(payload.arrays)
        head_steps, body_steps = phase_steps(self.config.local_steps, self.config.body_fraction)
        batches = client.next_batches(self.config.local_steps)
        parts = []
        if head_steps:
            parts.append(client.train(head_steps, batches=batches[:head_steps], params=client.adapter.parameters("local")))
        if body_steps and batches[head_steps:]:
            parts.append(client.train(body_steps, batches=batches[head_steps:], params=client.adapter.parameters("shared")))
        return ClientUpdate(client.id, client.adapter.get_state("shared"), client.num_examples, merge_metrics(parts))
