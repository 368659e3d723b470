"""The round loop, once for every engine: sample, configure, train, aggregate, evaluate, checkpoint.

An engine owns the loop and the server's half; the clients' half is a ``ClientWork``-shaped object
(drake/fl/work.py: ``train``, ``evaluate``, ``evaluate_unseen``, ``adapt_unseen``) that runs in this process
(``SequentialEngine``) or on worker processes / Flower SuperNodes behind messages (drake/fl/nodes.py). Every
random choice derives from (seed, round, client, step), so a resumed run reproduces an uninterrupted one
exactly, and every engine gives the same numbers.
"""

from __future__ import annotations

import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from drake.data.rows import column
from drake.data.stream import ClientStream, build_streams
from drake.fl.assemble import prepare_models
from drake.fl.checkpoint import Checkpoint
from drake.fl.client import ArchModel, ClientState, TaskRows
from drake.fl.memory import fit_micro_batches
from drake.fl.method import Method, ServerState
from drake.fl.settings import EngineSettings
from drake.fl.state_store import StateStore
from drake.fl.types import ClientInfo, RoundContext, RunResult
from drake.fl.work import ClientWork, RoundTraining
from drake.registry import Registry
from drake.seeds import derive_seed
from drake.spec import ScenarioSpec

#: called with each round's history entry once the round is checkpointed (progress lines; tests stop runs)
Callback = Callable[[dict[str, Any]], None]


class Work(Protocol):
    """The client half as the loop sees it (``ClientWork`` here, ``RemoteWork`` on nodes)."""

    grad_accum: dict[str, int]

    def train(self, method: Method, ctx: RoundContext, payloads: Mapping[int, Any], store: StateStore,
              streams: Mapping[int, ClientStream], bar: Any = None) -> RoundTraining: ...

    def evaluate(self, method: Method, ctx: RoundContext, server: ServerState, store: StateStore,
                 streams: Mapping[int, ClientStream]) -> dict[int, dict[str, Any]]: ...

    def evaluate_unseen(self, method: Method, ctx: RoundContext, server: ServerState, store: StateStore,
                        streams: Mapping[int, ClientStream]) -> dict[int, dict[str, float]]: ...

    def adapt_unseen(self, method: Method, ctx: RoundContext, server: ServerState, store: StateStore,
                     streams: Mapping[int, ClientStream]) -> dict[int, dict[str, dict[str, Any]]]: ...


class Engine(ABC):
    """Runs a method over a scenario: the round loop and the server half; ``work`` does the clients'."""

    name = "engine"

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
        self.protocol = self.settings.effective_protocol()
        self.run_dir = run_dir
        prepare_models(archs, self.settings)
        self.work: Work = self.client_work()

    @abstractmethod
    def client_work(self) -> Work:
        """The clients' half of the run."""

    def checkpoint(self) -> Checkpoint | None:
        """Where the run checkpoints after every round (None: it does not, and cannot resume)."""
        return Checkpoint(self.run_dir / "checkpoint.pt") if self.run_dir is not None else None

    def run(
        self,
        method: Method,
        scenario: ScenarioSpec,
        *,
        seed: int,
        resume: bool = False,
        callbacks: Sequence[Callback] = (),
    ) -> RunResult:
        """Run all rounds (from the checkpoint with ``resume``) and return the seed's ``RunResult``."""
        s, work = self.settings, self.work
        clients = {c.id: ClientInfo(c.id, c.model, c.tasks) for c in scenario.clients}
        labels = {t: [str(a) for a in column(rows.splits["train"], "answer")] for t, rows in self.data.items()}
        streams = build_streams(scenario, labels, seed, method.config.batch_size)
        offload = self.run_dir / "client_states" if self.run_dir is not None else None
        store = StateStore(offload, s.offload_budget_mb * 2**20)
        server: ServerState
        history: list[dict[str, Any]] = []
        comm: dict[str, Any] = {"total_up": 0, "total_down": 0, "per_round": []}
        wall = {"train": 0.0, "aggregate": 0.0, "eval": 0.0}
        start_round = 0
        weights = {name: a.weights_sha256 for name, a in self.archs.items() if a.weights_sha256}
        work.grad_accum = fit_micro_batches(self.archs, self.data, s.micro_batch, method.config, scenario)
        checkpoint = self.checkpoint()
        blob = checkpoint.load(seed=seed, method=method.name, weights=weights) if resume and checkpoint else None
        if blob is not None:
            server, history, comm, wall = blob["server"], blob["history"], blob["comm"], blob["wall"]
            start_round = blob["round"] + 1
            for cid, st in blob["clients"].items():
                store.put(cid, st)
        else:
            server = method.init_server(clients)
            init_adapter = {name: a.adapter.get_state("all") for name, a in self.archs.items()}
            for cid, info in clients.items():
                store.put(cid, ClientState(adapter={k: v.clone() for k, v in init_adapter[info.architecture].items()}))

        eval_rounds = self.protocol.eval_rounds(scenario)
        bar = tqdm(total=scenario.rounds, initial=start_round, disable=not s.progress, desc=method.name, unit="round")
        for rnd in range(start_round, scenario.rounds):
            k = max(1, round(scenario.participation * len(clients)))
            participants = tuple(sorted(random.Random(derive_seed(seed, "sample", rnd)).sample(sorted(clients), k)))
            ctx = RoundContext(rnd, scenario, seed, participants, clients)
            payloads = method.configure_round(ctx, server)
            t0 = time.perf_counter()
            done = work.train(method, ctx, payloads, store, streams, bar)
            wall["train"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            server = method.aggregate(ctx, server, done.updates)
            wall["aggregate"] += time.perf_counter() - t0
            comm["total_up"] += sum(done.comm["up"].values())
            comm["total_down"] += sum(done.comm["down"].values())
            comm["per_round"].append(done.comm)
            entry: dict[str, Any] = {"round": rnd + 1, "train": done.log}
            if "relevance" in server.method_state:
                entry["relevance"] = [list(map(float, row)) for row in server.method_state["relevance"]]
            if rnd + 1 in eval_rounds:
                t0 = time.perf_counter()
                evals = work.evaluate(method, ctx, server, store, streams)
                entry["eval"] = {cid: v["scores"] for cid, v in evals.items()}
                diagnostics = {cid: v["diagnostics"] for cid, v in evals.items() if "diagnostics" in v}
                if diagnostics:
                    entry["diagnostics"] = diagnostics
                wall["eval"] += time.perf_counter() - t0
            history.append(entry)
            if checkpoint is not None:
                checkpoint.save({"seed": seed, "method": method.name, "round": rnd, "server": server,
                                 "history": history, "comm": comm, "wall": wall, "clients": store.all(),
                                 "weights": weights})  # fmt: skip
            for cb in callbacks:
                cb(entry)
            bar.update(1)
            if method.should_stop(ctx, history):
                break
        bar.close()
        final_ctx = RoundContext(scenario.rounds - 1, scenario, seed, tuple(sorted(clients)), clients)
        t0 = time.perf_counter()
        unseen = work.evaluate_unseen(method, final_ctx, server, store, streams)
        wall["eval"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        unseen_adapted = work.adapt_unseen(method, final_ctx, server, store, streams)
        wall["unseen_adapt"] = time.perf_counter() - t0
        limits = {"own": s.self_limit, "others": s.others_limit, "unseen": s.unseen_limit}
        return RunResult(
            history=history, unseen=unseen, unseen_adapted=unseen_adapted, comm=comm, wall=wall,
            method_state=server.method_state, grad_accum=dict(work.grad_accum),
            compute=_compute(method, server),
            metrics={t: rows.metric for t, rows in self.data.items()},
            n_eval={kind: {t: self._n_eval(t, limit) for t in self.data} for kind, limit in limits.items()},
        )  # fmt: skip

    def _n_eval(self, task: str, limit: int | None) -> int:
        n = len(self.data[task].splits["test"])
        return min(n, limit) if limit else n


class SequentialEngine(Engine):
    """Every client in this process, one at a time (``ClientWork`` over all of them)."""

    name = "sequential"

    def client_work(self) -> ClientWork:
        return ClientWork(self.archs, self.data, self.settings)


ENGINES: Registry = Registry("engine")
ENGINES.register("sequential", SequentialEngine, summary="in-process, one client at a time (auto's pick on a GPU or a single core)")
ENGINES.register("processes", "drake.fl.process_engine:ProcessEngine", summary="clients dealt over local worker processes, all at once (auto's pick on 2+ CPU cores; same numbers)")
ENGINES.register("flower", "drake.fl.flower_engine:FlowerEngine", summary="each client on a Flower SuperNode (extra: drake-bench[flower])")


def _compute(method: Method, server: ServerState) -> dict[str, float]:
    """Training compute relative to Local: the clients' local steps alone, and the whole run (the headline:
    server-side distillation and the like included, as the FedMosaic paper's cost plot counts them)."""
    clients = method.compute_ratio_to_local()
    scale = method.compute_scale(server)
    return {"cost_per_example": method.compute_cost(), "clients_ratio_to_local": clients,
            "ratio_to_local": clients * scale}  # fmt: skip
