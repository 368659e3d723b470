"""APFL: a global adapter, a local adapter and a learned per-client mixing weight alpha."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

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
    alpha: float = field(default=0.5, metadata={"help": "initial mixing weight alpha (the authors' FedTorch code and FL-bench: 0.5)"})
    alpha_lr: float | None = field(
        default=None,
        metadata={"help": "step size of alpha's plain gradient step (None: the model's lr, as Algorithm 1's one "
                          "eta_t and the authors' FedTorch code)"},
    )


def personal_mix(alpha: torch.Tensor | float) -> dict[str, torch.Tensor | float]:
    """The personalized model v_bar = alpha * v + (1 - alpha) * w, as a mix of the two LoRA updates."""
    return {PERSONAL: alpha, DEFAULT: 1.0 - alpha}


def alpha_param(client) -> nn.Parameter:
    """This client's alpha (a model parameter, so the engine swaps it with the adapter state)."""
    return dict(zip(client.adapter.names("all"), client.adapter.parameters("all")))[ALPHA]


def clamp_alpha(alpha: nn.Parameter) -> None:
    with torch.no_grad():
        alpha.clamp_(0.0, 1.0)


class AlphaStep:
    """Algorithm 1's update of alpha, alpha <- clip_[0,1](alpha - eta * d f_k(v_bar; xi) / d alpha), outside
    the runtime's AdamW: Adam would rescale every step to about its learning rate whatever the gradient's
    size, letting alpha run to 0 or 1 within a few rounds, where the paper's plain step keeps it near its
    start while v_k and w agree. The gradient is read off a hook during the phase's backward passes (summed
    over micro-batches, before clipping) and applied after the optimizer step."""

    def __init__(self, alpha: nn.Parameter, lr: float) -> None:
        self.alpha, self.lr, self.grad = alpha, lr, 0.0
        self._hook = alpha.register_hook(self._record)

    def _record(self, grad: torch.Tensor) -> None:
        self.grad += float(grad.sum())

    def step(self, _step: int = 0) -> None:
        with torch.no_grad():
            self.alpha.sub_(self.lr * self.grad)
        clamp_alpha(self.alpha)
        self.grad = 0.0

    def close(self) -> None:
        self._hook.remove()


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
    (AdamW) replaces the paper's SGD for w and v_k; alpha takes the paper's plain gradient step at the model's
    learning rate (``AlphaStep``; the AdamW group holding alpha has rate 0 so that only that step moves it).
    Compute:
    two forward+backward passes per example (``compute_cost`` 2). Not used by the FedMosaic code.
    """

    name = "apfl"
    config_cls = APFLConfig
    extra_adapters = (PERSONAL,)
    copy_global_into = (PERSONAL,)
    branches = {"global": {DEFAULT: 1.0}, "local": {PERSONAL: 1.0}}  # w alone, v_k alone

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

        cfg = self.config
        alpha_step = AlphaStep(alpha, cfg.lr if cfg.alpha_lr is None else cfg.alpha_lr)
        phases = [  # personal first: v_k's and alpha's gradients at the pre-step w (Algorithm 1)
            {"params": [*adapter_params(client, PERSONAL).values(), alpha], "loss_fn": personal_loss,
             "lr_groups": {ALPHA: 0.0}, "on_step": alpha_step.step},
            {"params": list(adapter_params(client, DEFAULT).values()), "loss_fn": global_loss},
        ]
        try:
            metrics = alternate(client, client.next_batches(cfg.local_steps), phases, same_rows=True)
        finally:
            alpha_step.close()
        set_model_mix(client, {DEFAULT: 1.0})
        return ClientUpdate(client.id, client.adapter.get_state("shared"), client.num_examples, metrics)

    def diagnostics(
        self, ctx: RoundContext, client, own: Sequence[str], others: Sequence[str], *, final: bool,
        limit: int | None, watch: Any = None, passes: bool = False,
    ) -> dict[str, Any] | None:
        """The client's alpha, and the global adapter's weight 1 - alpha under FedMosaic's gate keys
        (``beta_*``; the same on every prompt), so the gate table and plot read APFL too; with ``passes``,
        at the last Others round, Others with w alone (``global``) and v_k alone (``local``)."""
        alpha = float(alpha_param(client).detach().clamp(0.0, 1.0))
        branches = super().diagnostics(ctx, client, own, others, final=final, limit=limit, passes=passes)
        return {"alpha": alpha, "beta_own": 1.0 - alpha, "beta_others": 1.0 - alpha, **(branches or {})}

    def select_scored_state(self, ctx: RoundContext, client) -> None:
        set_model_mix(client, personal_mix(float(alpha_param(client).detach().clamp(0.0, 1.0))))
