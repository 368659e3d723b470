"""Mosaic: per-client generators, task experts fused by a meta model, data-free distillation into the global."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from baselines._public import logged_compute_scale
from baselines.fedavg import FedAvg
from baselines.mosaic.generator import GanSettings, Generator, GenShape, sample_items, train_generator
from baselines.mosaic.items import (
    Frame,
    Items,
    embedding_matrix,
    encoder,
    frame_of,
    prefix_states,
    real_items,
    score_items,
)
from baselines.mosaic.meta import expert_inputs, kd_loss, kl_rows, prototypes, task_experts, train_meta
from drake.errors import SpecError
from drake.fl.client import ArchModel, ClientRuntime, ClientState, state_sha256
from drake.fl.method import MethodConfig, ServerState
from drake.fl.types import ClientInfo, ClientUpdate, Payload, RoundContext, nbytes
from drake.seeds import derive_seed

#: compute units (Method.compute_cost's convention): a forward pass costs 1/3 of a forward+backward
FORWARD = 1.0 / 3.0
JSD_MIX = ("probs", "logits")


@dataclass(frozen=True)
class MosaicConfig(MethodConfig):
    """Mosaic settings. Clients train as FedAvg (``local``'s 20 x 8). Defaults scaled to the tiny zoo where the
    paper's (CIFAR, ResNet-18, 10 clients) would cost more than the whole run; each says which."""

    gen_steps: int = field(default=20, metadata={"help": "adversarial steps per task generator (paper: 200 epochs of a DCGAN; here the generator starts at its data's moments, so its text logits stay near the task's per-slot token frequencies)"})
    gen_batch: int = field(default=8, metadata={"help": "samples per generator step (real and generated)"})
    gen_lr: float = field(default=2e-3, metadata={"help": "generator/discriminator Adam lr, betas (0.5, 0.999) (paper: 2e-4 over 200 epochs)"})
    gen_nz: int = field(default=32, metadata={"help": "noise size (paper: 100)"})
    gen_hidden: int = field(default=128, metadata={"help": "generator and discriminator width"})
    gen_div_weight: float = field(default=5.0, metadata={"help": "DeGAN diversity weight d on sum_k pbar_k log pbar_k (paper code: 5)"})
    gen_entropy_weight: float = field(default=0.0, metadata={"help": "DeGAN entropy weight c (paper code: 0)"})
    gen_max_rows: int = field(default=512, metadata={"help": "real rows of a task a generator is trained on (most recent first)"})
    prompt_tokens: int = field(default=16, metadata={"help": "prompt slots of a sample (a real prompt keeps its last ones)"})
    option_tokens: int = field(default=3, metadata={"help": "most token slots per option (answer text + end-of-answer)"})
    open_choices: int = field(default=4, metadata={"help": "options given to an open-ended task's samples (its answer + others of the task on the client)"})
    proto_k: int = field(default=10, metadata={"help": "k-means clusters per task and answer position (paper: cluster_k = 10)"})
    proto_min_members: int = field(default=3, metadata={"help": "k: fewest real samples averaged into a prototype, and fewest of them that must share a token id at a slot for the id to be uploaded (in a prototype, and in the generator's starting table over the task's rows)"})
    proto_topk: int = field(default=4, metadata={"help": "most token ids kept per prototype slot (the most common of those shared by proto_min_members samples)"})
    meta_epochs: int = field(default=30, metadata={"help": "meta-model epochs of 5 full passes over all prototypes (paper: 30 x 5; the released trainer steps only on each epoch's first batch)"})
    meta_lr: float = field(default=1e-3, metadata={"help": "meta-model Adam lr (paper: 1e-3)"})
    meta_ema: float = field(default=0.99, metadata={"help": "EMA decay of the teacher copy (paper: 0.99)"})
    meta_width: int = field(default=0, metadata={"help": "meta transformer width (0: K_max^2 with K_max heads, the paper's C^2 and C)"})
    meta_heads: int = field(default=0, metadata={"help": "meta transformer heads (0: K_max, or 4 when meta_width is set)"})
    meta_ffn: int = field(default=0, metadata={"help": "meta transformer feed-forward width (0: 4 x width; released: torch's 2048 for width 100)"})
    meta_dropout: float = field(default=0.2, metadata={"help": "meta transformer dropout (paper: 0.2)"})
    kd_steps: int = field(default=10, metadata={"help": "distillation steps per architecture per event (paper: 1500; 0 = FedAvg only)"})
    kd_per_generator: int = field(default=2, metadata={"help": "samples each generator gives a distillation step (paper: 32)"})
    kd_eval_samples: int = field(default=8, metadata={"help": "held-out samples per generator on which the student-teacher KL is logged before and after"})
    kd_lr: float = field(default=2e-3, metadata={"help": "distillation Adam lr (the harness's client lr; paper: 1e-4 for a full ResNet-18 on CIFAR-10)"})
    kd_max_grad_norm: float = field(default=0.0, metadata={"help": "gradient clipping of the server's distillation (0 = none, as the released code)"})
    kd_temperature: float = field(default=1.0, metadata={"help": "softmax temperature T (paper: 1)"})
    kd_kl: float = field(default=0.8, metadata={"help": "weight of T^2 KL(teacher || student) (paper: 0.8)"})
    kd_ce: float = field(default=0.2, metadata={"help": "weight of CE on the teacher's argmax (paper: 0.2)"})
    kd_jsd: float = field(default=1.0, metadata={"help": "weight of the Jensen-Shannon divergence (paper: 1.0)"})
    jsd_mix: str = field(default="probs", metadata={"help": "probs: JSD's mixture of the two distributions (the definition); logits: of their logits (the released code)"})
    static_distill_frac: float = field(default=0.4, metadata={"help": "static scenarios distil once, after this fraction of the rounds (paper code: round 40 of 100)"})
    distill_final: bool = field(default=False, metadata={"help": "also distil after the last round (only a server-global protocol scores it)"})
    cross_arch: bool = field(default=True, metadata={"help": "one teacher for all architectures sharing vision tower and tokenizer (false: per architecture)"})
    score_batch: int = field(default=32, metadata={"help": "samples per scoring forward on the server (x options sequences)"})

    def __post_init__(self) -> None:
        if self.jsd_mix not in JSD_MIX:
            raise SpecError(f"mosaic: jsd_mix={self.jsd_mix!r} is not one of {', '.join(JSD_MIX)}")
        for key in ("gen_steps", "kd_steps", "meta_epochs", "meta_width", "meta_heads", "meta_ffn", "kd_eval_samples"):
            if getattr(self, key) < 0:
                raise SpecError(f"mosaic: {key}={getattr(self, key)} must be >= 0")
        for key in ("gen_batch", "gen_nz", "gen_hidden", "prompt_tokens", "option_tokens", "proto_k", "proto_min_members",
                    "proto_topk", "kd_per_generator", "score_batch", "gen_max_rows"):  # fmt: skip
            if getattr(self, key) < 1:
                raise SpecError(f"mosaic: {key}={getattr(self, key)} must be >= 1")
        if self.open_choices < 2:
            raise SpecError(f"mosaic: open_choices={self.open_choices} must be >= 2")
        if not 0 < self.static_distill_frac <= 1 or not 0 <= self.meta_ema < 1:
            raise SpecError("mosaic: static_distill_frac must be in (0, 1] and meta_ema in [0, 1)")
        if self.kd_max_grad_norm < 0:
            raise SpecError(f"mosaic: kd_max_grad_norm={self.kd_max_grad_norm} must be >= 0 (0 = no clipping)")
        if min(self.gen_lr, self.meta_lr, self.kd_lr, self.kd_temperature) <= 0:
            raise SpecError("mosaic: gen_lr, meta_lr, kd_lr and kd_temperature must be > 0")


@dataclass
class Upload:
    """What the server keeps of one client's task: its generator (uploaded once) and its prototypes."""

    arch: str
    shape: GenShape
    generator: dict[str, torch.Tensor]
    prototypes: Items | None
    #: clusters the client dropped (no k-anonymous token left to score); from its log, not its upload
    dropped: int = 0


class MosaicStore:
    """Server memory across rounds (a plain object, so result files keep none of its tensors)."""

    def __init__(self) -> None:
        self.uploads: dict[tuple[int, str], Upload] = {}
        self.counts: dict[int, dict[str, float]] = {}


def pack_upload(task: str, gen: Generator, protos: Items | None) -> dict[str, torch.Tensor]:
    """A task's generator weights, shape and prototypes as ClientUpdate side_info (``gen/<task>/...``,
    ``proto/<task>/...``)."""
    out = {f"gen/{task}/{k}": v.detach().clone() for k, v in gen.state_dict().items()}
    out[f"gen/{task}/shape"] = gen.shape.to_tensor()
    if protos is not None:
        out.update(protos.to_arrays(f"proto/{task}"))
    return out


def unpack_uploads(extras: Mapping[str, torch.Tensor], arch: str) -> dict[str, Upload]:
    """The inverse of ``pack_upload`` for every task in ``extras``."""
    tasks = sorted({k.split("/")[1] for k in extras if k.startswith("gen/") and k.endswith("/shape")})
    out = {}
    for task in tasks:
        prefix = f"gen/{task}/"
        state = {k[len(prefix) :]: v for k, v in extras.items() if k.startswith(prefix) and k != f"{prefix}shape"}
        protos = Items.from_arrays(dict(extras), f"proto/{task}") if f"proto/{task}/visual" in extras else None
        out[task] = Upload(arch, GenShape.from_tensor(extras[f"{prefix}shape"]), state, protos)
    return out


class Mosaic(FedAvg):
    """Mosaic (Liu et al., "Mosaic: Data-Free Knowledge Distillation via Mixture-of-Experts for Heterogeneous
    Distributed Environments", arXiv 2505.19699; code Wings-Of-Disaster/Mosaic).

    Update rule. Clients train as in FedAvg from their architecture's global (the paper's local steps; its
    personalisation here is the global after distillation + these local steps, and a client is scored on
    that, the official protocol). Each round a client uploads its adapter and its per-task sample counts
    n_ic (the paper's label counts). When one of its tasks ends (dynamic: the last round of the task's stage;
    static: the distillation round) it trains a generator of that task's data and uploads it once, with the
    task's prototypes. The server averages adapters per architecture (FedAvg) and, at each distillation event
    (dynamic: every task switch; static: once, after ``static_distill_frac`` of the rounds, as the code's
    warm-up of 40 of 100 rounds), (1) forms task experts theta_c = sum_i n_ic theta_i / sum_i n_ic within each
    architecture from this round's uploads (n_ic from each client's latest counts), (2) trains the meta model
    on all prototypes uploaded so far to fuse the experts' option scores,
    its EMA being the teacher, (3) distils the teacher into each architecture's global on generated samples
    only: ``kd_steps`` Adam steps, each on ``kd_per_generator`` fresh samples of every generator, loss
    0.8 T^2 KL + 0.2 CE(teacher argmax) + 1.0 JSD on the option distributions, T = 1 (plain Adam, no gradient
    clipping, as the released code: ``kd_max_grad_norm`` = 0). No public data.

    What leaves a client: its adapter and per-task counts every round, and per ended task its generator's
    weights and its prototypes once. No row, image or pixel is uploaded as such, but what is uploaded still
    says something of the rows:

    - A prototype's visual part is the mean tower features of >= ``proto_min_members`` rows. Its token slots
      are k-anonymous per slot with k = ``proto_min_members``: an id is sent only if at least k of the
      cluster's rows have it at that slot (shares renormalised over the kept ids, at most ``proto_topk``), so
      a token of fewer rows (a name, a number, a row's own answer choices) never is, while a task's template
      and its shared choices are, with their shares in the cluster. A prompt's kept slots are moved to its
      end in their order and an option is cut at its first absent slot (both so that scoring reads every
      kept token off a present one, ``meta.prototypes``). A prototype with an option left without a token
      (it would score 0, above any real option) or with neither prompt nor visual tokens is not sent; the
      client logs how many (``prototypes_dropped`` in the server's summary).
    - The generator's text logit table starts at log(count) of the task's real rows per slot (add-1e-3
      smoothed, ``generator.init_from_real``) and moves little in ``gen_steps`` Adam steps, so it reveals the
      task's per-slot token frequencies; counts of fewer than ``proto_min_members`` rows start at zero (the
      same k-anonymity over the task's rows), so a token of fewer rows starts where an unseen one does and
      only what the adversarial steps move (hundredths of a logit) could hint at it. Its visual part starts
      at the rows' per-slot mean and spread of tower features.

    What changed from image classification (CIFAR, ResNet-18, a DCGAN per client) and why:

    - Classes -> tasks and answer options. DRAKE has no shared label space, so the "label distribution" is
      the task distribution (n_ic counts task c's samples) and class experts become task experts. Each DRAKE
      task sits on one client, so a task expert is its client's adapter and one client's experts coincide
      (scored once; the meta model still sees one expert per task, as the paper one per class). A sample's
      "logits" are its K option scores (mean answer-token log-likelihood, what the harness scores choices
      by); open-ended tasks get K = ``open_choices`` options (the answer and other answers of the task on the
      client), a restriction of the vocabulary-wide prediction to a few candidates.
    - Images -> samples in the model's input space. A generator emits visual tokens as vision-tower features
      (the projector's input) plus a prompt and options as token slots (``generator.py``); a DCGAN on multi-
      image VQA inputs is out of reach, and pixels would only be turned into these features anyway. Real
      samples keep a prompt's last ``prompt_tokens`` tokens after the images (one fixed layout).
    - Generators per task, not per client: in the dynamic scenario a client's data change at each task
      switch, so a generator is trained once per task when the task ends (upload once per task), with the
      client's model (after that round's local training) as DeGAN's classifier. A client that does not take
      part in that round uploads no generator for the task (the paper has every client in every round). The
      generator's text slots are independent categoricals (``generator.py`` says why) and it starts at its
      data's moments, so a short adversarial run (``gen_steps``) suffices at the tiny zoo's scale.
    - Prototypes. The paper uploads k-means centres of penultimate features and applies each expert's last
      linear layer to them; LoRA experts have no separable head, so a prototype here is a cluster-mean
      sample (clusters by the model's last hidden state, averaged in the input space over >=
      ``proto_min_members`` rows, token slots k-anonymous as above) and every expert reads it whole. It does
      not depend on the model, so it is uploaded once with the generator (the paper re-sends its prototypes
      every round). Unlike a 512-d CIFAR feature it is readable: its kept tokens are the ids that at least
      k of the cluster's rows share at a slot (a task's template, shared answer choices).
    - Meta model over K_max option positions (padded, masked) instead of C classes; input the experts' option
      log-probabilities; trained afresh at each event (experts change), EMA with bias correction (``meta.py``).
    - JSD is the Jensen-Shannon divergence as defined, around the mixture of the two distributions; the
      released code mixes their logits instead (``jsd_mix=logits``). The paper's text, which names a JSD
      term, was not available to compare further; its loss weights and T = 1 are the code's.
    - Heterogeneous pools. Parameter averaging (FedAvg, task experts) never crosses architectures. The
      cross-architecture step is the paper's own: experts meet through their outputs. Architectures that
      share the vision tower and the tokenizer (the whole tiny zoo) read the same samples (tower features,
      token ids) through their own projector and embeddings, so their experts feed one meta model and every
      architecture's global is distilled from that teacher on every group member's generators
      (``cross_arch=false``: one group per architecture).

    Communication: up, the adapter and counts every round, plus each task's generator and prototypes once;
    down, the architecture's global. Compute: client local training is plain SFT (``compute_cost`` 1); the
    generators' training and the server's experts, meta model and distillation are recorded in the result's
    ``extra.method.mosaic`` (sequence-pass units, and their ratio to client training) and counted in its
    ``compute_ratio_to_local`` (``compute_scale``).
    """

    name = "mosaic"
    config_cls = MosaicConfig

    def __init__(self, config: MosaicConfig | None = None) -> None:
        super().__init__(config)
        self._archs: dict[str, ArchModel] = {}
        self._frames: dict[str, Frame] = {}

    def bind(self, archs: Mapping[str, ArchModel], data_dir: Path | None) -> None:
        """Keep the architectures' models for the server's experts and distillation; ``data_dir`` is not
        kept: the server reads no data (no public split either: data-free)."""
        self._archs = dict(archs)

    def frame(self, am: ArchModel) -> Frame:
        if am.name not in self._frames:
            self._frames[am.name] = frame_of(am)
        return self._frames[am.name]

    # ---- schedule ------------------------------------------------------------------------------------
    def distill_rounds(self, scenario: Any) -> set[int]:
        """0-based rounds after whose aggregation the server distils: each task switch (dynamic) or one round
        (static); the last round only with ``distill_final``."""
        last = scenario.rounds - 1
        if scenario.mode == "dynamic":
            rounds = {s.end_round - 1 for c in scenario.clients for s in c.stages if s.end_round - 1 <= last}
        else:
            rounds = {max(1, round(self.config.static_distill_frac * scenario.rounds)) - 1}
        return rounds if self.config.distill_final else rounds - {last}

    def generator_tasks(self, ctx: RoundContext, client: ClientRuntime) -> list[str]:
        """The client's tasks whose generator it trains and uploads this round (each task once)."""
        if self.config.kd_steps == 0 or ctx.round not in self.distill_rounds(ctx.scenario):
            return []
        spec = next(c for c in ctx.scenario.clients if c.id == client.id)
        done = set(client.state.method_state.get("mosaic_uploaded", ()))
        if ctx.scenario.mode == "dynamic":
            tasks = [t for s in spec.stages if s.end_round - 1 == ctx.round for t in s.tasks]
        else:
            tasks = list(spec.tasks)
        return [t for t in dict.fromkeys(tasks) if t not in done]

    # ---- client ----------------------------------------------------------------------------------------
    def client_update(self, ctx: RoundContext, client: ClientRuntime, payload: Payload) -> ClientUpdate:
        if payload.arrays:
            client.adapter.set_state(payload.arrays)
        metrics = client.train(self.config.local_steps)
        seen = [t for t, _ in client.stream.memory.items]
        extras = {"counts": torch.tensor([float(seen.count(t)) for t in client.info.tasks])}
        gen_units = 0.0
        for task in self.generator_tasks(ctx, client):
            packed, units, dropped = self._upload_task(ctx, client, task)
            extras.update(packed)
            gen_units += units
            if packed:  # a log of the client's, not an upload: how many of its clusters k-anonymity dropped
                metrics[f"proto_dropped/{task}"] = float(dropped)
            client.state.method_state.setdefault("mosaic_uploaded", []).append(task)
        if gen_units:
            metrics["gen_units"] = gen_units
        return ClientUpdate(client.id, client.adapter.get_state("shared"), client.num_examples, metrics, extras)

    def _upload_task(
        self, ctx: RoundContext, client: ClientRuntime, task: str
    ) -> tuple[dict[str, torch.Tensor], float, int]:
        """Train the task's generator and make its prototypes, on this client: (extras, compute units,
        prototypes dropped for having an option or prompt left without a k-anonymous token)."""
        cfg = self.config
        refs = [(t, i) for t, i in client.stream.memory.items if t == task][-cfg.gen_max_rows :]
        rows = client.rows(refs)
        seed = derive_seed(ctx.seed, "mosaic-gen", client.id, task)
        frame = self.frame(client.arch)
        real = real_items(client.arch, frame, rows, prompt_tokens=cfg.prompt_tokens, option_tokens=cfg.option_tokens,
                          open_choices=cfg.open_choices, seed=seed)  # fmt: skip
        if real is None:
            return {}, 0.0, 0
        gan = GanSettings(cfg.gen_steps, cfg.gen_batch, cfg.gen_lr, cfg.gen_nz, cfg.gen_hidden, cfg.gen_div_weight,
                          cfg.gen_entropy_weight, cfg.proto_min_members)  # fmt: skip
        gen, log = train_generator(client.arch, client.model, frame, real, gan, seed)
        features = prefix_states(client.arch, client.model, frame, real, cfg.score_batch)
        protos, dropped = prototypes(real, features, k=cfg.proto_k, min_members=cfg.proto_min_members,
                                     topk=cfg.proto_topk, seed=seed)  # fmt: skip
        units = log["units"] + FORWARD * 2 * len(real)  # classifier passes + tower and feature forwards
        return pack_upload(task, gen, protos), units, dropped

    # ---- server ----------------------------------------------------------------------------------------
    def aggregate(self, ctx: RoundContext, server: ServerState, updates: Sequence[ClientUpdate]) -> ServerState:
        server = super().aggregate(ctx, server, updates)
        store = server.method_state.setdefault("mosaic_store", MosaicStore())
        rec = server.method_state.setdefault("mosaic", {"events": [], "generators": 0, "prototypes": 0, "prototypes_dropped": 0,
                                                  "upload_bytes": 0, "client_gen_units": 0.0, "client_units": 0.0,
                                                  "server_units": 0.0})  # fmt: skip
        for u in updates:
            tasks = ctx.clients[u.client_id].tasks
            counts = u.side_info.get("counts")
            if counts is not None:
                store.counts[u.client_id] = {t: float(n) for t, n in zip(tasks, counts.tolist())}
            for task, up in unpack_uploads(u.side_info, ctx.clients[u.client_id].architecture).items():
                up.dropped = int(u.metrics.get(f"proto_dropped/{task}", 0))
                store.uploads[(u.client_id, task)] = up
                rec["generators"] += 1
                rec["prototypes"] += len(up.prototypes) if up.prototypes is not None else 0
                rec["prototypes_dropped"] += up.dropped
            rec["upload_bytes"] += nbytes({k: v for k, v in u.side_info.items() if k != "counts"})
            rec["client_gen_units"] += float(u.metrics.get("gen_units", 0.0))
            rec["client_units"] += float(u.metrics.get("examples", 0.0)) * self.compute_cost()
        if ctx.round in self.distill_rounds(ctx.scenario) and self._archs and self.config.kd_steps > 0:
            event = self.distill(ctx, server, updates, store)
            rec["events"].append(event)
            rec["server_units"] += event["server_units"]
        total = rec["client_units"] + rec["client_gen_units"]
        rec["server_ratio_to_client_training"] = rec["server_units"] / rec["client_units"] if rec["client_units"] else None
        rec["generator_ratio_to_client_training"] = rec["client_gen_units"] / rec["client_units"] if rec["client_units"] else None
        rec["client_total_units"] = total
        return server

    def compute_scale(self, server: ServerState) -> float:
        """1 + (the clients' generator training + the server's experts, meta model and distillation) over
        the clients' local training, from the run's log."""
        return logged_compute_scale(server.method_state.get("mosaic"), ("client_gen_units", "server_units"))

    def groups(self) -> list[list[str]]:
        """Architectures whose experts and samples meet: same vision tower (weights, feature layer) and
        same vocabulary, or one architecture each without ``cross_arch``."""
        if not self.config.cross_arch:
            return [[a] for a in sorted(self._archs)]
        by_sig: dict[str, list[str]] = {}
        for name, am in sorted(self._archs.items()):
            enc = encoder(am)
            vocab = sorted(am.loaded.tokenizer.get_vocab().items())
            sig = hashlib.sha256(repr((state_sha256(enc.vision_tower), enc.config.vision_feature_layer,
                                       enc.config.vision_feature_select_strategy, vocab)).encode()).hexdigest()  # fmt: skip
            by_sig.setdefault(sig, []).append(name)
        return list(by_sig.values())

    def distill(
        self, ctx: RoundContext, server: ServerState, updates: Sequence[ClientUpdate], store: MosaicStore
    ) -> dict[str, Any]:
        """One distillation event: per group, task experts -> meta model on prototypes -> KD into each
        architecture's global on generated samples. Returns the event's log."""
        arch_of = {cid: info.architecture for cid, info in ctx.clients.items()}
        adapters = {u.client_id: u.arrays for u in updates}
        event: dict[str, Any] = {"round": ctx.round + 1, "groups": [], "server_units": 0.0}
        for group in self.groups():
            log = self._distill_group(ctx, server, group, adapters, arch_of, store)
            if log is not None:
                event["server_units"] += log.pop("units")
                event["groups"].append(log)
        return event

    def _distill_group(
        self, ctx: RoundContext, server: ServerState, group: Sequence[str], adapters: Mapping[int, dict],
        arch_of: Mapping[int, str], store: MosaicStore,
    ) -> dict[str, Any] | None:
        cfg = self.config
        experts: list[tuple[str, str, dict[str, torch.Tensor], tuple]] = []  # (arch, task, state, dedup key)
        for arch in group:
            mine = {cid: a for cid, a in adapters.items() if arch_of[cid] == arch}
            for task, (state, weights) in task_experts(mine, store.counts).items():
                total = sum(weights.values())
                experts.append((arch, task, state, (arch, tuple((c, w / total) for c, w in sorted(weights.items())))))
        uploads = sorted((k, u) for k, u in store.uploads.items() if u.arch in group)
        if not experts or not uploads:
            return None
        gens = uploads
        protos = [u.prototypes for _, u in uploads if u.prototypes is not None and len(u.prototypes)]
        k_max = max([u.shape.options for _, u in gens] + [p.num_options for p in protos])
        m = cfg.kd_per_generator
        samples: list[Items] = []
        for (cid, task), up in gens:
            am = self._archs[up.arch]
            gen = Generator(up.shape, cfg.gen_nz, cfg.gen_hidden, embedding_matrix(am).shape[0])
            gen.load_state_dict(up.generator)
            rng = torch.Generator().manual_seed(derive_seed(ctx.seed, "mosaic-kd", ctx.round, cid, task))
            samples.append(sample_items(gen, self.frame(am), cfg.kd_steps * m + cfg.kd_eval_samples, rng))
        # every distinct expert scores every prototype and sample once (experts of equal weights are one model)
        distinct: dict[tuple, int] = {}
        for *_, key in experts:
            distinct.setdefault(key, len(distinct))
        proto_scores: dict[int, list[torch.Tensor]] = {}
        sample_scores: dict[int, list[torch.Tensor]] = {}
        units = 0.0
        for arch, _task, state, key in experts:
            j = distinct[key]
            if j in sample_scores:
                continue
            am = self._archs[arch]
            am.adapter.set_state(state)
            am.model.eval()
            with torch.no_grad():
                proto_scores[j] = [score_items(am, am.model, self.frame(am), p, cfg.score_batch).cpu() for p in protos]
                sample_scores[j] = [score_items(am, am.model, self.frame(am), s, cfg.score_batch).cpu() for s in samples]
            units += FORWARD * (sum(len(p) * p.num_options for p in protos) + sum(len(s) * s.num_options for s in samples))
        order = [distinct[key] for *_, key in experts]
        log: dict[str, Any] = {"archs": list(group), "experts": len(experts), "distinct_experts": len(distinct),
                               "generators": len(gens), "prototypes": sum(len(p) for p in protos),
                               "prototypes_dropped": sum(u.dropped for _, u in uploads)}  # fmt: skip
        teacher_fn = None
        if protos:
            x = torch.cat([expert_inputs([proto_scores[j][i] for j in order], k_max) for i in range(len(protos))])
            opts = torch.cat([torch.full((len(p),), p.num_options) for p in protos])
            labels = torch.cat([p.label for p in protos])
            width = cfg.meta_width or k_max * k_max
            heads = cfg.meta_heads or (k_max if not cfg.meta_width else 4)
            teacher, meta_log = train_meta(
                x, opts, labels, width=width, heads=heads, ffn=cfg.meta_ffn or 4 * width, dropout=cfg.meta_dropout, lr=cfg.meta_lr,
                epochs=cfg.meta_epochs, passes=5, batch=128, ema=cfg.meta_ema, seed=derive_seed(ctx.seed, "mosaic-meta", ctx.round),
            )  # fmt: skip
            log["meta"] = meta_log
            teacher_fn = teacher
        targets = []
        for i, s in enumerate(samples):
            x = expert_inputs([sample_scores[j][i] for j in order], k_max)
            if teacher_fn is not None:
                with torch.no_grad():
                    t = teacher_fn(x, torch.full((len(s),), s.num_options))[:, : s.num_options]
            else:  # no prototype uploaded: the experts' mean log-probabilities
                t = x.mean(1)[:, : s.num_options]
            targets.append(t)
        log["archs_kd"] = {}
        for arch in group:
            if arch not in server.per_arch:
                continue
            server.per_arch[arch], arch_log, spent = self._distill_arch(ctx, self._archs[arch], server.per_arch[arch], samples, targets)
            log["archs_kd"][arch] = arch_log
            units += spent
        log["units"] = units
        return log

    def _distill_arch(
        self, ctx: RoundContext, am: ArchModel, state: dict[str, torch.Tensor], samples: Sequence[Items],
        targets: Sequence[torch.Tensor],
    ) -> tuple[dict[str, torch.Tensor], dict[str, float], float]:
        """KD of ``am``'s global (``state``) toward ``targets`` on ``samples``: (new state, log, units)."""
        cfg = self.config
        frame = self.frame(am)
        am.adapter.set_state(state)
        m = cfg.kd_per_generator
        batches = [[(g, s * m + j) for g in range(len(samples)) for j in range(m)] for s in range(cfg.kd_steps)]
        held = [range(cfg.kd_steps * m, len(s)) for s in samples]  # never trained on
        per_pass = sum(len(h) * s.num_options for s, h in zip(samples, held))

        def divergence() -> float | None:
            if not per_pass:
                return None
            am.model.eval()
            with torch.no_grad():
                kl = [kl_rows(score_items(am, am.model, frame, s.select(h), cfg.score_batch),
                              t[list(h)].to(am.loaded.device), cfg.kd_temperature)
                      for s, t, h in zip(samples, targets, held) if len(h)]  # fmt: skip
            return float(torch.cat(kl).mean())

        def loss_fn(client: ClientRuntime, chunk: Sequence[tuple[int, int]]) -> torch.Tensor:
            total = None
            for g in sorted({g for g, _ in chunk}):
                idx = [i for gg, i in chunk if gg == g]
                student = score_items(am, client.model, frame, samples[g].select(idx), cfg.score_batch)
                loss = kd_loss(student, targets[g][idx], temperature=cfg.kd_temperature, kl=cfg.kd_kl, ce=cfg.kd_ce,
                               js=cfg.kd_jsd, mix=cfg.jsd_mix)  # fmt: skip
                total = loss if total is None else total + loss
            return total / len(chunk)  # type: ignore[operator]

        before = divergence()
        rt = ClientRuntime(
            ClientInfo(-1, am.name, ()), am, {}, None, ClientState(), seed=derive_seed(ctx.seed, "mosaic-kd"),  # type: ignore[arg-type]
            round_idx=ctx.round, lr=cfg.kd_lr, weight_decay=0.0, max_grad_norm=cfg.kd_max_grad_norm, batch_size=len(batches[0]),
        )  # fmt: skip
        metrics = rt.train(len(batches), batches=batches, params=am.adapter.parameters("shared"), loss_fn=loss_fn)
        after = divergence()
        units = FORWARD * 2 * per_pass + sum(samples[g].num_options for b in batches for g, _ in b)
        log = {"kl_before": before, "kl_after": after, "loss": metrics["loss"], "steps": metrics["steps"]}
        return am.adapter.get_state("shared"), log, units
