"""SequentialEngine: the default in-process engine.

One frozen base model per architecture stays in memory; each client's small state (adapter, optimizer,
stream) is swapped in for its turn and out afterwards (to disk past a memory budget), so memory grows with
the number of architectures, not clients. Every random choice derives from (seed, round, client, step), so
a resumed run reproduces an uninterrupted one exactly.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from drake.data.stream import ClientStream
from drake.errors import DataError
from drake.fl.client import ArchModel, ClientRuntime, ClientState, TaskRows, derive_seed
from drake.fl.method import Method, ServerState
from drake.fl.types import ClientInfo, ClientUpdate, RoundContext
from drake.io import atomic_write_bytes
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
        self.archs = archs
        self.data = data
        self.settings = settings or EngineSettings()
        self.run_dir = run_dir

    # ------------------------------------------------------------------------------------ helpers
    def _runtime(
        self, method: Method, info: ClientInfo, stream: ClientStream, state: ClientState, seed: int, rnd: int
    ) -> ClientRuntime:
        arch = self.archs[info.architecture]
        stream.load_state_dict(state.stream) if state.stream else None
        arch.adapter.set_state(state.adapter)
        cfg = method.config
        s = self.settings
        return ClientRuntime(
            info, arch, self.data, stream, state, seed=seed, round_idx=rnd, lr=cfg.lr,
            weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, batch_size=cfg.batch_size,
            grad_accum=cfg.grad_accum, eval_batch_size=s.eval_batch_size, length_norm=s.length_norm,
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
        train_sizes = {t: len(rows.splits["train"]) for t, rows in self.data.items()}
        streams = {
            c.id: ClientStream(c, scenario, train_sizes, derive_seed(seed, "stream", c.id), method.config.batch_size)
            for c in scenario.clients
        }
        offload = self.run_dir / "client_states" if self.run_dir is not None else None
        store = StateStore(offload, s.offload_budget_mb * 2**20)
        init_adapter = {name: a.adapter.get_state("all") for name, a in self.archs.items()}
        server: ServerState
        history: list[dict[str, Any]] = []
        comm = {"total_up": 0, "total_down": 0, "per_round": []}
        wall = {"train": 0.0, "aggregate": 0.0, "eval": 0.0}
        start_round = 0
        ckpt = self._checkpoint_path()
        if resume and ckpt is not None and ckpt.is_file():
            blob = torch.load(ckpt, weights_only=False)
            if blob.get("seed") != seed or blob.get("method") != method.name:
                raise DataError(f"{ckpt}: checkpoint is for another run (method/seed); use a new --out or drop --resume")
            server, history, comm, wall = blob["server"], blob["history"], blob["comm"], blob["wall"]
            start_round = blob["round"] + 1
            for cid, st in blob["clients"].items():
                store.put(cid, st)
        else:
            server = method.init_server(clients)
            for cid, info in clients.items():
                store.put(cid, ClientState(adapter={k: v.clone() for k, v in init_adapter[info.architecture].items()}))

        bar = tqdm(total=scenario.rounds, initial=start_round, disable=not s.progress, desc=method.name, unit="round")
        for rnd in range(start_round, scenario.rounds):
            k = max(1, round(scenario.participation * len(clients)))
            ids = sorted(clients)
            participants = tuple(sorted(random.Random(derive_seed(seed, "sample", rnd)).sample(ids, k)))
            ctx = RoundContext(rnd, scenario, seed, participants, clients)
            payloads = method.configure_round(ctx, server)
            updates: list[ClientUpdate] = []
            round_comm = {"round": rnd + 1, "up": {}, "down": {}}
            train_log: dict[int, dict[str, float]] = {}
            t0 = time.perf_counter()
            for i, cid in enumerate(participants):
                state = store.get(cid)
                rt = self._runtime(method, clients[cid], streams[cid], state, seed, rnd)
                payload = payloads[cid]
                upd = method.client_update(ctx, rt, payload)
                state.adapter = rt.adapter.get_state("all")
                state.stream = streams[cid].state_dict()
                store.put(cid, state)
                updates.append(upd)
                train_log[cid] = {k: float(v) for k, v in upd.metrics.items()}
                down, up = (payload.nbytes, upd.nbytes) if method.communicates else (0, 0)
                round_comm["down"][cid], round_comm["up"][cid] = down, up
                bar.set_postfix(client=f"{i + 1}/{len(participants)}", loss=f"{upd.metrics.get('loss', float('nan')):.3f}")
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
            if rnd + 1 in scenario.eval_rounds:
                t0 = time.perf_counter()
                entry["eval"] = self._evaluate_all(method, ctx, server, store, streams, specs, seed, rnd)
                wall["eval"] += time.perf_counter() - t0
            history.append(entry)
            self._save_checkpoint(
                {"seed": seed, "method": method.name, "round": rnd, "server": server, "history": history,
                 "comm": comm, "wall": wall, "clients": store.all()}
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
        return {
            "history": history, "unseen": unseen, "comm": comm, "wall": wall, "server_extra": server.extra,
            "compute": {"cost_per_example": method.compute_cost(), "ratio_to_local": method.compute_ratio_to_local()},
            "metrics": {t: rows.metric for t, rows in self.data.items()},
            "n_eval": {kind: {t: self._n_eval(t, limit) for t in self.data}
                       for kind, limit in (("own", s.self_limit), ("others", s.others_limit), ("unseen", s.unseen_limit))},
        }  # fmt: skip

    def _n_eval(self, task: str, limit: int | None) -> int:
        n = len(self.data[task].splits["test"])
        return min(n, limit) if limit else n

    # --------------------------------------------------------------------------------- evaluation
    def _seen_tasks(self, spec, rnd: int) -> list[str]:
        """Tasks a client has started by round ``rnd`` (0-based), in arrival order."""
        seen: list[str] = []
        for stage in spec.stages:
            if stage.start_round <= rnd:
                seen += [t for t in stage.tasks if t not in seen]
        return seen

    def _evaluate_all(self, method, ctx, server, store, streams, specs, seed, rnd) -> dict[int, dict[str, float]]:
        """Every client's personalized model on its seen tasks (Self) and others' seen tasks (Others)."""
        s = self.settings
        seen = {cid: self._seen_tasks(spec, rnd) for cid, spec in specs.items()}
        out: dict[int, dict[str, float]] = {}
        for cid in sorted(specs):
            rt = self._runtime(method, ctx.clients[cid], streams[cid], store.get(cid), seed, rnd)
            method.personalize(ctx, rt, server)
            scores: dict[str, float] = {}
            for task in seen[cid]:
                scores[task] = rt.evaluate(task, limit=s.self_limit)["score"]
            if s.eval_others:
                for other, tasks in seen.items():
                    if other == cid:
                        continue
                    for task in tasks:
                        if task not in scores:
                            scores[task] = rt.evaluate(task, limit=s.others_limit)["score"]
            out[cid] = scores
        # the client's stream position must not move because of evaluation
        for cid in specs:
            st = store.get(cid)
            if st.stream:
                streams[cid].load_state_dict(st.stream)
        return out

    def _evaluate_unseen(self, method, ctx, server, store, streams, seed, scenario) -> dict[int, dict[str, float]]:
        if not scenario.unseen:
            return {}
        out: dict[int, dict[str, float]] = {}
        for cid in sorted(ctx.clients):
            rt = self._runtime(method, ctx.clients[cid], streams[cid], store.get(cid), seed, ctx.round)
            method.personalize(ctx, rt, server)
            out[cid] = {t: rt.evaluate(t, limit=self.settings.unseen_limit)["score"] for t in scenario.unseen}
        return out


ENGINES: Registry = Registry("engine")
ENGINES.register("sequential", SequentialEngine, summary="in-process, one client at a time (default)")
