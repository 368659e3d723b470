"""FedDF: FedAvg within each architecture, then server-side ensemble distillation on public data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from baselines._distill import ensemble_teacher, row_logits, teacher_groups, vocab_signature
from baselines._public import (
    FORWARD,
    PublicDistillation,
    distill_toward,
    log_server_units,
    training_units,
)
from baselines.fedavg import FedAvg
from drake.errors import SpecError
from drake.fl.method import MethodConfig, ServerState
from drake.fl.types import ClientUpdate, RoundContext

TEACHERS = ("clients", "globals")


@dataclass(frozen=True)
class FedDFConfig(MethodConfig):
    """FedDF settings. Clients: plain LoRA SFT (``local``'s 20 x 8). Server, per architecture and round:
    ``kd_steps`` steps of ``kd_batch`` rows over the first ``kd_samples`` rows of the public split (FedMosaic's
    KD baselines: 80 public samples, 50 iterations of 8 -> 10 x 16 with the harness's budget rule), early
    stopping on the next ``kd_val_samples`` rows."""

    kd_samples: int = field(default=80, metadata={"help": "public rows distilled on (the first rows of the public split; 0 = no distillation, i.e. FedAvg)"})
    kd_val_samples: int = field(default=16, metadata={"help": "further public rows held out to validate the distillation (early stopping)"})
    kd_steps: int = field(default=10, metadata={"help": "server distillation optimizer steps per architecture per round"})
    kd_batch: int = field(default=16, metadata={"help": "public rows per server distillation step"})
    kd_eval_every: int = field(default=5, metadata={"help": "validate every N distillation steps and keep the best student (0 = no early stopping)"})
    kd_temperature: float = field(default=1.0, metadata={"help": "softmax temperature T of the KL (paper: plain softmax, T = 1)"})
    kd_lr: float = field(default=1e-3, metadata={"help": "server distillation Adam learning rate (paper: 1e-3)"})
    teacher: str = field(default="clients", metadata={"help": "clients: mean logits of every uploaded client model (the paper); globals: of every architecture's fresh average"})
    cross_arch_kd: bool = field(default=True, metadata={"help": "teachers from every architecture that shares the tokenizer (false: own architecture only)"})  # fmt: skip

    def __post_init__(self) -> None:
        if self.teacher not in TEACHERS:
            raise SpecError(f"feddf: teacher={self.teacher!r} is not one of {', '.join(TEACHERS)}")
        for key in ("kd_samples", "kd_val_samples", "kd_steps", "kd_eval_every"):
            if getattr(self, key) < 0:
                raise SpecError(f"feddf: {key}={getattr(self, key)} must be >= 0")
        if self.kd_batch < 1 or self.kd_temperature <= 0 or self.kd_lr <= 0:
            raise SpecError("feddf: kd_batch must be >= 1 and kd_temperature, kd_lr > 0")


class FedDF(PublicDistillation, FedAvg):
    """FedDF (Lin, Kong, Stich, Jaggi, "Ensemble Distillation for Robust Model Fusion in Federated
    Learning", NeurIPS 2020, arXiv 2006.07242).

    Update rule: clients train as in FedAvg (from their architecture's global). The server averages the
    uploads within each architecture (weights n_k, the "prototypes"), then distils each architecture's
    average toward the ensemble: Adam steps on KL(softmax(mean_k logits_k) || softmax(logits_student)) on
    unlabeled public rows, the teacher being the mean logits of every received client model (the paper's
    AvgLogits; ``teacher=globals``: of every architecture's fresh average) over all architectures that share
    the tokenizer, at the answer positions (the harness's KD convention, baselines/_distill.py). Early
    stopping on validation, as the paper's, is done on held-out public rows: the student is validated every
    ``kd_eval_every`` steps and the best one (the plain average included) becomes the global.

    As in the FedMosaic adaptation (``feddistill.py``: same-architecture FedAvg, then per-architecture KD to
    the mean logits of all clients), the public data are the harness's ``public`` split (what the tiny zoo
    pre-trains on; FedMosaic takes 80 LLaVA-665K samples). Unlike it, the KL is at the paper's plain softmax
    (T = 1; FedMosaic: T = 2) and the student is validated; architectures with another tokenizer are taught
    only by their own clients (cross-tokenizer alignment is FedMKT's). Scored (official protocol) on each
    client's adapter after its local training; under ``server-global`` on the distilled global.

    Compute: client training is plain SFT (``compute_cost`` 1); the server's distillation is recorded per
    round in the result's ``extra.method.feddf`` (student steps, teacher and validation forwards, in
    example-pass units, and their ratio to the round's client training).
    """

    name = "feddf"
    config_cls = FedDFConfig

    def distils(self) -> bool:
        return self.config.kd_steps > 0

    # ---- server-side ensemble distillation -------------------------------------------------------------
    def distill(self, ctx: RoundContext, server: ServerState, updates: Sequence[ClientUpdate]) -> None:
        cfg = self.config
        rows, val = self.public_split()
        if not rows:
            return
        sigs = {a: vocab_signature(m.loaded) for a, m in self._archs.items()}
        if cfg.teacher == "clients":
            models = {u.client_id: (ctx.clients[u.client_id].architecture, u.arrays) for u in updates}
        else:
            models = {i: (a, server.per_arch[a]) for i, a in enumerate(sorted(server.per_arch)) if a in self._archs}
        owner = {k: arch for k, (arch, _) in models.items()}
        logits = {k: row_logits(self._archs[a], s, [*rows, *val], cfg.kd_batch) for k, (a, s) in models.items()}
        units = FORWARD * len(models) * (len(rows) + len(val))
        log: dict[str, dict[str, float]] = {}
        for arch, teachers in teacher_groups(sigs, owner, cfg.cross_arch_kd).items():
            if arch not in server.per_arch or not teachers:
                continue
            am = self._archs[arch]
            width = am.loaded.model.get_output_embeddings().weight.shape[0]
            teachers = [k for k in teachers if logits[k] and logits[k][0].shape[-1] == width]
            if not teachers:
                continue
            teacher = ensemble_teacher([logits[k] for k in teachers])
            am.adapter.set_state(server.per_arch[arch])
            server.per_arch[arch], log[arch], spent = distill_toward(
                self.kd_runtime(ctx, am), rows, val, teacher, round_idx=ctx.round, steps=cfg.kd_steps,
                batch=cfg.kd_batch, eval_every=cfg.kd_eval_every, temperature=cfg.kd_temperature,
            )  # fmt: skip
            units += spent
        client_units = training_units(updates, self.compute_cost())
        log_server_units(server, "feddf", ctx, log, units, client_units)
