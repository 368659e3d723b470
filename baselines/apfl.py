"""APFL: a global adapter, a local adapter and a learned per-client mixing weight alpha."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from baselines._dual import (
    SharedAdapterMethod,
    adapter_params,
    alternate,
    load_global,
    model_mix,
    set_model_mix,
)
from drake.adapters.multi import DEFAULT
from drake.fl.method import MethodConfig
from drake.fl.types import ClientUpdate, RoundContext

PERSONAL = "local"
ALPHA = "apfl_alpha"


@dataclass(frozen=True)
class APFLConfig(MethodConfig):
    """APFL settings. Budget: APFL is not in the FedMosaic table; as a dual-update method (a personal and a
    global step per batch) it takes Ditto's row, 50 x 8 (in the FedMosaic code 50 iterations of 4 samples,
    each seen by both adapters) -> 10 x 8 here, both steps on the whole batch (``compute_cost`` 2:
    10 x 8 x 2 = 160 passes, ``local``'s 20 x 8)."""

    local_steps: int = field(default=10, metadata={"help": "iterations per round (one personal + one global step each)"})
    batch_size: int = field(default=8, metadata={"help": "examples per iteration, each seen by both steps"})
    alpha: float = field(default=0.5, metadata={"help": "initial mixing weight alpha (FL-bench 0.5)"})
    alpha_lr: float = field(default=1e-2, metadata={"help": "learning rate of alpha"})


def personal_mix(alpha: torch.Tensor | float) -> dict[str, torch.Tensor | float]:
    """The personalized model v_bar = alpha * v + (1 - alpha) * w, as a mix of the two LoRA updates."""
    return {PERSONAL: alpha, DEFAULT: 1.0 - alpha}


def alpha_param(client) -> nn.Parameter:
    """This client's alpha (a model parameter, so the engine swaps it with the adapter state)."""
    return dict(zip(client.adapter.names("all"), client.adapter.parameters("all")))[ALPHA]


def clamp_alpha(alpha: nn.Parameter) -> None:
    with torch.no_grad():
        alpha.clamp_(0.0, 1.0)


class APFL(SharedAdapterMethod[APFLConfig]):
    """APFL (Deng, Kamani, Mahdavi, "Adaptive Personalized Federated Learning", arXiv 2003.13461, 2020).

    Update rule (Algorithm 1): per batch xi, the gradients of w, v_k and alpha are all taken on the same xi
    at the same iterate: v_k takes a step on f_k(alpha v_k + (1 - alpha) w; xi) with w fixed, and alpha a
    step on the same loss (its gradient is <delta_v - delta_w, grad>), then is clipped to [0, 1]; then w
    takes a step on f_k(w; xi). The personal phase runs first so that its gradients see the pre-step w;
    w's own gradient does not depend on v_k or alpha, so this order equals the paper's simultaneous update.
    With LoRA the mixture is taken over the adapters' weight updates, B_v A_v and B_w A_w, exactly. Only w
    is uploaded and averaged (weights n_k) within each architecture; v_k and alpha stay on the client.
    Evaluation (drake/protocol.py): under the official protocol each client is scored right after its own
    local training on alpha v_k + (1 - alpha) w with its own locally trained w; under
    ``--protocol server-global``, w is the architecture's fresh average. The harness's one optimizer
    (AdamW) replaces the paper's SGD for all three; alpha has its own learning rate, but its gradient is
    clipped together with v_k's (one norm over v_k and alpha, the runtime's ``max_grad_norm``). Compute:
    two forward+backward passes per example (``compute_cost`` 2). Not used by the FedMosaic code.
    """

    name = "apfl"
    config_cls = APFLConfig
    extra_adapters = (PERSONAL,)
    copy_global_into = (PERSONAL,)

    @property
    def extra_params(self) -> dict[str, float]:  # type: ignore[override]
        return {ALPHA: self.config.alpha}

    def compute_cost(self) -> float:
        return 2.0  # a personal and a global forward+backward pass on every example

    def client_update(self, ctx: RoundContext, client, payload) -> ClientUpdate:
        load_global(client, payload.arrays)
        alpha = alpha_param(client)

        def global_loss(rt, rows):
            with model_mix(rt, {DEFAULT: 1.0}):
                return rt.loss(rows)

        def personal_loss(rt, rows):
            with model_mix(rt, personal_mix(alpha)):  # gradients reach v_k and alpha, not w
                return rt.loss(rows)

        phases = [  # personal first: v_k's and alpha's gradients at the pre-step w (Algorithm 1)
            {"params": [*adapter_params(client, PERSONAL).values(), alpha], "loss_fn": personal_loss,
             "lr_groups": {ALPHA: self.config.alpha_lr}, "on_step": lambda _s: clamp_alpha(alpha)},
            {"params": list(adapter_params(client, DEFAULT).values()), "loss_fn": global_loss},
        ]
        metrics = alternate(client, client.next_batches(self.config.local_steps), phases, same_rows=True)
        set_model_mix(client, {DEFAULT: 1.0})
        return ClientUpdate(client.id, client.adapter.get_state("shared"), client.num_examples, metrics)

    def select_scored_state(self, ctx: RoundContext, client) -> None:
        set_model_mix(client, personal_mix(float(alpha_param(client).detach().clamp(0.0, 1.0))))
