"""Ditto on LoRA: a shared global adapter trained by FedAvg, and a personal adapter pulled toward it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from baselines._dual import (
    SharedAdapterMethod,
    adapter_params,
    load_global,
    merge_metrics,
    set_model_mix,
    split_halves,
)
from baselines._prox import prox_to_other_adapter, snapshot
from drake.adapters.multi import DEFAULT
from drake.fl.method import MethodConfig
from drake.fl.types import ClientUpdate, RoundContext

PERSONAL = "local"


@dataclass(frozen=True)
class DittoConfig(MethodConfig):
    """Ditto settings. Budget: the FedMosaic equal-compute table gives Ditto 50 iterations x 8 (in its code
    50 iterations of 4 samples, each seen by a global and a personal step) -> 10 x 16 here (iterations x
    20/100, batch x 2), the batch split in halves: each adapter takes 10 steps of 8 disjoint examples, 160
    examples in all, as ``local``'s 20 x 8. Disjoint rows follow Ditto's paper, whose global and personal
    solvers draw independent minibatches (baselines/_dual.py)."""

    local_steps: int = field(default=10, metadata={"help": "iterations per round (one global + one personal step each)"})
    batch_size: int = field(default=16, metadata={"help": "examples per iteration, split between the two adapters"})
    lam: float = field(default=0.1, metadata={"help": "lambda of (lambda/2)||v - w||^2 (paper grid 0.01-2; FedMosaic code 1e-3)"})


class Ditto(SharedAdapterMethod[DittoConfig]):
    """Ditto (Li, Hu, Beirami, Smith, "Ditto: Fair and Robust Federated Learning Through Personalization",
    ICML 2021, arXiv 2012.04221).

    Update rule: the global adapter w is trained with plain CE and averaged (weights n_k) within each
    architecture; the personal adapter v_k (never sent) minimises f_k(v) + (lambda/2) ||v - w^t||^2,
    w^t being the global received this round, so each of its steps moves v toward w^t by
    lr * lambda * (v - w^t) on top of the task gradient. v^0 = w^0. A client is evaluated with v_k.

    Differences from the FedMosaic code (methods.md section 1): there the 'personal' lora2 is in the
    averaged state dict and appears to be overwritten by the group average each round, lambda is 1e-3 and
    evaluation uses the fixed 0.5/0.5 mix of both adapters; here v_k stays personal and is evaluated alone.
    """

    name = "ditto"
    #: False: the global step takes each batch's even rows and the personal step its odd rows (the paper's two
    #: solvers draw their own minibatches); True: both steps see every row (a subclass's choice, PerAda)
    same_rows: ClassVar[bool] = False
    config_cls = DittoConfig
    extra_adapters = (PERSONAL,)
    copy_global_into = (PERSONAL,)
    branches = {"global": {DEFAULT: 1.0}, "local": {PERSONAL: 1.0}}  # w alone; v_k alone (the scored model)
    server_model_into = ()  # scored on the personal adapter alone under every protocol

    def personal_loss_coef(self) -> float:
        return self.config.lam

    def client_update(self, ctx: RoundContext, client, payload) -> ClientUpdate:
        load_global(client, payload.arrays)
        global_params = adapter_params(client, DEFAULT)
        personal_params = adapter_params(client, PERSONAL)
        anchor = snapshot(global_params)  # w^t
        batches = client.next_batches(self.config.local_steps)
        first, second = (batches, batches) if self.same_rows else split_halves(batches)
        set_model_mix(client, {DEFAULT: 1.0})
        g = client.train(len(first), batches=first, params=list(global_params.values()))
        set_model_mix(client, {PERSONAL: 1.0})
        reg = prox_to_other_adapter(personal_params, anchor, self.personal_loss_coef(), PERSONAL, DEFAULT)
        p = client.train(len(second), batches=second, params=list(personal_params.values()), extra_loss=reg)
        set_model_mix(client, {DEFAULT: 1.0})
        metrics = merge_metrics([g, p])
        if self.same_rows:
            metrics["examples"] = g["examples"]  # distinct rows; the second pass over them is in compute_cost
        return ClientUpdate(client.id, client.adapter.get_state("shared"), client.num_examples, metrics)

    def select_scored_state(self, ctx: RoundContext, client) -> None:
        set_model_mix(client, {PERSONAL: 1.0})
