"""Server-side training on the public split, shared by the KD baselines (FedDF, PerAda, FedMKT, TAKFL).

The public rows a method distils on are the first rows of the harness's built ``public`` split (what the tiny
zoo pre-trains on; FedMosaic's KD baselines take the first 80 LLaVA-665K samples), server-side training
goes through the one training loop (``ClientRuntime.train``) on a runtime with no stream, and its compute is
recorded per round beside the clients' (example-pass units).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from baselines._distill import answer_logits, ensemble_kl, kd_loss, row_logits
from drake.errors import DataError
from drake.fl.client import ArchModel, ClientRuntime, ClientState, Row
from drake.fl.method import ServerState
from drake.fl.types import Arrays, ClientInfo, ClientUpdate, RoundContext
from drake.models.batching import collate
from drake.seeds import derive_seed

#: compute units (the harness's convention, Method.compute_cost): a forward pass costs 1/3 of forward+backward
FORWARD = 1.0 / 3.0


def load_public_rows(data_dir: Path | None, n: int, method: str) -> list[Row]:
    """The first ``n`` rows of the built public split (fewer if it is smaller), decoded once."""
    from drake.data.read import load_task_split

    if data_dir is None:
        raise DataError(f"{method}: no data directory bound; run through the harness (drake run / eval.py)")
    ds = load_task_split(data_dir, "public", "train")
    return [dict(ds[i]) for i in range(min(n, len(ds)))]


def server_runtime(
    ctx: RoundContext, am: ArchModel, *, tag: str, lr: float, max_grad_norm: float, batch_size: int
) -> ClientRuntime:
    """A runtime over an architecture's model for server-side training (the one training loop), with no
    stream (every batch is passed in) and a fresh optimizer each call; ``tag`` seeds it."""
    return ClientRuntime(
        ClientInfo(-1, am.name, ()), am, {}, None, ClientState(), seed=derive_seed(ctx.seed, tag),  # type: ignore[arg-type]
        round_idx=ctx.round, lr=lr, weight_decay=0.0, max_grad_norm=max_grad_norm, batch_size=batch_size,
    )  # fmt: skip


def distill_toward(
    rt: ClientRuntime,
    rows: Sequence[Row],
    val: Sequence[Row],
    teacher: Sequence[torch.Tensor],
    *,
    round_idx: int,
    steps: int,
    batch: int,
    eval_every: int,
    temperature: float,
) -> tuple[Arrays, dict[str, float], float]:
    """Distil the shared adapter of ``rt``'s model, as loaded, toward ``teacher`` (answer-position logits per
    row of ``rows`` then ``val``): ``steps`` steps of ``batch`` rows, starting where round ``round_idx``'s
    share of the rows begins (wrapping), T^2 KL_T at temperature T. Early stopping on validation (FedDF's
    and the official PerAda code's): every ``eval_every`` steps the student's KL to the teacher on ``val`` is
    measured, and the best student, the starting one included, is returned (0 or no ``val``: the last one).
    Returns (the kept adapter state, a log, the compute units spent)."""
    am = rt.arch
    by_row = {id(r): t for r, t in zip(rows, teacher)}
    val_teacher = list(teacher[len(rows) :])
    n = len(rows)
    first = (round_idx * steps * batch) % n
    batches = [[rows[(first + s * batch + i) % n] for i in range(min(batch, n))] for s in range(steps)]
    check = eval_every if (eval_every > 0 and val) else 0
    units = 0.0

    def validate() -> float:
        nonlocal units
        units += FORWARD * len(val)
        return ensemble_kl(row_logits(am, None, val, batch), val_teacher, temperature)

    def loss_fn(client: ClientRuntime, chunk: Sequence[Row]) -> torch.Tensor:
        inputs = collate(client.arch.loaded, chunk, with_answer=True)
        student = answer_logits(client.model(**inputs).logits, inputs["labels"])
        target = torch.cat([by_row[id(r)] for r in chunk]).to(student.device)
        return kd_loss(student, target, temperature)

    best_state, best_step = am.adapter.get_state("shared"), 0
    before = best = validate() if val else float("nan")
    done = 0
    for start in range(0, len(batches), check or len(batches)):
        chunk = batches[start : start + (check or len(batches))]
        rt.train(len(chunk), batches=chunk, params=am.adapter.parameters("shared"), loss_fn=loss_fn)
        done += len(chunk)
        units += sum(len(b) for b in chunk)
        if check:
            kl = validate()
            if kl < best:
                best, best_state, best_step = kl, am.adapter.get_state("shared"), done
    if not check:
        best_state, best_step = am.adapter.get_state("shared"), done
        best = validate() if val else float("nan")
    return best_state, {"kl_before": before, "kl_after": best, "steps": float(done), "kept_step": float(best_step)}, units


def epoch_batches(rows: Sequence[Row], batch: int, epochs: int) -> list[list[Row]]:
    """``epochs`` passes over ``rows`` in order, in batches of at most ``batch`` rows."""
    return [list(rows[s : s + batch]) for _ in range(epochs) for s in range(0, len(rows), batch)]


def log_server_units(
    server: ServerState, key: str, ctx: RoundContext, archs: dict[str, Any], units: float, client_units: float
) -> None:
    """Record a round's server-side compute in ``server.method_state[key]``: the round's per-architecture log, its
    units and their ratio to the round's client training, and the running totals and ratio."""
    rec = server.method_state.setdefault(key, {"rounds": [], "server_units": 0.0, "client_units": 0.0})
    ratio = units / client_units if client_units else None
    rec["rounds"].append(
        {"round": ctx.round + 1, "archs": archs, "server_units": units, "ratio_to_client_training": ratio}
    )
    rec["server_units"] += units
    rec["client_units"] += client_units
    rec["server_ratio_to_client_training"] = (
        rec["server_units"] / rec["client_units"] if rec["client_units"] else None
    )


def training_units(updates: Sequence[ClientUpdate], cost_per_example: float) -> float:
    """The clients' local training of a round in compute units: examples trained x passes per example."""
    return sum(float(u.metrics.get("examples", 0.0)) for u in updates) * cost_per_example


def logged_compute_scale(rec: Mapping[str, Any] | None, extra: Sequence[str] = ("server_units",)) -> float:
    """``Method.compute_scale`` read off a method's log: 1 + the ``extra`` units (the server's training,
    and the like) over its ``client_units``; 1 where nothing was logged."""
    rec = rec or {}
    client = float(rec.get("client_units") or 0.0)
    return 1.0 + sum(float(rec.get(k) or 0.0) for k in extra) / client if client else 1.0


class PublicData(ABC):
    """Mixin for methods that train on public rows: ``bind`` keeps the models and the data directory, and
    ``public_rows`` loads the first ``public_size()`` rows once (or uses ``set_public_rows``'s)."""

    name: str
    _archs: dict[str, ArchModel]
    _data_dir: Path | None
    _public: list[Row] | None

    def _init_public(self) -> None:
        self._archs, self._data_dir, self._public = {}, None, None

    @abstractmethod
    def public_size(self) -> int:
        """How many public rows the method reads."""

    def bind(self, archs: Mapping[str, ArchModel], data_dir: Path | None) -> None:
        self._archs = dict(archs)
        self._data_dir = data_dir

    def set_public_rows(self, rows: Sequence[Row]) -> None:
        """Use ``rows`` as the public data (tests; the harness loads the built split)."""
        self._public = list(rows)

    def public_rows(self) -> list[Row]:
        if self._public is None:
            self._public = load_public_rows(self._data_dir, self.public_size(), self.name)
        return self._public

    def compute_scale(self, server: ServerState) -> float:
        """1 + the server's training units over the clients' (``log_server_units``' totals under the
        method's name; 1 where the server trained nothing or logs no units)."""
        return logged_compute_scale(server.method_state.get(self.name))


class PublicDistillation(PublicData):
    """Mixin for methods whose server, after its base aggregate (FedAvg within each architecture), distils on
    public rows (FedDF, TAKFL): the first ``kd_samples`` public rows are distilled on and the next
    ``kd_val_samples`` held out; ``distill`` runs when there are rows, a distillation budget, models and
    updates (a zero budget leaves the base method)."""

    config: Any

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)  # type: ignore[call-arg]
        self._init_public()

    def public_size(self) -> int:
        """The first ``kd_samples`` public rows distil, the next ``kd_val_samples`` validate."""
        return self.config.kd_samples + self.config.kd_val_samples

    @abstractmethod
    def distils(self) -> bool:
        """Whether the configured server budget (steps or epochs) is positive."""

    def aggregate(
        self, ctx: RoundContext, server: ServerState, updates: Sequence[ClientUpdate]
    ) -> ServerState:
        server = super().aggregate(ctx, server, updates)  # type: ignore[misc]
        if self.config.kd_samples > 0 and self.distils() and self._archs and updates:
            self.distill(ctx, server, updates)
        return server

    def kd_runtime(self, ctx: RoundContext, am: ArchModel) -> ClientRuntime:
        """``am``'s runtime for this round's server distillation (seeded by the method's name, a fresh
        optimizer at ``kd_lr``, batches of ``kd_batch``)."""
        cfg = self.config
        return server_runtime(ctx, am, tag=f"{self.name}-kd", lr=cfg.kd_lr, max_grad_norm=cfg.max_grad_norm,
                              batch_size=cfg.kd_batch)  # fmt: skip

    def public_split(self) -> tuple[list[Row], list[Row]]:
        """(the rows distilled on, the held-out rows)."""
        cfg = self.config
        public = self.public_rows()
        return public[: cfg.kd_samples], public[cfg.kd_samples : cfg.kd_samples + cfg.kd_val_samples]

    @abstractmethod
    def distill(self, ctx: RoundContext, server: ServerState, updates: Sequence[ClientUpdate]) -> None:
        """Server-side distillation of ``server.per_arch`` after this round's average."""
