"""FedMKT: mutual knowledge transfer between the architectures' models through their output distributions on
public rows, token-aligned across tokenizers and selected per row by DualMinCE."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from baselines._distill import answer_logits
from baselines._public import FORWARD, PublicData, epoch_batches, log_server_units, server_runtime
from baselines._token_align import TokenAligner, dense
from drake.errors import SpecError
from drake.fl.client import ArchModel, ClientRuntime, Row
from drake.fl.method import Method, MethodConfig, ServerState
from drake.fl.types import Arrays, ClientInfo, ClientUpdate, Payload, RoundContext
from drake.models.batching import IGNORE_INDEX, collate

SERVER_MODELS = ("per_arch", "largest")
PREFIX = "fedmkt."


@dataclass(frozen=True)
class FedMKTConfig(MethodConfig):
    """FedMKT settings. Budget: FedMosaic runs FedMKT at 60 of SFT's 100 iterations of 4 per round -> 12 of
    ``local``'s 20 steps of 8 here. Each round a client also distils one epoch (FATE-LLM's
    ``client_public_data_local_epoch = 1``) over the first ``kd_samples`` public rows and runs one forward over
    them to upload its knowledge; each server model distils one epoch over them. FedMosaic exchanges at most 80
    public rows a round against SFT's 400 private samples; the harness's budget rule (SFT 20 x 8 = 160 samples,
    x 0.4, as FedDF's server steps) scales that to 32, so the public passes keep the official share of a round's
    compute (about 0.87 of Local's, as in FedMosaic's budget)."""

    local_steps: int = field(default=12, metadata={"help": "private optimizer steps per client per round (FedMosaic: 60 of SFT's 100 -> 12 of 20)"})
    kd_samples: int = field(default=32, metadata={"help": "public rows whose outputs are exchanged and distilled on (the first rows of the public split; FedMosaic: 80 of 400 samples a round -> 32 of 160; 0 = no transfer, i.e. local)"})
    kd_batch: int = field(default=16, metadata={"help": "public rows per distillation step (and per forward batch)"})
    client_kd_epochs: int = field(default=1, metadata={"help": "client passes over the public rows per round, distilling from its server model (FATE-LLM: 1)"})
    server_kd_epochs: int = field(default=1, metadata={"help": "server passes over the public rows per round and server model (FATE-LLM: 1)"})
    kd_lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate of every public-row distillation, server and client (a separate optimizer state from the private training's, as FATE-LLM's pub_optimizer)"})
    kd_temperature: float = field(default=1.0, metadata={"help": "softmax temperature of the exchanged distributions (FATE-LLM: 1)"})
    top_k: int = field(default=128, metadata={"help": "logits kept per answer position on the wire (FATE-LLM: 128; 0 = the whole vocabulary)"})
    lm_weight: float = field(default=0.0, metadata={"help": "lambda in lambda * CE(public answers) + (1 - lambda) * distillation (FATE-LLM's kd_alpha: 0; FuseLLM: 0.9)"})
    server_models: str = field(default="per_arch", metadata={"help": "per_arch: a server model per architecture, its clients' teacher (FedMosaic); largest: one server model, the largest architecture, every client's teacher (the paper's one LLM)"})  # fmt: skip

    def __post_init__(self) -> None:
        if self.server_models not in SERVER_MODELS:
            raise SpecError(f"fedmkt: server_models={self.server_models!r} is not one of {', '.join(SERVER_MODELS)}")
        for key in ("kd_samples", "client_kd_epochs", "server_kd_epochs", "top_k"):
            if getattr(self, key) < 0:
                raise SpecError(f"fedmkt: {key}={getattr(self, key)} must be >= 0")
        if self.kd_batch < 1 or self.kd_temperature <= 0 or self.kd_lr <= 0:
            raise SpecError("fedmkt: kd_batch must be >= 1 and kd_temperature, kd_lr > 0")
        if not 0.0 <= self.lm_weight <= 1.0:
            raise SpecError(f"fedmkt: lm_weight={self.lm_weight} must be in [0, 1]")


# ------------------------------------------------------------------------------------------- knowledge


@dataclass
class Knowledge:
    """A model's outputs on public rows: per row its answer's gold token ids, the top-k logits (and their ids)
    at each answer position, and the row's mean answer cross-entropy (what DualMinCE compares)."""

    gold: list[torch.Tensor]
    top_ids: list[torch.Tensor]
    top_logits: list[torch.Tensor]
    ce: torch.Tensor

    def pack(self) -> Arrays:
        """The arrays on the wire (int32 ids, float32 logits)."""
        return {
            f"{PREFIX}lengths": torch.tensor([len(g) for g in self.gold], dtype=torch.int32),
            f"{PREFIX}gold": torch.cat(self.gold).to(torch.int32),
            f"{PREFIX}top_ids": torch.cat(self.top_ids).to(torch.int32),
            f"{PREFIX}top_logits": torch.cat(self.top_logits).float(),
            f"{PREFIX}ce": self.ce.float(),
        }

    @classmethod
    def unpack(cls, arrays: Mapping[str, torch.Tensor] | None) -> Knowledge | None:
        if not arrays or f"{PREFIX}lengths" not in arrays:
            return None
        sizes = [int(n) for n in arrays[f"{PREFIX}lengths"]]
        split = lambda key: list(torch.split(arrays[f"{PREFIX}{key}"], sizes))  # noqa: E731
        gold = [g.long() for g in split("gold")]
        return cls(gold, [t.long() for t in split("top_ids")], split("top_logits"), arrays[f"{PREFIX}ce"].float())

    def dense(self, row: int, width: int, temperature: float) -> torch.Tensor:
        """Row ``row``'s distributions on the model's own vocabulary (no alignment)."""
        return dense(self.top_ids[row], self.top_logits[row], width, temperature)


@torch.no_grad()
def knowledge(am: ArchModel, rows: Sequence[Row], batch: int, top_k: int) -> tuple[Knowledge, list[torch.Tensor]]:
    """``am``'s knowledge on ``rows`` with its current adapter, and the full answer-position logits per row."""
    am.model.eval()
    gold, ids, values, ce, full = [], [], [], [], []
    for start in range(0, len(rows), batch):
        chunk = list(rows[start : start + batch])
        inputs = collate(am.loaded, chunk, with_answer=True)
        logits = am.model(**inputs).logits
        labels = inputs["labels"][:, 1:]
        for i in range(len(chunk)):
            mask = labels[i] != IGNORE_INDEX
            lg, g = logits[i, :-1][mask].float().cpu(), labels[i][mask].cpu()
            top = lg.topk(min(top_k, lg.shape[-1]) if top_k > 0 else lg.shape[-1], dim=-1)
            gold.append(g)
            ids.append(top.indices)
            values.append(top.values)
            ce.append(F.cross_entropy(lg, g))
            full.append(lg)
    return Knowledge(gold, ids, values, torch.stack(ce) if ce else torch.zeros(0)), full


def dual_min_ce(own: torch.Tensor, others: Mapping[int, torch.Tensor]) -> list[int | None]:
    """DualMinCE per row: the source with the lowest CE (ties: the lowest key), kept only where it is lower
    than the receiving model's own CE (None: the model keeps its own distribution)."""
    out: list[int | None] = []
    keys = sorted(others)
    for r in range(len(own)):
        best = min(keys, key=lambda k: (float(others[k][r]), k)) if keys else None
        out.append(best if best is not None and float(others[best][r]) < float(own[r]) else None)
    return out


def soft_kl(student: torch.Tensor, target: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """T^2 * KL(target || softmax(student / T)) for probability targets, averaged over positions."""
    log_p = F.log_softmax(student.float() / temperature, dim=-1)
    q = target.to(log_p.device)
    kl = (torch.special.xlogy(q, q) - q * log_p).sum(-1)
    return kl.mean() * temperature**2 if kl.numel() else student.sum() * 0.0


# ---------------------------------------------------------------------------------------------- method


class FedMKT(PublicData, Method[FedMKTConfig]):
    """FedMKT (Fan, Ma, Kang, Gu, Song, Fan, Chen, Yang, "FedMKT: Federated Mutual Knowledge Transfer for Large
    and Small Language Models", COLING 2025, arXiv 2406.02224; code: FATE-LLM ``algo/fedmkt``).

    Update rule, per round. Client k: (1) distils from its server model's knowledge of the last round,
    token-aligned to its tokenizer (baselines/_token_align.py), one epoch over the public rows; (2) trains
    ``local_steps`` on its private data; (3) uploads its knowledge on the public rows: per answer position the
    top-k logits, per row its answer CE. Its adapter never leaves it (no parameter averaging). Server, per
    server model s: aligns every upload to s's tokenizer, picks per row by DualMinCE (the client with the
    lowest CE, if lower than s's own; else s's own distribution, as FATE-LLM's ``distill_strategy=greater``),
    distils s one epoch with ``lm_weight * CE + (1 - lm_weight) * KL(target || s)``, then sends its new
    knowledge back. A client distils the same way: the server's row where its CE is lower, else its own.

    Mapping onto the benchmark (the paper has one server LLM and K client SLMs): ``server_models=per_arch``
    (default, FedMosaic's adaptation) keeps a server model per architecture of the pool, taught by every
    client and teaching its architecture's clients, so knowledge moves between the architectures' models;
    ``largest`` keeps the paper's single server LLM (the pool's largest architecture). Server models start
    from the architecture's initial adapter and learn only on public rows.

    Choices where the paper is silent (config keys): the loss mix ``lm_weight`` (0: pure distillation, as
    FATE-LLM's default ``kd_alpha`` and FedMosaic's soft-target CE), top-k = 128 and T = 1 (FATE-LLM),
    one epoch per side (FATE-LLM), ``kd_lr`` = 1e-3 for every distillation, with its own AdamW state on a
    client (FedDF's lr here; at the client lr 2e-3 the first Adam steps from a server model's zero LoRA B
    overshot: the KL to the targets rose). Unlike FedMosaic's adaptation, tokens are aligned by the paper's
    MinED + sequence alignment (FedMosaic: a fixed vocabulary file; the tiny zoo shares one tokenizer, where
    the alignment is the identity, tests/test_fedmkt.py checks both) and a client's teacher is always its
    server model. The step order is the paper's shifted by a round boundary:
    the distillation from the server that ends round t runs at the start of client k's turn in round t+1,
    so a client is scored (official protocol) right after its private training, on its own adapter; no server
    model is ever a client's, so it is scored on its own adapter under every protocol. Clients of one
    architecture are never averaged: the paper's homogeneous recipe (FATE-LLM's ``post_fedavg``, "4-SLMs
    homogeneous") FedAvgs the client SLMs' LoRA after each round; this harness follows FedMosaic's adaptation,
    where each client keeps only its own adapter and knowledge moves through the server models alone.

    Compute: per client and round ``local_steps x batch_size`` private examples, ``client_kd_epochs x
    kd_samples`` distilled public examples and one forward over the public rows (``compute_ratio_to_local``;
    the first round has no server knowledge yet). The server's distillation is recorded per round in the
    result's ``extra.method.fedmkt`` (steps and forwards in example-pass units, its ratio to the round's
    client training, rows taken from clients, KL to the targets before and after).
    """

    name = "fedmkt"
    config_cls = FedMKTConfig

    def __init__(self, config: FedMKTConfig | None = None) -> None:
        super().__init__(config)
        self._init_public()
        self._initial: dict[str, Arrays] = {}
        self._aligners: dict[tuple[str, str], TokenAligner] = {}

    def public_size(self) -> int:
        return self.config.kd_samples

    def bind(self, archs: Mapping[str, ArchModel], data_dir: Path | None) -> None:
        super().bind(archs, data_dir)
        self._initial = {a: m.adapter.get_state("shared") for a, m in self._archs.items()}

    # ---- compute accounting --------------------------------------------------------------------------
    def compute_ratio_to_local(self) -> float:
        """(private examples + distilled public examples + forward units of the upload) per round, relative to
        ``local``'s 20 x 8 (steady state: round 1 has no server knowledge to distil)."""
        cfg, ref = self.config, MethodConfig()
        own = cfg.local_steps * cfg.batch_size + (cfg.client_kd_epochs + FORWARD) * cfg.kd_samples
        return float(own / (ref.local_steps * ref.batch_size))

    # ---- helpers -------------------------------------------------------------------------------------
    def teachers(self, clients: Mapping[int, ClientInfo]) -> dict[int, str]:
        """Each client's server model (an architecture name)."""
        archs = sorted({c.architecture for c in clients.values()})
        if self.config.server_models == "per_arch":
            return {cid: c.architecture for cid, c in clients.items()}
        size = {a: sum(p.numel() for p in self._archs[a].loaded.model.parameters()) if a in self._archs else 0
                for a in archs}  # fmt: skip
        largest = max(archs, key=lambda a: (size[a], a))
        return {cid: largest for cid in clients}

    def aligner(self, src: str, tgt: str) -> TokenAligner:
        if (src, tgt) not in self._aligners:
            self._aligners[src, tgt] = TokenAligner(self._archs[src].loaded.tokenizer, self._archs[tgt].loaded.tokenizer)
        return self._aligners[src, tgt]

    def targets(
        self, arch: str, own: Knowledge, sources: Mapping[int, tuple[str, Knowledge]]
    ) -> tuple[list[torch.Tensor], int]:
        """Per public row the distribution model ``arch`` distils toward (DualMinCE over ``sources``, aligned to
        its tokenizer) and the number of rows taken from a source."""
        width = self._archs[arch].loaded.model.get_output_embeddings().weight.shape[0]
        t = self.config.kd_temperature
        choice = dual_min_ce(own.ce, {k: kn.ce for k, (_, kn) in sources.items()})
        out = []
        for r, k in enumerate(choice):
            if k is None:
                out.append(own.dense(r, width, t))
            else:
                src, kn = sources[k]
                out.append(self.aligner(src, arch)(kn.gold[r], kn.top_ids[r], kn.top_logits[r], own.gold[r], width, t))
        return out, sum(k is not None for k in choice)

    def distill(self, rt: ClientRuntime, rows: Sequence[Row], targets: Sequence[torch.Tensor], epochs: int) -> dict[str, float]:
        """``epochs`` passes of ``lm_weight * CE + (1 - lm_weight) * KL(target || model)`` over ``rows``."""
        cfg = self.config
        by_row = {id(r): t for r, t in zip(rows, targets)}
        lam = cfg.lm_weight

        def loss_fn(client: ClientRuntime, chunk: Sequence[Row]) -> torch.Tensor:
            inputs = collate(client.arch.loaded, chunk, with_answer=True)
            out = client.model(**inputs)
            student = answer_logits(out.logits, inputs["labels"])
            kd = soft_kl(student, torch.cat([by_row[id(r)] for r in chunk]), cfg.kd_temperature)
            return kd if lam == 0 else lam * out.loss + (1 - lam) * kd

        batches = epoch_batches(rows, cfg.kd_batch, epochs)
        if not batches:
            return {"loss": float("nan"), "steps": 0.0, "examples": 0.0}
        return rt.train(len(batches), batches=batches, params=rt.adapter.parameters("shared"), loss_fn=loss_fn,
                        lr_groups={"*": cfg.kd_lr})  # fmt: skip

    # ---- server side ---------------------------------------------------------------------------------
    def configure_round(self, ctx: RoundContext, server: ServerState) -> dict[int, Payload]:
        """Each client's server knowledge (empty in round 1), its server model's name and the public rows
        (public data every party holds, as in the paper: not counted as communication; a node of the process
        or Flower engine has no data directory to read them from)."""
        teacher = self.teachers(ctx.clients)
        rows = self.public_rows()[: self.config.kd_samples] if self.config.kd_samples > 0 else []
        return {cid: Payload(dict(server.per_client.get(cid, {})), {"teacher": teacher[cid], "public": rows})
                for cid in ctx.participants}  # fmt: skip

    def aggregate(self, ctx: RoundContext, server: ServerState, updates: Sequence[ClientUpdate]) -> ServerState:
        cfg = self.config
        rows = self.public_rows()[: cfg.kd_samples] if cfg.kd_samples > 0 else []
        sources = {u.client_id: (ctx.clients[u.client_id].architecture, Knowledge.unpack(u.side_info)) for u in updates}
        sources = {k: (a, kn) for k, (a, kn) in sources.items() if kn is not None and len(kn.ce) == len(rows)}
        if not rows or not self._archs or not sources:
            return server
        teacher = self.teachers(ctx.clients)
        units, log = 0.0, {}
        for arch in sorted(set(teacher.values())):
            am = self._archs[arch]
            am.adapter.set_state(server.per_arch.get(arch) or self._initial[arch])
            own, full = knowledge(am, rows, cfg.kd_batch, cfg.top_k)
            targets, taken = self.targets(arch, own, sources)
            rt = server_runtime(ctx, am, tag=f"fedmkt-kd-{arch}", lr=cfg.kd_lr, max_grad_norm=cfg.max_grad_norm,
                                batch_size=cfg.kd_batch)  # fmt: skip
            metrics = self.distill(rt, rows, targets, cfg.server_kd_epochs)
            server.per_arch[arch] = am.adapter.get_state("shared")
            new, new_full = knowledge(am, rows, cfg.kd_batch, cfg.top_k)
            packed = new.pack()
            for cid, t in teacher.items():
                if t == arch:
                    server.per_client[cid] = packed
            units += 2 * FORWARD * len(rows) + metrics["examples"]
            log[arch] = {"rows_from_clients": float(taken), "steps": metrics["steps"],
                         "kl_before": _mean_kl(full, targets, cfg.kd_temperature),
                         "kl_after": _mean_kl(new_full, targets, cfg.kd_temperature)}  # fmt: skip
        client_units = sum(float(u.metrics.get("compute_units", u.metrics.get("examples", 0.0))) for u in updates)
        log_server_units(server, "fedmkt", ctx, log, units, client_units)
        return server

    # ---- client side ---------------------------------------------------------------------------------
    def client_update(self, ctx: RoundContext, client: ClientRuntime, payload: Payload) -> ClientUpdate:
        cfg = self.config
        rows = list(payload.config.get("public", []))
        units, kd = 0.0, {}
        server_kn = Knowledge.unpack(payload.arrays)
        if rows and server_kn is not None and cfg.client_kd_epochs > 0 and len(server_kn.ce) == len(rows):
            own = Knowledge.unpack(client.state.method_state.get("fedmkt"))
            if own is None or len(own.ce) != len(rows):  # not uploaded before: its knowledge now
                own, _ = knowledge(client.arch, rows, cfg.kd_batch, cfg.top_k)
                units += FORWARD * len(rows)
            targets, taken = self.targets(client.architecture, own, {0: (payload.config["teacher"], server_kn)})
            res = self.distill(client, rows, targets, cfg.client_kd_epochs)
            kd = {"kd_loss": res["loss"], "kd_steps": res["steps"], "kd_examples": res["examples"],
                  "kd_rows_from_server": float(taken)}  # fmt: skip
            units += res["examples"]
        metrics = client.train(cfg.local_steps)
        units += metrics["examples"]
        extras: Arrays = {}
        if rows:
            mine, _ = knowledge(client.arch, rows, cfg.kd_batch, cfg.top_k)
            extras = mine.pack()
            client.state.method_state["fedmkt"] = extras  # its knowledge at upload = its own targets next round
            units += FORWARD * len(rows)
        return ClientUpdate(client.id, {}, client.num_examples, {**metrics, **kd, "compute_units": units}, extras)


def _mean_kl(logits: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], temperature: float) -> float:
    """KL(target || model) averaged over every answer position of every row."""
    if not logits:
        return 0.0
    return float(soft_kl(torch.cat(list(logits)), torch.cat(list(targets)), temperature)) / temperature**2
