"""The Method interface: a method owns its client half and its server half; the engine owns the loop.

Hooks and where they run:
- ``attach(model, arch)``              engine, once per architecture: add the method's adapters to a frozen base
- ``bind(archs, data_dir)``            engine, once after attach: server-side model access (e.g. PerAda's KD)
- ``init_server(clients)``             server, once: initial server state
- ``configure_round(ctx, server)``     server: one Payload per participating client (per-client globals)
- ``client_update(ctx, client, payload)``  client: load payload, train, return a ClientUpdate
- ``aggregate(ctx, server, updates)``  server: new server state (must not mutate ``updates``)
- ``load_server_model(ctx, client, server)``  client, before an evaluation under a ``server`` protocol only
                                       (drake/protocol.py): load what the server holds for this client
- ``select_scored_state(ctx, client)`` client, before each evaluation: the state the method's paper scores
- ``lr_groups(client)``                client: learning rates by parameter pattern (also for unseen tasks)
- ``watch_scoring(ctx, client)``       client, before scoring at a round that reports diagnostics: an observer
                                       the engine enters around each task's scoring (``watch.task(name)``)
- ``diagnostics(ctx, client, own, others, ...)``  client, after scoring: optional numbers about the model
- ``eval_key(ctx, client, server)``    client, under a ``server`` protocol: equal keys are scored once
- ``should_stop(ctx, history)``        server: early stop
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

import torch
from torch import nn

from drake.adapters.handle import AdapterHandle, AdapterSpec
from drake.adapters.lora import ALL_TEXT_LINEAR, LoraSettings, apply_lora
from drake.errors import SpecError
from drake.fl.types import Arrays, ClientInfo, ClientUpdate, Payload, RoundContext

if TYPE_CHECKING:
    from drake.fl.client import ArchModel, ClientRuntime


class ScoringWatch(Protocol):
    """A method's observer of the scoring forwards (``Method.watch_scoring``)."""

    def task(self, name: str) -> AbstractContextManager[None]: ...


class TaskValues:
    """A ``ScoringWatch`` that keeps the numbers recorded while each task is scored (``record``, or appended to
    ``values[task]`` by a hook) and averages them over tasks: FedMosaic's gate beta, FedDPA's mix weight."""

    def __init__(self) -> None:
        self.values: dict[str, list[torch.Tensor]] = {}
        self.current: str | None = None

    @contextmanager
    def task(self, name: str) -> Iterator[None]:
        self.current = name
        self.values.setdefault(name, [])
        try:
            yield
        finally:
            self.current = None

    def record(self, values: torch.Tensor) -> None:
        """Keep ``values`` (any shape) for the task being scored; outside a task, nothing."""
        if self.current is not None:
            self.values[self.current].append(values.detach().float().reshape(-1).cpu())

    def mean(self, tasks: Sequence[str]) -> float | None:
        """Mean of every number recorded for ``tasks`` (None when none was scored)."""
        kept = [v for t in tasks for v in self.values.get(t, [])]
        return float(torch.cat(kept).mean()) if kept else None


def others_under(
    client: Any, others: Sequence[str], settings: Mapping[str, Callable[[], AbstractContextManager[Any]]],
    limit: int | None,
) -> dict[str, float]:
    """The client's mean score on ``others`` (``limit`` test rows each) under each named model setting (a
    context-manager factory, e.g. one adapter alone): Others per branch, one more Others pass per setting."""
    out = {}
    for name, setting in settings.items():
        with setting():
            scores = [client.evaluate(t, limit=limit)["score"] for t in others]
        out[name] = sum(scores) / len(scores)
    return out


@dataclass(frozen=True)
class MethodConfig:
    """Training settings every method shares (override with ``--set key=value``).

    The paper trains 1B-3B models with lr 2e-5 (LoRA) and batch 4; the tiny zoo models (~2M parameters,
    trained from scratch) need a larger learning rate to move within a few hundred steps.
    """

    local_steps: int = field(default=20, metadata={"help": "optimizer steps per client per round"})
    batch_size: int = field(default=8, metadata={"help": "examples per optimizer step"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per step (batch_size is split)"})
    lr: float = field(default=2e-3, metadata={"help": "AdamW learning rate for adapter parameters"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm (0 = off)"})
    lora_r: int = field(default=32, metadata={"help": "LoRA rank, the same for every method (the paper's protocol): the largest every PQ-LoRA module of the zoo allows (the tiny Qwen k/v projections are 32 wide)"})
    lora_alpha: int = field(default=64, metadata={"help": "LoRA alpha (scaling alpha/r = 2, the paper's 256/128)"})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout (paper: 0.05; off by default: on CPU it costs ~40% of a tiny-model step)"})
    lora_targets: tuple[str, ...] = field(default=ALL_TEXT_LINEAR, metadata={"help": "text-model linear layers"})

    def lora(self) -> LoraSettings:
        return LoraSettings(self.lora_r, self.lora_alpha, self.lora_dropout, tuple(self.lora_targets))

    def check(self, where: str) -> None:
        """The shared settings' ranges, checked before a run loads anything (a subclass checks its own fields
        in ``__post_init__``): one SpecError naming the first bad setting and what it takes."""
        rules = (("local_steps", self.local_steps >= 0, "0 or more"), ("batch_size", self.batch_size >= 1, "1 or more"),
                 ("grad_accum", self.grad_accum >= 1, "1 or more"), ("lr", self.lr > 0, "a number > 0"),
                 ("weight_decay", self.weight_decay >= 0, "0 or more"), ("max_grad_norm", self.max_grad_norm >= 0, "0 (off) or more"),
                 ("lora_r", self.lora_r >= 1, "1 or more"), ("lora_alpha", self.lora_alpha > 0, "1 or more"),
                 ("lora_dropout", 0 <= self.lora_dropout < 1, "a number in [0, 1)"),
                 ("lora_targets", bool(self.lora_targets) and set(self.lora_targets) <= set(ALL_TEXT_LINEAR),
                  f"one or more of {','.join(ALL_TEXT_LINEAR)}"))  # fmt: skip
        for name, ok, wanted in rules:
            if not ok:
                raise SpecError(f"{where}: {name} {getattr(self, name)!r}: expected {wanted} (e.g. --set {name}=...)")

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}


C = TypeVar("C", bound=MethodConfig)


@dataclass
class ServerState:
    """Everything the server keeps between rounds (checkpointed by the engine)."""

    per_arch: dict[str, Arrays] = field(default_factory=dict)  # one global per architecture
    per_client: dict[int, Arrays] = field(default_factory=dict)  # per-client globals (e.g. RELA)
    method_state: dict[str, Any] = field(default_factory=dict)  # the method's own (logs, RELA inputs), never sent


class Method(ABC, Generic[C]):
    """Base class of every federated method; subclasses set ``name`` and ``config_cls``."""

    name: ClassVar[str] = ""
    config_cls: ClassVar[type[MethodConfig]] = MethodConfig
    #: True when the method exchanges nothing (the harness then reports zero communication)
    communicates: ClassVar[bool] = True

    def __init__(self, config: C | None = None) -> None:
        self.config: C = config if config is not None else self.config_cls()  # type: ignore[assignment]

    # ---- engine side -----------------------------------------------------------------------------
    def adapter_spec(self) -> AdapterSpec:
        """Which adapter parameters are shared; default: everything the adapter trains."""
        return AdapterSpec(kind="lora", params={"r": self.config.lora_r}, shared=("*",))

    def attach(self, model: nn.Module, arch: str) -> tuple[nn.Module, AdapterHandle]:
        """Add this method's adapters to a frozen base model of architecture ``arch``."""
        return apply_lora(model, self.config.lora(), self.adapter_spec())

    def bind(self, archs: Mapping[str, ArchModel], data_dir: Path | None) -> None:
        """Called once after every architecture is attached; methods with server-side training (KD on
        public data) keep the models and the built data directory. Default: nothing."""

    # ---- compute accounting ------------------------------------------------------------------------
    def compute_cost(self) -> float:
        """Forward+backward passes per training example relative to plain LoRA SFT (1.0); e.g. a frozen
        teacher's extra forward costs 1/3 (a backward costs about two forwards)."""
        return 1.0

    def compute_ratio_to_local(self) -> float:
        """Client training compute per round relative to ``local`` at its default budget:
        (local_steps x batch_size x compute_cost) / (default local_steps x default batch_size)."""
        ref = MethodConfig()
        own = self.config.local_steps * self.config.batch_size * self.compute_cost()
        return float(own / (ref.local_steps * ref.batch_size))

    def compute_scale(self, server: ServerState) -> float:
        """The run's whole training compute over what ``compute_ratio_to_local`` counts (the clients' local
        steps at ``compute_cost`` per example): above 1 with compute spent elsewhere (server-side
        distillation, client generators), below 1 where local steps cost less than full passes (FedMS's
        sparsely activated stage 1). Read off the method's own log at the end of the run; default 1."""
        return 1.0

    # ---- server side -----------------------------------------------------------------------------
    def init_server(self, clients: Mapping[int, ClientInfo]) -> ServerState:
        return ServerState()

    def configure_round(self, ctx: RoundContext, server: ServerState) -> dict[int, Payload]:
        """Default: each client receives its architecture's global (empty before the first aggregate)."""
        return {cid: Payload(dict(server.per_arch.get(ctx.clients[cid].architecture, {}))) for cid in ctx.participants}

    @abstractmethod
    def aggregate(self, ctx: RoundContext, server: ServerState, updates: Sequence[ClientUpdate]) -> ServerState:
        """Combine client updates into the next server state."""

    def should_stop(self, ctx: RoundContext, history: Sequence[Mapping[str, Any]]) -> bool:
        return False

    # ---- client side -----------------------------------------------------------------------------
    @abstractmethod
    def client_update(self, ctx: RoundContext, client: ClientRuntime, payload: Payload) -> ClientUpdate:
        """Train on the client's current data and return what goes to the server."""

    def load_server_model(self, ctx: RoundContext, client: ClientRuntime, server: ServerState) -> None:
        """Under a ``server`` protocol only (``--protocol server-global``): load what the server holds for this
        client before it is scored (FedAvg: its architecture's fresh average). The official protocol never
        calls it: each client is scored on its model right after its own local training. Default: nothing."""

    def select_scored_state(self, ctx: RoundContext, client: ClientRuntime) -> None:
        """Put the method's scored state in place on the client's model, where its paper defines one (Ditto:
        the personal adapter alone; FedDPA: the instance-wise mix). Runs before every evaluation and before
        the unseen-task fine-tuning, under every protocol. Default: the client's adapter as it is."""

    def lr_groups(self, client: ClientRuntime) -> dict[str, float]:
        """Learning rates by parameter-name pattern (fnmatch) for ``client.train``; the rest use ``client.lr``.
        The engine uses them for the unseen-task fine-tuning too. Default: none."""
        return {}

    def watch_scoring(self, ctx: RoundContext, client: ClientRuntime) -> ScoringWatch | None:
        """At an evaluation that reports ``diagnostics``, before scoring: an observer whose ``task(name)`` the
        engine enters around the scoring of each task, handed back to ``diagnostics`` as ``watch`` (numbers
        read off the scoring forwards cost no forward of their own). Default: none."""
        return None

    def diagnostics(
        self, ctx: RoundContext, client: ClientRuntime, own: Sequence[str], others: Sequence[str], *, final: bool,
        limit: int | None, watch: ScoringWatch | None = None, passes: bool = False,
    ) -> dict[str, Any] | None:
        """Numbers about the scored model, written beside the result at each evaluation that scores other
        clients' tasks (``others``; ``final`` at the last one; ``limit`` test rows per task; ``watch`` from
        ``watch_scoring``), e.g. FedMosaic's gate on own vs others' prompts. Only when the engine setting
        ``diagnostics`` is on (outside the config hash: they must not change a score); ``passes`` (the
        setting ``diagnostic_passes``) allows numbers that cost scoring passes of their own. Default: none."""
        return None

    def eval_key(self, ctx: RoundContext, client: ClientRuntime, server: ServerState) -> Hashable | None:
        """After ``load_server_model`` and ``select_scored_state``: a key equal for clients (of one
        architecture) that now hold the same model, so the engine scores it, and fine-tunes it on the unseen
        tasks, once for all of them. None (the default): every client is scored on its own. Give one only
        where it is exact: same weights, adapter mix and evaluation code."""
        return None


def group_by_architecture(
    updates: Sequence[ClientUpdate], clients: Mapping[int, ClientInfo]
) -> dict[str, list[ClientUpdate]]:
    """Updates grouped by architecture, in client order (parameter averaging never crosses groups)."""
    groups: dict[str, list[ClientUpdate]] = {}
    for u in sorted(updates, key=lambda u: u.client_id):
        groups.setdefault(clients[u.client_id].architecture, []).append(u)
    return groups


def weighted_mean(arrays: Sequence[Arrays], weights: Sequence[float]) -> Arrays:
    """Key-wise weighted mean in float64 (exact and order-stable), cast back to each tensor's dtype."""
    if not arrays:
        return {}
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("weights must sum to a positive number")
    out: Arrays = {}
    for key, ref in arrays[0].items():
        acc = torch.zeros(ref.shape, dtype=torch.float64)
        for a, w in zip(arrays, weights):
            acc += a[key].to(torch.float64) * (w / total)
        out[key] = acc.to(ref.dtype)
    return out
