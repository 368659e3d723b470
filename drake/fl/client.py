"""ClientRuntime: the one training loop and the one evaluation loop every method uses.

A runtime is a client's view of its architecture's shared (frozen base + adapter) model while the client
is swapped in: its adapter state, optimizer state and data stream are loaded by the engine before a hook
runs and saved back afterwards.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from drake.adapters.handle import AdapterHandle
from drake.data.stream import ClientStream
from drake.fl.types import ClientInfo
from drake.metrics import METRICS
from drake.models.batching import collate
from drake.models.loading import LoadedModel
from drake.models.scoring import generate_answers, score_choices
from drake.seeds import derive_seed

Row = dict[str, Any]
ExtraLoss = Callable[["ClientRuntime"], torch.Tensor]
#: a method's own per-chunk loss (e.g. KD between two adapter mixes); default ``ClientRuntime.loss``
LossFn = Callable[["ClientRuntime", Sequence[Row]], torch.Tensor]


def state_sha256(model: nn.Module) -> str:
    """sha256 of a module's full state (names and bytes of every parameter and buffer in its state dict)."""
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def has_dropout(model: nn.Module) -> bool:
    """Whether training ``model`` draws random dropout masks (seeded per client: two clients' runs differ)."""
    return any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())


@dataclass
class ArchModel:
    """One frozen base model of an architecture with the method's adapters attached."""

    name: str
    loaded: LoadedModel
    model: nn.Module
    adapter: AdapterHandle
    weights_sha256: str = ""  # state_sha256 of the base model before the adapters (the result records it)


@dataclass
class TaskRows:
    """Decoded rows of one task (canonical schema), by split."""

    name: str
    answer: str  # "choice" | "open"
    metric: str
    splits: dict[str, Sequence[Row]]  # lists, or LazyRows (images decoded when a row is read)


@dataclass
class ClientState:
    """What the engine keeps for a client between its turns (CPU tensors or a file path)."""

    adapter: dict[str, torch.Tensor] = field(default_factory=dict)
    optimizer: dict[str, Any] | None = None
    stream: dict[str, Any] = field(default_factory=dict)
    method_state: dict[str, Any] = field(default_factory=dict)  # method-owned client state (e.g. EMA sketches)


class ClientRuntime:
    """A client while swapped in: train/evaluate on its own data with its own state."""

    def __init__(
        self,
        info: ClientInfo,
        arch: ArchModel,
        data: Mapping[str, TaskRows],
        stream: ClientStream,
        state: ClientState,
        *,
        seed: int,
        round_idx: int,
        lr: float,
        weight_decay: float,
        max_grad_norm: float,
        batch_size: int,
        grad_accum: int = 1,
        eval_batch_size: int = 32,
        length_norm: bool = True,
        max_new_tokens: int = 6,
    ) -> None:
        self.info = info
        self.arch = arch
        self.data = data
        self.stream = stream
        self.state = state
        self.seed = seed
        self.round = round_idx
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_grad_norm = max_grad_norm
        self.batch_size = batch_size
        self.grad_accum = max(1, grad_accum)
        self.eval_batch_size = eval_batch_size
        self.length_norm = length_norm
        self.max_new_tokens = max_new_tokens
        self.steps_done = 0
        #: set by a method's ``select_scored_state`` to see the rows about to be scored (FedDPA's instance weights)
        self.before_eval: Callable[[Sequence[Row]], None] | None = None

    # ---- identity --------------------------------------------------------------------------------
    @property
    def id(self) -> int:
        return self.info.id

    @property
    def architecture(self) -> str:
        return self.info.architecture

    @property
    def adapter(self) -> AdapterHandle:
        return self.arch.adapter

    @property
    def model(self) -> nn.Module:
        return self.arch.model

    @property
    def num_examples(self) -> int:
        """Training examples that have arrived at this client so far (FedAvg's n_k)."""
        return self.stream.num_examples_seen

    def current_tasks(self) -> tuple[str, ...]:
        return self.stream.current_tasks(self.round)

    # ---- training --------------------------------------------------------------------------------
    def rows(self, refs: Sequence[tuple[str, int]], split: str = "train") -> list[Row]:
        return [self.data[task].splits[split][idx] for task, idx in refs]

    def next_batches(self, steps: int) -> list[list[Row]]:
        """The next ``steps`` training batches from this client's stream (arrivals + replay)."""
        return [self.rows(b) for b in self.stream.batches(self.round, steps)]

    def loss(self, rows: Sequence[Row], model: nn.Module | None = None) -> torch.Tensor:
        """Next-token loss on the answer tokens of ``rows`` (training mode, gradients on)."""
        model = model or self.model
        inputs = collate(self.arch.loaded, rows, with_answer=True)
        return model(**inputs).loss

    def _optimizer(self, params: Sequence[nn.Parameter], lr_groups: Mapping[str, float] | None) -> torch.optim.AdamW:
        names = {id(p): n for n, p in self.model.named_parameters()}
        groups: dict[float, list[nn.Parameter]] = {}
        for p in params:
            lr = self.lr
            for pattern, group_lr in (lr_groups or {}).items():
                if fnmatch.fnmatchcase(names.get(id(p), ""), pattern):
                    lr = group_lr
                    break
            groups.setdefault(lr, []).append(p)
        opt = torch.optim.AdamW(
            [{"params": ps, "lr": lr} for lr, ps in groups.items()], lr=self.lr, weight_decay=self.weight_decay
        )
        key = self._opt_key(params, lr_groups)
        saved = self.state.optimizer or {}
        if saved.get("key") == key:
            opt.load_state_dict(saved["state"])
        elif key in saved.get("stash", {}):
            opt.load_state_dict(saved["stash"][key])
        return opt

    def _save_optimizer(self, key: int, opt: torch.optim.Optimizer) -> None:
        """Keep the latest state under ``key``, and earlier parameter sets' states in ``stash`` so a method
        that alternates sets (Ditto's global/personal adapters, FedRep's head/body) keeps both moments."""
        prev = self.state.optimizer or {}
        stash = dict(prev.get("stash", {}))
        if "key" in prev and prev["key"] != key:
            stash[prev["key"]] = prev["state"]
        stash.pop(key, None)
        self.state.optimizer = {"key": key, "state": opt.state_dict(), **({"stash": stash} if stash else {})}

    def _opt_key(self, params: Sequence[nn.Parameter], lr_groups: Mapping[str, float] | None) -> str:
        names = {id(p): n for n, p in self.model.named_parameters()}
        return derive_seed(*(names.get(id(p), "?") for p in params), sorted((lr_groups or {}).items()))

    def train(
        self,
        steps: int,
        *,
        extra_loss: ExtraLoss | None = None,
        params: Sequence[nn.Parameter] | None = None,
        lr_groups: Mapping[str, float] | None = None,
        batches: Sequence[Sequence[Row]] | None = None,
        on_step: Callable[[int], None] | None = None,
        loss_fn: LossFn | None = None,
    ) -> dict[str, float]:
        """Run ``steps`` AdamW steps on the client's stream; only ``params`` (default: the adapter) move.

        ``extra_loss(client)`` is added to every step's loss (FedProx's proximal term, Ditto's L2, ...).
        ``loss_fn(client, rows)`` replaces the next-token loss (KD between adapter mixes, FedDAT, PerAda).
        The optimizer state persists across rounds for each parameter set.
        """
        params = list(params) if params is not None else self.adapter.parameters("all")
        trainable = {id(p) for p in params}
        frozen = [p for p in self.adapter.parameters("all") if id(p) not in trainable]
        for p in frozen:
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        torch.manual_seed(derive_seed(self.seed, self.round, self.id, self.steps_done))
        opt = self._optimizer(params, lr_groups)
        self.model.train()
        batches = list(batches) if batches is not None else self.next_batches(steps)
        losses = []
        try:
            for step, batch in enumerate(batches):
                micro = [batch[i :: self.grad_accum] for i in range(self.grad_accum)]
                total = 0.0
                for chunk in (m for m in micro if m):
                    base = loss_fn(self, chunk) if loss_fn is not None else self.loss(chunk)
                    loss = base * (len(chunk) / len(batch))
                    if extra_loss is not None:
                        loss = loss + extra_loss(self) / self.grad_accum
                    loss.backward()
                    total += float(loss.detach())
                if self.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
                opt.step()
                opt.zero_grad(set_to_none=True)
                losses.append(total)
                self.steps_done += 1
                if on_step is not None:
                    on_step(step)
        finally:
            for p in frozen:
                p.requires_grad_(True)
            self.model.eval()
        self._save_optimizer(self._opt_key(params, lr_groups), opt)
        return {
            "loss": float(sum(losses) / len(losses)) if losses else float("nan"),
            "steps": float(len(losses)),
            "examples": float(sum(len(b) for b in batches)),
        }

    # ---- evaluation ------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, task: str, *, split: str = "test", limit: int | None = None) -> dict[str, float]:
        """Score the current model on ``task``: {"score": mean metric, "n": examples}."""
        spec = self.data[task]
        rows = list(spec.splits[split][:limit] if limit else spec.splits[split])  # decoded once
        self.model.eval()
        if self.before_eval is not None:
            self.before_eval(rows)
        scorer = METRICS.get(spec.metric)
        if spec.answer == "choice":
            picks = score_choices(
                self.arch.loaded, rows, model=self.model, batch_size=self.eval_batch_size, length_norm=self.length_norm
            )
            preds = [r["choices"][k] for r, k in zip(rows, picks)]
        else:
            preds = generate_answers(
                self.arch.loaded,
                rows,
                model=self.model,
                batch_size=self.eval_batch_size,
                max_new_tokens=self.max_new_tokens,
            )
        scores = [scorer.score(p, r["answer"], r.get("choices")) for p, r in zip(preds, rows)]
        return {"score": float(sum(scores) / len(scores)) if scores else float("nan"), "n": float(len(scores))}
