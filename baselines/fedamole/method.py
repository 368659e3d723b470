"""FedAMoLE: per-module pools of LoRA experts shared by the clients that hold them, re-assigned every round by
reverse selection (experts pick clients), plus a shared expert and a router averaged over everyone."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from baselines.fedamole.assign import assign_experts
from baselines.fedamole.layer import AMoLEInfo, amole_info, init_expert, inject_amole
from drake.adapters.handle import AdapterHandle, AdapterSpec
from drake.errors import DrakeError, SpecError
from drake.fl.method import Method, MethodConfig, ServerState, group_by_architecture
from drake.fl.types import Arrays, ClientInfo, ClientUpdate, Payload, RoundContext, nbytes
from drake.models.batching import collate
from drake.seeds import derive_seed

ASSIGN_KEY = "fedamole_experts"  # client state: module -> the expert ids in its slots (the scored model's)
PARAMS = ("amole_A", "amole_B", "amole_shared_A", "amole_shared_B", "amole_router")


@dataclass(frozen=True)
class FedAMoLEConfig(MethodConfig):
    """FedAMoLE settings; defaults are the official code's (zyc140345/FedAMoLE main.py) unless noted. The rank
    is the harness's one rank for every method (``lora_r`` = 32, alpha 64; official r = 8, alpha 16): each
    expert is a LoRA of that rank, so the payload grows with the experts a client holds."""

    experts_per_client: float = field(default=6.0, metadata={"help": "pool size per module and architecture E = round(this x clients / expert_choices), clipped to what the bounds allow (official: 30 experts, 10 clients, 2 picks = 6)"})
    expert_choices: int = field(default=2, metadata={"help": "clients each expert picks (at most the architecture's clients)"})
    min_experts: int = field(default=2, metadata={"help": "fewest experts a client holds per module"})
    max_experts: int = field(default=8, metadata={"help": "most experts a client holds per module (expert slots per layer)"})
    top_k: int = field(default=2, metadata={"help": "experts each token is routed to (besides the shared expert)"})
    lb_coef: float = field(default=1e-3, metadata={"help": "load-balance loss weight (lambda x E x <P, f>, summed over modules)"})
    lr_decay: float = field(default=0.99, metadata={"help": "learning rate lr x lr_decay^round (official ExponentialLR)"})
    stats_rows: int = field(default=16, metadata={"help": "rows of the round's training batches whose text tokens give the mean query and keys (official: a 5 percent auxiliary split)"})
    weight_by_examples: bool = field(default=False, metadata={"help": "average experts, shared expert and router weighted by examples (official: plain means)"})

    def __post_init__(self) -> None:
        if min(self.expert_choices, self.min_experts, self.max_experts, self.top_k, self.stats_rows) < 1:
            raise SpecError("fedamole: expert_choices, min_experts, max_experts, top_k and stats_rows must be 1 or more")
        if self.min_experts > self.max_experts:
            raise SpecError(f"fedamole: min_experts {self.min_experts} > max_experts {self.max_experts}; lower min_experts")
        if self.experts_per_client <= 0 or not 0 < self.lr_decay <= 1:
            raise SpecError("fedamole: experts_per_client must be positive and lr_decay in (0, 1]")


@dataclass
class UploadedMeans:
    """The clients' uploaded means per architecture (an object, so the result JSON leaves it out): the keys
    of each expert averaged over its holders, and each client's latest query per module."""

    keys: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # arch -> "<module>.key.<id>" -> mean
    queries: dict[str, dict[int, dict[str, torch.Tensor]]] = field(default_factory=dict)  # arch -> client -> ...


STATS = "fedamole_means"


def pool_size(clients: int, cfg: FedAMoLEConfig) -> int:
    """E: experts per module for an architecture with ``clients`` clients (each client holds E x c / N on
    average, kept within [min_experts, max_experts])."""
    c = min(cfg.expert_choices, clients)
    want = round(cfg.experts_per_client * clients / c)
    low, high = math.ceil(cfg.min_experts * clients / c), math.floor(cfg.max_experts * clients / c)
    return max(1, min(high, max(low, want)))


def holder_mean(arrays: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> Arrays:
    """Key-wise weighted mean over the arrays that contain the key (an expert over the clients holding it),
    in float64, cast back to each tensor's dtype."""
    sums: dict[str, torch.Tensor] = {}
    total: dict[str, float] = {}
    dtypes: dict[str, torch.dtype] = {}
    for a, w in zip(arrays, weights):
        for key, value in a.items():
            sums[key] = sums.get(key, 0) + value.to(torch.float64) * float(w)
            total[key] = total.get(key, 0.0) + float(w)
            dtypes[key] = value.dtype
    return {k: (sums[k] / total[k]).to(dtypes[k]) for k in sums if total[k] > 0}


def expert_key(module: str, expert: int, part: str) -> str:
    return f"{module}.expert.{expert}.{part}"


class FedAMoLE(Method[FedAMoLEConfig]):
    """FedAMoLE (Zhang, Qin, Wu, Hou, Deng, "Personalized Federated Fine-Tuning for LLMs via Data-Driven
    Heterogeneous Model Architectures", arXiv 2411.19128, WWW 2026; code zyc140345/FedAMoLE).

    Model: every targeted text linear layer becomes an HMoLE layer (``layer.py``): a shared LoRA expert, the
    client's experts of that module's pool and a router P; a token routes to its top-2 held experts by
    <A_j x, P x> / sqrt(r), the keys being each expert's own down-projection A_j. Loss: CE + lb_coef x sum over
    modules of |S| <P_mean, f> (Switch load balance; tokens are the attention mask's, the official code also
    counts padding).

    Only the paper's abstract and third-party summaries could be read, so every rule and default below is the
    official code's wherever the summaries are silent; no difference between the two is known.

    Round (all as the official node.py/main.py): the server sends each client the experts it is assigned
    (per module), the shared expert and the router; the client trains all of them (a fresh Adam every round,
    lr x 0.99^round, since slot contents change), then computes, on ``stats_rows`` rows of the round's
    batches, its mean query P x and each held expert's mean key A_j x, and uploads experts (with their ids),
    shared expert, router and those means. The server averages each expert over the clients that hold it, the
    shared expert and the router over all clients, the keys of an expert over its holders, and re-assigns for
    the next round by reverse selection (``assign.py``): S = softmax over clients of K Q^T / sqrt(r), each
    expert picks exactly ``expert_choices`` clients, each client holds ``min_experts``..``max_experts``,
    solved exactly. Round 0 uses random scores. Scored state (official protocol): the client's own HMoLE model
    right after its local training, with the experts it trained.

    DRAKE-specific choices:
    - Mean query and keys over *text* tokens only (attention mask minus image tokens): a LLaVA prompt holds
      16-64 image tokens per image against a short question, and the image tokens would otherwise dominate
      q_i, so the assignment would follow image statistics. Routing itself runs on every token, as in the paper.
    - The statistics use the round's own training rows (the official code holds out a 5% auxiliary split):
      DRAKE's stream shifts every few rounds and re-assignment then tracks the current task.
    - Per-architecture pools: an expert id means nothing across hidden sizes, so each architecture has its own
      pool, its own assignment and averaging; E = round(experts_per_client x N_a / c) keeps the paper's 6
      experts per client on average (30 for 10 clients), c = min(2, N_a). A lone client of an architecture
      holds its whole pool.
    - The official code targets q/v only (PEFT default); here the harness's targets (all text linears) and
      rank apply, as for every method, so experts multiply the payload: a client with k experts per module
      sends about (k + 1) LoRAs of rank r plus the router.
    - With partial participation only the round's clients are assigned; when they cannot take every pick the
      picks are capped (``assign.assignment_bounds``).
    - The paper's optional DP noise on the uploaded means is not implemented.

    What the server learns besides parameters: per module, the client's mean router query P_i x_bar and each
    held expert's mean key A_ij x_bar, where x_bar is the mean text-token input of that layer over the
    statistics rows. The server also receives P_i and A_ij, so these are (k + 1) x r linear measurements of
    x_bar: wherever (k + 1) x r >= the layer's input width it can solve for x_bar exactly (the attention
    inputs of the zoo once a client holds 2-4 experts at r = 32), elsewhere it learns that projection of it.
    """

    name = "fedamole"
    config_cls = FedAMoLEConfig

    def __init__(self, config: FedAMoLEConfig | None = None) -> None:
        super().__init__(config)
        self.modules: dict[str, list[str]] = {}  # architecture -> HMoLE module names (recorded at attach)

    # ---- engine side -----------------------------------------------------------------------------
    def adapter_spec(self) -> AdapterSpec:
        return AdapterSpec(kind="hmole", params={"r": self.config.lora_r, "slots": self.config.max_experts}, shared=("*",))

    def attach(self, model: nn.Module, arch: str) -> tuple[nn.Module, AdapterHandle]:
        cfg = self.config
        info = inject_amole(model, tuple(cfg.lora_targets), slots=cfg.max_experts, r=cfg.lora_r, alpha=cfg.lora_alpha,
                            dropout=cfg.lora_dropout, top_k=cfg.top_k)  # fmt: skip
        self.modules[arch] = list(info.layers)
        names = [f"{name}.{p}" for name in info.layers for p in PARAMS]
        return model, AdapterHandle(model, self.adapter_spec(), trainable=names)

    def compute_cost(self) -> float:
        """Training plus the statistics pass (``stats_rows`` forward-only rows, a third of a training row each).
        In passes, as every method counts: the experts' own arithmetic (keys of every held expert, the two
        chosen experts' B, the shared expert and the router) is not counted. It is negligible beside a real
        model's linear layers, but not on the tiny zoo (hidden 128, r = 32), where the result's
        ``wall_by_phase`` shows the real cost."""
        cfg = self.config
        return 1.0 + cfg.stats_rows / (3.0 * cfg.local_steps * cfg.batch_size)

    # ---- server side -----------------------------------------------------------------------------
    def init_server(self, clients: Mapping[int, ClientInfo]) -> ServerState:
        return ServerState(method_state={"fedamole": {"rounds": []}, STATS: UploadedMeans()})

    def configure_round(self, ctx: RoundContext, server: ServerState) -> dict[int, Payload]:
        """Assign experts for this round per architecture and module, and send each client its experts."""
        t0 = time.perf_counter()
        assignment = self.assign(ctx, server)
        solve = time.perf_counter() - t0
        out = {}
        for cid, per_module in assignment.items():
            pool = server.per_arch.get(ctx.clients[cid].architecture, {})
            arrays: Arrays = {}
            for module, ids in per_module.items():
                for j in ids:
                    for part in ("A", "B"):
                        if expert_key(module, j, part) in pool:
                            arrays[expert_key(module, j, part)] = pool[expert_key(module, j, part)]
                for key in (f"{module}.shared.A", f"{module}.shared.B", f"{module}.router"):
                    if key in pool:
                        arrays[key] = pool[key]
            out[cid] = Payload(arrays, {"experts": per_module})
        self._log_assignment(ctx, server, assignment, solve)
        return out

    def assign(self, ctx: RoundContext, server: ServerState) -> dict[int, dict[str, list[int]]]:
        """client -> module -> the sorted expert ids it holds this round (participants only)."""
        cfg = self.config
        out: dict[int, dict[str, list[int]]] = {cid: {} for cid in ctx.participants}
        for arch in sorted({ctx.clients[c].architecture for c in ctx.participants}):
            if arch not in self.modules:
                raise DrakeError(f"fedamole: no HMoLE modules recorded for {arch!r}; the server's process must attach "
                                 "the architecture (FedAMoLE.attach) before the first round")  # fmt: skip
            n_arch = sum(1 for c in ctx.clients.values() if c.architecture == arch)
            experts = pool_size(n_arch, cfg)
            cids = [c for c in ctx.participants if ctx.clients[c].architecture == arch]
            means: UploadedMeans = server.method_state.setdefault(STATS, UploadedMeans())
            keys, queries = means.keys.get(arch, {}), means.queries.get(arch, {})
            for module in self.modules[arch]:
                scores = self.scores(ctx, keys, queries, arch, module, experts, cids)
                x = assign_experts(scores, cfg.expert_choices, cfg.min_experts, cfg.max_experts)
                for col, cid in enumerate(cids):
                    out[cid][module] = [int(j) for j in torch.nonzero(x[:, col]).flatten().tolist()]
        return out

    def scores(self, ctx: RoundContext, keys: Mapping[str, torch.Tensor], queries: Mapping[int, Mapping[str, torch.Tensor]],
               arch: str, module: str, experts: int, cids: Sequence[int]) -> torch.Tensor:  # fmt: skip
        """S (E x n): softmax over clients of <mean key, mean query> / sqrt(r); a random logit in [0, 1) where a
        mean is missing (round 0, as the official code; later an expert or client without statistics)."""
        rng = random.Random(derive_seed(ctx.seed, "fedamole-dispatch", ctx.round, arch, module))
        logits = torch.tensor([[rng.random() for _ in cids] for _ in range(experts)], dtype=torch.float64)
        have_q = [i for i, c in enumerate(cids) if f"{module}.query" in queries.get(c, {})]
        have_k = [j for j in range(experts) if f"{module}.key.{j}" in keys]
        if have_q and have_k:
            k = torch.stack([keys[f"{module}.key.{j}"] for j in have_k])
            q = torch.stack([queries[cids[i]][f"{module}.query"] for i in have_q])
            dots = k.double() @ q.double().T / math.sqrt(self.config.lora_r)
            logits[torch.tensor(have_k)[:, None], torch.tensor(have_q)[None, :]] = dots
        return torch.softmax(logits, dim=1)

    def aggregate(self, ctx: RoundContext, server: ServerState, updates: Sequence[ClientUpdate]) -> ServerState:
        """Experts over their holders, shared expert and router over all clients, keys over holders, per
        architecture; the clients' mean queries are kept for the next assignment."""
        for arch, group in group_by_architecture(updates, ctx.clients).items():
            weights = [u.num_examples if self.config.weight_by_examples else 1.0 for u in group]
            server.per_arch.setdefault(arch, {}).update(holder_mean([u.arrays for u in group], weights))
            means: UploadedMeans = server.method_state.setdefault(STATS, UploadedMeans())
            queries = means.queries.setdefault(arch, {})
            for u in group:
                queries[u.client_id] = {k: v for k, v in u.side_info.items() if k.endswith(".query")}
            keys = [{k: v for k, v in u.side_info.items() if ".key." in k} for u in group]
            means.keys.setdefault(arch, {}).update(holder_mean(keys, [1.0] * len(group)))
        log = server.method_state["fedamole"]["rounds"][-1] if server.method_state.get("fedamole", {}).get("rounds") else {}
        n = max(1, len(updates))
        log["up_expert_bytes"] = sum(nbytes({k: v for k, v in u.arrays.items() if ".expert." in k}) for u in updates) / n
        log["up_shared_router_bytes"] = sum(nbytes({k: v for k, v in u.arrays.items() if ".expert." not in k}) for u in updates) / n
        log["up_stats_bytes"] = sum(nbytes(u.side_info) for u in updates) / n
        log["load_balance"] = sum(u.metrics.get("load_balance", 0.0) for u in updates) / n
        return server

    def _log_assignment(self, ctx: RoundContext, server: ServerState, assignment: Mapping[int, Mapping[str, list[int]]],
                        solve: float) -> None:  # fmt: skip
        """Per round: experts held per module (mean/min/max), the share of held experts kept from the last
        round, and the assignment's solve time."""
        counts = [len(ids) for per in assignment.values() for ids in per.values()]
        kept = total = 0
        for cid, per in assignment.items():
            before = server.per_client.get(cid, {})
            for module, ids in per.items():
                if module in before:
                    kept += len(set(ids) & set(before[module].tolist()))
                    total += len(ids)
            server.per_client[cid] = {m: torch.tensor(ids, dtype=torch.long) for m, ids in per.items()}
        server.method_state.setdefault("fedamole", {"rounds": []})["rounds"].append({
            "round": ctx.round + 1, "experts_held_mean": sum(counts) / max(1, len(counts)),
            "experts_held_min": min(counts, default=0), "experts_held_max": max(counts, default=0),
            "kept_fraction": kept / total if total else None, "solve_seconds": solve,
        })  # fmt: skip

    # ---- client side -----------------------------------------------------------------------------
    def client_update(self, ctx: RoundContext, client: Any, payload: Payload) -> ClientUpdate:
        cfg = self.config
        info = amole_info(client.model)
        assignment = {m: [int(j) for j in ids] for m, ids in payload.config.get("experts", {}).items()}
        self.load(ctx, client, info, assignment, payload.arrays)
        client.state.method_state[ASSIGN_KEY] = assignment
        client.state.optimizer = None  # slot contents change every round: a fresh Adam (official)
        batches = client.next_batches(cfg.local_steps)
        lb_values: list[float] = []

        def load_balance(_client: Any) -> torch.Tensor:
            terms, info.context.lb = info.context.lb or [], []
            if not terms:
                return torch.zeros(())
            total = torch.stack(terms).sum()
            lb_values.append(float(total.detach()))
            return cfg.lb_coef * total

        info.context.lb = []
        try:
            lr = client.lr * cfg.lr_decay**ctx.round
            metrics = client.train(len(batches), batches=batches, extra_loss=load_balance, lr_groups={"*": lr})
        finally:
            info.context.lb = None
        client.state.optimizer = None
        per_module = sum(lb_values) / len(lb_values) / len(info.layers) if lb_values else 0.0
        metrics["load_balance"] = per_module  # 1.0 when routing is balanced
        rows = [r for b in batches for r in b][: cfg.stats_rows]
        extras = self.statistics(client, info, assignment, rows)
        return ClientUpdate(client.id, self.upload(info, assignment), client.num_examples, metrics, extras)

    def load(self, ctx: RoundContext, client: Any, info: AMoLEInfo, assignment: Mapping[str, list[int]],
             arrays: Mapping[str, torch.Tensor]) -> None:  # fmt: skip
        """Assigned experts into the slots (a fresh seeded init for an expert nobody has trained yet), then the
        shared expert and router when the payload has them (round 0: the common initial ones)."""
        for module, layer in info.layers.items():
            experts = []
            for j in assignment.get(module, []):
                a, b = arrays.get(expert_key(module, j, "A")), arrays.get(expert_key(module, j, "B"))
                experts.append((a, b) if a is not None and b is not None
                               else init_expert(ctx.seed, client.architecture, module, j, layer))  # fmt: skip
            layer.load_slots(experts)
            _load_shared(module, layer, arrays)

    @staticmethod
    def upload(info: AMoLEInfo, assignment: Mapping[str, list[int]]) -> Arrays:
        """Held experts under their ids, the shared expert and the router (detached CPU copies)."""
        out: Arrays = {}
        for module, layer in info.layers.items():
            for s, j in enumerate(assignment.get(module, [])):
                out[expert_key(module, j, "A")] = layer.amole_A[s].detach().to("cpu", copy=True)
                out[expert_key(module, j, "B")] = layer.amole_B[s].detach().to("cpu", copy=True)
            out[f"{module}.shared.A"] = layer.amole_shared_A.detach().to("cpu", copy=True)
            out[f"{module}.shared.B"] = layer.amole_shared_B.detach().to("cpu", copy=True)
            out[f"{module}.router"] = layer.amole_router.detach().to("cpu", copy=True)
        return out

    @torch.no_grad()
    def statistics(self, client: Any, info: AMoLEInfo, assignment: Mapping[str, list[int]],
                   rows: Sequence[Any]) -> dict[str, torch.Tensor]:  # fmt: skip
        """Mean query (``<module>.query``) and each held expert's mean key (``<module>.key.<id>``) over the text
        tokens of ``rows`` (attention mask minus image tokens), with the trained model."""
        if not rows:
            return {}
        model, ctx = client.model, info.context
        model.eval()
        ctx.stats = {}
        try:
            for start in range(0, len(rows), client.eval_batch_size):
                inputs = collate(client.arch.loaded, rows[start : start + client.eval_batch_size], with_answer=True)
                inputs.pop("labels", None)
                ids, mask = inputs["input_ids"], inputs["attention_mask"].bool()
                ctx.text_mask = mask & (ids != info.image_token_id) if info.image_token_id is not None else mask
                model(**inputs)
            sums = ctx.stats
        finally:
            ctx.stats, ctx.text_mask = None, None
        out: dict[str, torch.Tensor] = {}
        for module, (q, k, n) in sums.items():
            if not n:
                continue
            out[f"{module}.query"] = (q / n).float().cpu()
            for s, j in enumerate(assignment.get(module, [])):
                out[f"{module}.key.{j}"] = (k[s] / n).float().cpu()
        return out

    def load_server_model(self, ctx: RoundContext, client: Any, server: ServerState) -> None:
        """Under a ``server`` protocol: the server's averages of the experts the client trained with, and of
        the shared expert and router."""
        info = amole_info(client.model)
        held = client.state.method_state.get(ASSIGN_KEY, {})
        pool = server.per_arch.get(client.architecture, {})
        for module, layer in info.layers.items():
            with torch.no_grad():
                for s, j in enumerate(held.get(module, [])):
                    for part, param in (("A", layer.amole_A), ("B", layer.amole_B)):
                        if expert_key(module, j, part) in pool:
                            param[s].copy_(pool[expert_key(module, j, part)].to(param.device, param.dtype))
            _load_shared(module, layer, pool)

    def select_scored_state(self, ctx: RoundContext, client: Any) -> None:
        """The client's HMoLE model with the experts it trained last (its slots, as saved)."""
        info = amole_info(client.model)
        held = client.state.method_state.get(ASSIGN_KEY, {})
        info.context.lb, info.context.stats = None, None
        for module, layer in info.layers.items():
            layer.held = len(held.get(module, []))


@torch.no_grad()
def _load_shared(module: str, layer: Any, arrays: Mapping[str, torch.Tensor]) -> None:
    """The shared expert and the router of ``module`` from ``arrays``, where present."""
    for key, param in ((".shared.A", layer.amole_shared_A), (".shared.B", layer.amole_shared_B),
                       (".router", layer.amole_router)):  # fmt: skip
        if module + key in arrays:
            param.copy_(arrays[module + key].to(param.device, param.dtype))
