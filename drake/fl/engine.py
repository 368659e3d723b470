"""SequentialEngine: the default in-process engine.

One frozen base model per architecture stays in memory; each client's small state (adapter, optimizer,
stream) is swapped in for its turn and out afterwards (to disk past a memory budget), so memory grows with
the number of architectures, not clients. Every random choice derives from (seed, round, client, step), so
a resumed run reproduces an uninterrupted one exactly.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from drake.data.rows import column
from drake.data.stream import ClientStream, build_streams, epoch_batches
from drake.errors import DataError, SpecError
from drake.fl.client import ArchModel, ClientRuntime, ClientState, Row, TaskRows, derive_seed, has_dropout
from drake.fl.method import Method, ServerState
from drake.fl.types import ClientInfo, ClientUpdate, RoundContext
from drake.io import atomic_write_bytes
from drake.malloc import release_large_blocks
from drake.protocol import DEFAULT_PROTOCOL, PROTOCOLS, Protocol
from drake.registry import Registry
from drake.spec import ScenarioSpec


@dataclass(frozen=True)
class EngineSettings:
    """How the harness runs and evaluates (not part of a method's config)."""

    self_limit: int | None = field(default=None, metadata={"help": "test items per own task (None = all)"})
    others_limit: int | None = field(default=25, metadata={"help": "test items per other client's task"})
    unseen_limit: int | None = field(default=50, metadata={"help": "test items per unseen task"})
    eval_others: bool = field(default=True, metadata={"help": "also evaluate on other clients' tasks"})
    eval_batch_size: int = field(default=64, metadata={"help": "examples per scoring batch"})
    length_norm: bool = field(default=True, metadata={"help": "length-normalise choice log-likelihoods"})
    max_new_tokens: int = field(default=6, metadata={"help": "greedy tokens for open-ended answers"})
    offload_budget_mb: float = field(default=512.0, metadata={"help": "client states kept in RAM before disk"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    protocol: str = field(default=DEFAULT_PROTOCOL, metadata={"help": "evaluation protocol: official (FedMosaic's: each client's post-local model, Self at 8 rounds on all its tasks, Others at 4) or server-global (see drake/protocol.py)"})
    unseen_adapt_steps: int | None = field(default=None, metadata={"help": "after the zero-shot unseen evaluation, fine-tune a copy of each client's scored model this many steps on each unseen task's train split (0 = zero-shot only; None = the protocol's)"})
    unseen_adapt_batch: int | None = field(default=None, metadata={"help": "examples per unseen-adaptation step (None = the method's batch_size)"})
    unseen_adapt_eval_every: int | None = field(default=None, metadata={"help": "score the adapted model every N steps (0 = only after the last step; None = the protocol's)"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute text-model activations in backward: less GPU memory, ~30% more compute"})
    workers: int = field(default=0, metadata={"help": "--engine processes: worker processes (0 = one per core at the run's torch threads, at most one per client)"})
    micro_batch: int | str = field(default=0, metadata={"help": "examples per forward pass: 0 = the method's grad_accum; N = at most N; auto = the largest that fits (probed on CUDA, as 0 on CPU)"})

    def __post_init__(self) -> None:
        mb = self.micro_batch
        if not (mb == "auto" or (isinstance(mb, int) and not isinstance(mb, bool) and mb >= 0)):
            raise SpecError(f"engine settings: micro_batch {mb!r}: expected auto, 0 or a positive integer")
        for name in ("unseen_adapt_steps", "unseen_adapt_eval_every", "workers"):
            if (getattr(self, name) or 0) < 0:
                raise SpecError(f"engine settings: {name} {getattr(self, name)}: expected 0 or more")
        if self.unseen_adapt_batch is not None and self.unseen_adapt_batch < 1:
            raise SpecError(f"engine settings: unseen_adapt_batch {self.unseen_adapt_batch}: expected 1 or more (or none)")
        PROTOCOLS.get(self.protocol)  # an unknown name fails here, with suggestions

    def effective_protocol(self) -> Protocol:
        """The named protocol with this run's unseen-adaptation overrides."""
        return PROTOCOLS.get(self.protocol).with_overrides(
            unseen_steps=self.unseen_adapt_steps, unseen_eval_every=self.unseen_adapt_eval_every
        )


class StateStore:
    """Client states in RAM up to a byte budget, then on disk (torch.save, atomic)."""

    def __init__(self, offload_dir: Path | None, budget_bytes: float) -> None:
        self.offload_dir = offload_dir
        self.budget = budget_bytes
        self._mem: dict[int, ClientState] = {}
        self._size: dict[int, int] = {}
        self._disk: set[int] = set()

    @staticmethod
    def _bytes(state: ClientState) -> int:
        n = sum(t.numel() * t.element_size() for t in state.adapter.values())
        return n * 3 if state.optimizer else n  # Adam keeps two moments per parameter

    def put(self, cid: int, state: ClientState) -> None:
        size = self._bytes(state)
        in_mem = sum(v for k, v in self._size.items() if k != cid)
        if self.offload_dir is not None and in_mem + size > self.budget:
            import io

            buf = io.BytesIO()
            torch.save(state, buf)
            atomic_write_bytes(self.offload_dir / f"client_{cid}.pt", buf.getvalue())
            self._mem.pop(cid, None)
            self._size.pop(cid, None)
            self._disk.add(cid)
        else:
            self._mem[cid] = state
            self._size[cid] = size
            self._disk.discard(cid)

    def get(self, cid: int) -> ClientState:
        if cid in self._mem:
            return self._mem[cid]
        if cid in self._disk and self.offload_dir is not None:
            return torch.load(self.offload_dir / f"client_{cid}.pt", weights_only=False)
        raise KeyError(cid)

    def all(self) -> dict[int, ClientState]:
        return {cid: self.get(cid) for cid in sorted(set(self._mem) | self._disk)}

    @property
    def ram_clients(self) -> int:
        return len(self._mem)


Callback = Callable[[dict[str, Any]], None]


class SequentialEngine:
    """Runs a method over a scenario in one process, one client at a time."""

    name = "sequential"

    def __init__(
        self,
        archs: Mapping[str, ArchModel],
        data: Mapping[str, TaskRows],
        settings: EngineSettings | None = None,
        *,
        run_dir: Path | None = None,
    ) -> None:
        release_large_blocks()  # activations freed by each step go back to the OS (see drake/malloc.py)
        self.archs = archs
        self.data = data
        self.settings = settings or EngineSettings()
        self.protocol = self.settings.effective_protocol()
        self.run_dir = run_dir
        #: per architecture, micro-batches per step when ``micro_batch`` overrides the method's grad_accum
        self.grad_accum: dict[str, int] = {}
        if self.settings.gradient_checkpointing:
            from drake.models.loading import enable_gradient_checkpointing

            for arch in archs.values():
                enable_gradient_checkpointing(arch.model)

    # ------------------------------------------------------------------------------------ helpers
    def _runtime(
        self, method: Method, info: ClientInfo, stream: ClientStream, state: ClientState, seed: int, rnd: int,
        lr_scale: float = 1.0,
    ) -> ClientRuntime:
        arch = self.archs[info.architecture]
        stream.load_state_dict(state.stream) if state.stream else None
        arch.adapter.set_state(state.adapter)
        cfg = method.config
        s = self.settings
        return ClientRuntime(
            info, arch, self.data, stream, state, seed=seed, round_idx=rnd, lr=cfg.lr * lr_scale,
            weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, batch_size=cfg.batch_size,
            grad_accum=self.grad_accum.get(info.architecture, cfg.grad_accum), eval_batch_size=s.eval_batch_size,
            length_norm=s.length_norm,
            max_new_tokens=s.max_new_tokens,
        )  # fmt: skip

    def _checkpoint_path(self) -> Path | None:
        return self.run_dir / "checkpoint.pt" if self.run_dir is not None else None

    def _save_checkpoint(self, blob: dict[str, Any]) -> None:
        path = self._checkpoint_path()
        if path is None:
            return
        import io

        buf = io.BytesIO()
        torch.save(blob, buf)
        atomic_write_bytes(path, buf.getvalue())

    def _hosted(self, ids: Sequence[int] | Mapping[int, Any]) -> list[int]:
        """The clients this engine runs, in id order: all of them here; a Flower node only its own."""
        return sorted(ids)

    def _train_round(
        self, method: Method, ctx: RoundContext, payloads: Mapping[int, Any], store: StateStore,
        streams: Mapping[int, ClientStream], bar: Any = None,
    ) -> tuple[list[ClientUpdate], dict[str, Any], dict[int, dict[str, float]]]:
        """Each hosted participant's client_update, one at a time: (updates, comm bytes, train metrics)."""
        updates: list[ClientUpdate] = []
        round_comm: dict[str, Any] = {"round": ctx.round + 1, "up": {}, "down": {}}
        train_log: dict[int, dict[str, float]] = {}
        hosted = self._hosted(ctx.participants)
        for i, cid in enumerate(hosted):
            state = store.get(cid)
            rt = self._runtime(method, ctx.clients[cid], streams[cid], state, ctx.seed, ctx.round)
            payload = payloads[cid]
            upd = method.client_update(ctx, rt, payload)
            state.adapter = rt.adapter.get_state("all")
            state.stream = streams[cid].state_dict()
            store.put(cid, state)
            updates.append(upd)
            train_log[cid] = {k: float(v) for k, v in upd.metrics.items()}
            down, up = (payload.nbytes, upd.nbytes) if method.communicates else (0, 0)
            round_comm["down"][cid], round_comm["up"][cid] = down, up
            if bar is not None:
                bar.set_postfix(client=f"{i + 1}/{len(hosted)}", loss=f"{upd.metrics.get('loss', float('nan')):.3f}")
        return updates, round_comm, train_log

    # ---------------------------------------------------------------------------------------- run
    def run(
        self,
        method: Method,
        scenario: ScenarioSpec,
        *,
        seed: int,
        resume: bool = False,
        callbacks: Sequence[Callback] = (),
    ) -> dict[str, Any]:
        """Run all rounds and return the per-seed record (schema: drake/results.py)."""
        s = self.settings
        clients = {c.id: ClientInfo(c.id, c.model, c.tasks) for c in scenario.clients}
        specs = {c.id: c for c in scenario.clients}
        labels = {t: [str(a) for a in column(rows.splits["train"], "answer")] for t, rows in self.data.items()}
        streams = build_streams(scenario, labels, seed, method.config.batch_size)
        offload = self.run_dir / "client_states" if self.run_dir is not None else None
        store = StateStore(offload, s.offload_budget_mb * 2**20)
        init_adapter = {name: a.adapter.get_state("all") for name, a in self.archs.items()}
        server: ServerState
        history: list[dict[str, Any]] = []
        comm = {"total_up": 0, "total_down": 0, "per_round": []}
        wall = {"train": 0.0, "aggregate": 0.0, "eval": 0.0}
        start_round = 0
        weights = {name: a.weights_sha256 for name, a in self.archs.items() if a.weights_sha256}
        self.grad_accum = self._fit_micro_batches(method, scenario)
        ckpt = self._checkpoint_path()
        if resume and ckpt is not None and ckpt.is_file():
            blob = torch.load(ckpt, weights_only=False)
            if blob.get("seed") != seed or blob.get("method") != method.name:
                raise DataError(f"{ckpt}: checkpoint is for another run (method/seed); use a new --out or drop --resume")
            changed = sorted(a for a, w in blob.get("weights", {}).items() if a in weights and w != weights[a])
            if changed:
                raise DataError(f"{ckpt}: the base weights of {', '.join(changed)} changed since the checkpoint (a "
                                "re-trained zoo member?); use a new --out or drop --resume")  # fmt: skip
            server, history, comm, wall = blob["server"], blob["history"], blob["comm"], blob["wall"]
            start_round = blob["round"] + 1
            for cid, st in blob["clients"].items():
                store.put(cid, st)
        else:
            server = method.init_server(clients)
            for cid, info in clients.items():
                store.put(cid, ClientState(adapter={k: v.clone() for k, v in init_adapter[info.architecture].items()}))

        eval_rounds = self.protocol.eval_rounds(scenario)
        bar = tqdm(total=scenario.rounds, initial=start_round, disable=not s.progress, desc=method.name, unit="round")
        for rnd in range(start_round, scenario.rounds):
            k = max(1, round(scenario.participation * len(clients)))
            ids = sorted(clients)
            participants = tuple(sorted(random.Random(derive_seed(seed, "sample", rnd)).sample(ids, k)))
            ctx = RoundContext(rnd, scenario, seed, participants, clients)
            payloads = method.configure_round(ctx, server)
            t0 = time.perf_counter()
            updates, round_comm, train_log = self._train_round(method, ctx, payloads, store, streams, bar)
            wall["train"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            server = method.aggregate(ctx, server, updates)
            wall["aggregate"] += time.perf_counter() - t0
            comm["total_up"] += sum(round_comm["up"].values())
            comm["total_down"] += sum(round_comm["down"].values())
            comm["per_round"].append(round_comm)
            entry: dict[str, Any] = {"round": rnd + 1, "train": train_log}
            if "relevance" in server.extra:
                entry["relevance"] = [list(map(float, row)) for row in server.extra["relevance"]]
            if rnd + 1 in eval_rounds:
                t0 = time.perf_counter()
                evals = self._evaluate_all(method, ctx, server, store, streams, specs, seed, rnd)
                entry["eval"] = {cid: v["scores"] for cid, v in evals.items()}
                diagnostics = {cid: v["diagnostics"] for cid, v in evals.items() if "diagnostics" in v}
                if diagnostics:
                    entry["diagnostics"] = diagnostics
                wall["eval"] += time.perf_counter() - t0
            history.append(entry)
            self._save_checkpoint(
                {"seed": seed, "method": method.name, "round": rnd, "server": server, "history": history,
                 "comm": comm, "wall": wall, "clients": store.all(), "weights": weights}
            )  # fmt: skip
            for cb in callbacks:
                cb(entry)
            bar.update(1)
            if method.should_stop(ctx, history):
                break
        bar.close()
        final_ctx = RoundContext(scenario.rounds - 1, scenario, seed, tuple(sorted(clients)), clients)
        t0 = time.perf_counter()
        unseen = self._evaluate_unseen(method, final_ctx, server, store, streams, seed, scenario)
        wall["eval"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        unseen_adapted = self._adapt_unseen(method, final_ctx, server, store, streams, seed, scenario)
        wall["unseen_adapt"] = time.perf_counter() - t0
        return {
            "history": history, "unseen": unseen, "unseen_adapted": unseen_adapted, "comm": comm, "wall": wall,
            "server_extra": server.extra, "grad_accum": dict(self.grad_accum),
            "compute": {"cost_per_example": method.compute_cost(), "ratio_to_local": method.compute_ratio_to_local()},
            "metrics": {t: rows.metric for t, rows in self.data.items()},
            "n_eval": {kind: {t: self._n_eval(t, limit) for t in self.data}
                       for kind, limit in (("own", s.self_limit), ("others", s.others_limit), ("unseen", s.unseen_limit))},
        }  # fmt: skip

    def _n_eval(self, task: str, limit: int | None) -> int:
        n = len(self.data[task].splits["test"])
        return min(n, limit) if limit else n

    # --------------------------------------------------------------------------------- evaluation
    def _scored_model(self, method: Method, ctx: RoundContext, rt: ClientRuntime, server: ServerState) -> None:
        """Put the model the protocol scores in place on ``rt``: the client's own post-local state (or, under a
        ``server`` protocol, what the server holds for it), in the state the method is scored in."""
        if self.protocol.scored == "server":
            method.load_server_model(ctx, rt, server)
        method.select_scored_state(ctx, rt)

    def _evaluate_all(self, method, ctx, server, store, streams, specs, seed, rnd) -> dict[int, dict[str, Any]]:
        """Each client's scored model on its own tasks (Self) and, at the protocol's Others rounds, on the
        other clients' tasks; which tasks (all, or those started) is the protocol's.
        Returns ``{client: {"scores": {task: score}, "diagnostics": the method's (where it gives some)}}``."""
        s, p = self.settings, self.protocol
        tasks = {cid: p.scored_tasks(spec, rnd) for cid, spec in specs.items()}
        self_round = rnd + 1 in p.self_rounds(ctx.scenario)
        others_rounds = p.others_rounds(ctx.scenario)
        others = s.eval_others and rnd + 1 in others_rounds
        out: dict[int, dict[str, Any]] = {}
        memo: dict[Hashable, float] = {}
        for cid in self._hosted(specs):
            rt = self._runtime(method, ctx.clients[cid], streams[cid], store.get(cid), seed, rnd)
            self._scored_model(method, ctx, rt, server)
            score = self._scorer(method, ctx, rt, server, memo)
            scores: dict[str, float] = {}
            if self_round:
                for task in tasks[cid]:
                    scores[task] = score(task, s.self_limit)
            if others:
                for other, their in tasks.items():
                    if other == cid:
                        continue
                    for task in their:
                        if task not in scores and task not in specs[cid].tasks:
                            scores[task] = score(task, s.others_limit)
            out[cid] = {"scores": scores}
            if others:
                own = [t for t in scores if t in specs[cid].tasks]
                theirs = [t for t in scores if t not in specs[cid].tasks]
                diag = method.diagnostics(ctx, rt, own, theirs, final=rnd + 1 == others_rounds[-1], limit=s.others_limit)
                if diag:
                    out[cid]["diagnostics"] = diag
        # the client's stream position must not move because of evaluation
        for cid in self._hosted(specs):
            st = store.get(cid)
            if st.stream:
                streams[cid].load_state_dict(st.stream)
        return out

    def _evaluate_unseen(self, method, ctx, server, store, streams, seed, scenario) -> dict[int, dict[str, float]]:
        if not scenario.unseen:
            return {}
        out: dict[int, dict[str, float]] = {}
        memo: dict[Hashable, float] = {}
        tasks = self.protocol.unseen_tasks(ctx.clients, scenario.unseen)
        for cid in self._hosted(tasks):
            rt = self._runtime(method, ctx.clients[cid], streams[cid], store.get(cid), seed, ctx.round)
            self._scored_model(method, ctx, rt, server)
            score = self._scorer(method, ctx, rt, server, memo)
            out[cid] = {t: score(t, self.settings.unseen_limit) for t in tasks[cid]}
        return out

    def _scorer(self, method: Method, ctx: RoundContext, rt: ClientRuntime, server: ServerState,
                memo: dict[Hashable, float]) -> Callable[[str, int | None], float]:
        """``score(task, limit)`` for a client's scored model: clients with the same ``method.eval_key`` (the
        same model) share one evaluation per task and limit within ``memo``, the rest score on their own."""
        key = self._eval_key(method, ctx, rt, server)

        def score(task: str, limit: int | None) -> float:
            if key is None:
                return rt.evaluate(task, limit=limit)["score"]
            if (key, task, limit) not in memo:
                memo[key, task, limit] = rt.evaluate(task, limit=limit)["score"]
            return memo[key, task, limit]

        return score

    def _eval_key(self, method: Method, ctx: RoundContext, rt: ClientRuntime, server: ServerState) -> Hashable | None:
        """The method's ``eval_key`` (and the architecture: each has its own base model); None where the
        method watches the rows it scores (``before_eval``) or does not give one, and under a post-local
        protocol (every client then holds its own model)."""
        if self.protocol.scored != "server" or rt.before_eval is not None:
            return None
        key = method.eval_key(ctx, rt, server)
        return None if key is None else (rt.architecture, key)

    def _adapt_unseen(self, method, ctx, server, store, streams, seed, scenario) -> dict[int, dict[str, dict[str, Any]]]:
        """FedMosaic's generalization test: how fast each client's learned model adapts to a new task.

        A copy of a client's scored model is fine-tuned for the protocol's ``unseen_steps`` on each unseen task
        the protocol gives it (``unseen_tasks``), on the task's train split (the same seeded batches for every
        client, so clients differ only in what they learned), with the method's learning-rate groups scaled
        by ``unseen_lr_scale``, and scored every
        ``unseen_eval_every`` steps and after the last one. Each task starts from the scored model with a
        fresh optimizer. The client's saved state, its stream position, torch's global RNG and the model's
        weights are left as they were.
        Returns ``{client: {task: {"score": after the last step, "steps": n, "curve": {step: score}}}}``.
        """
        p = self.protocol
        stops = p.unseen_stops()
        if not scenario.unseen or not stops:
            return {}
        steps = stops[-1]
        batch = self.settings.unseen_adapt_batch or method.config.batch_size
        tasks = p.unseen_tasks(ctx.clients, scenario.unseen)
        batches = {t: self._unseen_batches(t, seed, steps, batch) for t in scenario.unseen}
        out: dict[int, dict[str, dict[str, Any]]] = {}
        memo: dict[Hashable, dict[str, dict[str, Any]]] = {}
        with self._rng_kept():
            for cid in self._hosted(tasks):
                saved = store.get(cid)
                state = ClientState(adapter=saved.adapter, optimizer=None, stream=copy.deepcopy(saved.stream),
                                    extra=copy.deepcopy(saved.extra))  # fmt: skip
                rt = self._runtime(method, ctx.clients[cid], streams[cid], state, seed, ctx.round, p.unseen_lr_scale)
                self._scored_model(method, ctx, rt, server)
                # the same model trained on the same batches ends the same, unless dropout (seeded per client) acts
                key = None if has_dropout(rt.model) else self._eval_key(method, ctx, rt, server)
                key = None if key is None else (key, tuple(tasks[cid]))
                if key is not None and key in memo:
                    out[cid] = copy.deepcopy(memo[key])
                    continue
                params = rt.adapter.parameters("all")
                start = [param.detach().clone() for param in params]
                groups = method.lr_groups(rt)
                scores: dict[str, dict[str, Any]] = {}
                for task in tasks[cid]:
                    state.optimizer, rt.steps_done, done = None, 0, 0
                    curve: dict[int, float] = {}
                    for stop in stops:
                        rt.train(stop - done, batches=batches[task][done:stop], lr_groups=groups)
                        done = stop
                        curve[stop] = rt.evaluate(task, limit=self.settings.unseen_limit)["score"]
                    scores[task] = {"score": curve[steps], "steps": steps, "curve": curve}
                    with torch.no_grad():
                        for param, p0 in zip(params, start):
                            param.copy_(p0)
                out[cid] = scores
                if key is not None:
                    memo[key] = scores  # every client it serves gets a copy
        return out

    def _unseen_batches(self, task: str, seed: int, steps: int, batch: int) -> list[list[Row]]:
        """``steps`` batches from ``task``'s train split: seeded shuffles, one epoch after another."""
        rows = self.data[task].splits.get("train") or []
        if not rows:
            raise DataError(f"unseen task {task!r} has no train rows to adapt on; build its train split or set "
                            "engine.unseen_adapt_steps=0")  # fmt: skip
        return epoch_batches(rows, steps, batch, derive_seed(seed, "unseen-adapt", task))

    @contextmanager
    def _rng_kept(self) -> Iterator[None]:
        """Torch's global RNG (CPU and the GPUs in use) as it was before the block."""
        devices = sorted({a.loaded.device.index or 0 for a in self.archs.values() if a.loaded.device.type == "cuda"})
        with torch.random.fork_rng(devices=devices):
            yield

    # ------------------------------------------------------------------------------ GPU memory
    def _fit_micro_batches(self, method: Method, scenario: ScenarioSpec) -> dict[str, int]:
        """Micro-batches per step for each architecture under ``micro_batch`` (empty: the method's own).

        ``auto`` probes, on CUDA only, a forward + backward pass on the largest training rows of the
        architecture's clients (most images, most pixels, longest text) for the largest micro-batch that
        fits; the method's ``grad_accum`` stays a lower bound. The probe uses the plain next-token loss: a
        method with two forward passes per step (KD, dual adapters) may need a fixed ``micro_batch``.
        """
        from drake.models.loading import fit_grad_accum

        mb, cfg = self.settings.micro_batch, method.config
        if mb == 0:
            return {}
        out: dict[str, int] = {}
        for name, arch in self.archs.items():
            if mb != "auto":
                out[name] = max(cfg.grad_accum, math.ceil(cfg.batch_size / int(mb)))
            elif arch.loaded.device.type == "cuda":
                rows = self._largest_rows(name, scenario, cfg.batch_size)
                k = fit_grad_accum(len(rows), lambda m, arch=arch, rows=rows: self._probe(arch, rows[:m]))
                out[name] = max(cfg.grad_accum, math.ceil(cfg.batch_size / math.ceil(len(rows) / k)))
        return out

    def _largest_rows(self, arch: str, scenario: ScenarioSpec, n: int) -> list[Row]:
        """The ``n`` training rows of ``arch``'s clients that cost the most memory (images, pixels, text)."""
        tasks = dict.fromkeys(t for c in scenario.clients if c.model == arch for t in c.tasks)

        def cost(row: Row) -> tuple[int, int, int]:
            images = row.get("images") or []
            pixels = sum(getattr(im, "width", 0) * getattr(im, "height", 0) for im in images)
            text = len(str(row.get("prompt", ""))) + len(str(row.get("answer", ""))) + len(" ".join(row.get("choices") or []))
            return len(images), pixels, text

        rows = [r for t in tasks for r in self.data[t].splits.get("train", [])]
        if not rows:
            raise DataError(f"micro_batch auto: the clients of {arch!r} have no training rows to probe with")
        return sorted(rows, key=cost, reverse=True)[:n]

    @staticmethod
    def _probe(arch: ArchModel, rows: Sequence[Row]) -> None:
        """One training forward + backward pass on ``rows``; gradients are dropped afterwards."""
        from drake.models.batching import collate

        arch.model.train()
        try:
            loss = arch.model(**collate(arch.loaded, rows, with_answer=True)).loss
            loss.backward()
            if arch.loaded.device.type == "cuda":
                torch.cuda.synchronize(arch.loaded.device)
        finally:
            for p in arch.adapter.parameters("all"):
                p.grad = None
            arch.model.eval()


ENGINES: Registry = Registry("engine")
ENGINES.register("sequential", SequentialEngine, summary="in-process, one client at a time (auto's pick on a GPU or a single core)")
ENGINES.register("processes", "drake.fl.process_engine:ProcessEngine", summary="clients dealt over local worker processes, all at once (auto's pick on 2+ CPU cores; same numbers)")
ENGINES.register("flower", "drake.fl.flower_engine:FlowerEngine", summary="each client on a Flower SuperNode (extra: drake-bench[flower])")
