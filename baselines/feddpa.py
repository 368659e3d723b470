"""FedDPA: a global and a local adapter, mixed per test instance by similarity to local training data."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from baselines._dual import (
    SharedAdapterMethod,
    adapter_params,
    load_global,
    merge_metrics,
    model_mix,
    set_model_mix,
)
from drake.adapters.mix import MixModel
from drake.adapters.multi import DEFAULT
from drake.fl.client import ClientRuntime, Row
from drake.fl.method import MethodConfig, TaskValues
from drake.fl.types import ClientUpdate, RoundContext
from drake.models.batching import collate
from drake.models.scoring import position_ids
from drake.seeds import derive_seed

PERSONAL = "local"


@dataclass(frozen=True)
class FedDPAConfig(MethodConfig):
    """FedDPA settings. Budget: the FedMosaic equal-compute table gives FedDPA FedAvg's 100 x 4 -> 20 x 8
    here; the steps are split between the local phase and the global phase (``local_fraction``)."""

    local_fraction: float = field(default=0.5, metadata={"help": "share of local_steps that train the local adapter"})
    local_weight: float = field(
        default=0.5, metadata={"help": "a: local adapter weight while training it (global weight 1 - a, no grad)"}
    )
    max_weight: float = field(default=0.5, metadata={"help": "lambda = max_weight x mean cosine similarity"})
    ref_instances: int = field(default=5, metadata={"help": "K local training instances compared with each test instance"})


def instance_weights(h: torch.Tensor, refs: torch.Tensor, max_weight: float) -> torch.Tensor:
    """lambda_i = max_weight * mean_k cos(h_i, r_k): one weight per test instance (rows of ``h``)."""
    sims = F.cosine_similarity(h.float()[:, None, :], refs.float()[None, :, :], dim=-1)
    return max_weight * sims.mean(dim=1)


def prefix_lookup(
    table: dict[tuple[int, ...], float], input_ids: torch.Tensor, attention_mask: torch.Tensor, default: float = 0.5
) -> torch.Tensor:
    """Each sequence's weight: the entry of the longest prompt in ``table`` that its tokens under
    ``attention_mask`` start with. The mask is the prompt's when a scorer marks it (``MixModel.prompt_tokens``:
    one prompt scored with all its choices), else the padding mask of prompt + choice or prompt + new
    tokens; either way every choice of a question gets the same weight; ``default`` when no prompt matches."""
    lengths = sorted({len(k) for k in table}, reverse=True)
    out = []
    for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
        real = [t for t, m in zip(ids, mask) if m]
        keys = (tuple(real[:n]) for n in lengths)
        out.append(next((table[k] for k in keys if k in table), default))
    return torch.tensor(out, device=input_ids.device)


def inference_mix(lam: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-row adapter weights: global lambda_i, local 1 - lambda_i (as the official FedDPA code assigns)."""
    w = lam.reshape(-1, 1, 1)
    return {DEFAULT: w, PERSONAL: 1.0 - w}


class FedDPA(SharedAdapterMethod[FedDPAConfig]):
    """FedDPA-T (Yang, Long, Shen, Jiang, Blumenstein, "Dual-Personalizing Adapter for Federated Foundation
    Models", NeurIPS 2024, arXiv 2403.19211).

    Update rule: per round the local adapter l_k (never sent) is trained first through the mix
    a*l_k + (1 - a)*g with the global g detached (a = 0.5), then g alone with CE (a FedIT step); the
    server averages g (weights n_k) within each architecture. Inference is instance-wise: for a test
    prompt x, lambda(x) = 0.5 * mean_k cos(h(x), h(x_k)) over K = 5 local training prompts, h = the last
    prompt token's final hidden state with the local adapter alone, and the model is lambda*g + (1-lambda)*l_k.

    The weight assignment (lambda on the global adapter) follows the official code (GlobalModel_generated.py,
    set_local with the global active); the paper's equation could not be checked. Differences from the
    FedMosaic code: there the global half comes first, the 0.5/0.5 mix is fixed at inference (no
    instance-wise weights) and lora2 appears to be averaged too (methods.md section 1). The official code
    starts the local adapter in round 1 from the round-0 global; here it starts at round 0 from w^0.
    """

    name = "feddpa"
    config_cls = FedDPAConfig
    extra_adapters = (PERSONAL,)
    copy_global_into = (PERSONAL,)
    branches = {"global": {DEFAULT: 1.0}, "local": {PERSONAL: 1.0}}

    def __init__(self, config: FedDPAConfig | None = None) -> None:
        super().__init__(config)
        self.watches: dict[int, TaskValues] = {}  # client -> the watch of the evaluation under way: its lambdas

    def wrap(self, peft_model: nn.Module) -> nn.Module:
        return MixModel(peft_model)

    def client_update(self, ctx: RoundContext, client, payload) -> ClientUpdate:
        client.model.row_mix = None
        load_global(client, payload.arrays)
        cfg = self.config
        batches = client.next_batches(cfg.local_steps)
        n_local = round(cfg.local_fraction * len(batches))
        parts = []
        if n_local:
            set_model_mix(client, {PERSONAL: cfg.local_weight, DEFAULT: 1.0 - cfg.local_weight})
            parts.append(client.train(n_local, batches=batches[:n_local], params=list(adapter_params(client, PERSONAL).values())))
        if batches[n_local:]:
            set_model_mix(client, {DEFAULT: 1.0})
            parts.append(client.train(len(batches) - n_local, batches=batches[n_local:],
                                      params=list(adapter_params(client, DEFAULT).values())))
        set_model_mix(client, {DEFAULT: 1.0})
        return ClientUpdate(client.id, client.adapter.get_state("shared"), client.num_examples, merge_metrics(parts))

    def select_scored_state(self, ctx: RoundContext, client) -> None:
        set_model_mix(client, {DEFAULT: 0.5, PERSONAL: 0.5})  # used only if no reference instance exists
        refs = self.reference_rows(ctx, client)
        model: MixModel = client.model
        model.row_mix = None
        if not refs:
            return
        ref_h = self.prompt_states(client, refs)
        table: dict[tuple[int, ...], float] = {}

        def before_eval(rows: Sequence[Row]) -> None:
            table.clear()
            h = self.prompt_states(client, rows)
            lam = instance_weights(h, ref_h, self.config.max_weight)
            if client.id in self.watches:
                self.watches[client.id].record(lam)
            for key, value in zip(self.prompt_keys(client, rows), lam.tolist()):
                table[key] = value

        def row_mix(input_ids: torch.Tensor, attention_mask: torch.Tensor):
            return inference_mix(prefix_lookup(table, input_ids, attention_mask)) if table else None

        client.before_eval = before_eval
        model.row_mix = row_mix

    def watch_scoring(self, ctx: RoundContext, client) -> TaskValues:
        self.watches[client.id] = TaskValues()
        return self.watches[client.id]

    def diagnostics(
        self, ctx: RoundContext, client, own: Sequence[str], others: Sequence[str], *, final: bool,
        limit: int | None, watch: Any = None, passes: bool = False,
    ) -> dict[str, Any] | None:
        """The global adapter's mean weight lambda on own vs other clients' prompts, under FedMosaic's gate
        keys (``beta_*``: the weight of the global branch), so the gate table and plot read both methods; with
        ``passes``, at the last Others round, Others with each adapter alone (the instance-wise mix set aside)."""
        watch = self.watches.pop(client.id, None)
        if watch is None:
            return None
        out = {"beta_own": watch.mean(own), "beta_others": watch.mean(others)}
        model: MixModel = client.model
        row_mix, before_eval = model.row_mix, client.before_eval
        model.row_mix = client.before_eval = None
        try:
            branches = super().diagnostics(ctx, client, own, others, final=final, limit=limit, passes=passes)
        finally:
            model.row_mix, client.before_eval = row_mix, before_eval
        return {**out, **(branches or {})}

    # ---- instance-wise weights ---------------------------------------------------------------------------
    def reference_rows(self, ctx: RoundContext, client) -> list[Row]:
        """K random instances the client has trained on (its replay memory), seeded per round."""
        items = list(client.stream.memory.items)
        if not items:
            return []
        rng = random.Random(derive_seed(ctx.seed, "feddpa-ref", ctx.round, client.id))
        picks = rng.sample(items, min(self.config.ref_instances, len(items)))
        return client.rows(picks)

    @torch.no_grad()
    def prompt_states(self, client: ClientRuntime, rows: Sequence[Row]) -> torch.Tensor:
        """Final hidden state at each prompt's last token, with the local adapter alone."""
        model = client.model
        out = []
        with model_mix(client, {PERSONAL: 1.0}):
            for start in range(0, len(rows), client.eval_batch_size):
                chunk = rows[start : start + client.eval_batch_size]
                batch = collate(client.arch.loaded, chunk, with_answer=False, padding_side="left")
                pos = position_ids(batch["attention_mask"])
                res = model.peft(**batch, position_ids=pos, output_hidden_states=True, use_cache=False)
                out.append(res.hidden_states[-1][:, -1].float().cpu())
        return torch.cat(out)

    @staticmethod
    def prompt_keys(client: ClientRuntime, rows: Sequence[Row]) -> list[tuple[int, ...]]:
        """Each row's prompt token ids (placeholders expanded), the prefix every scored sequence starts with."""
        from drake.models.batching import encode_prompts

        ids, _ = encode_prompts(rows, client.arch.loaded.processor)
        return [tuple(x) for x in ids]
