"""ProcessEngine (``--engine processes``): the clients dealt over worker processes on this machine.

SequentialEngine trains and evaluates one client at a time, and tiny models gain little from a second torch
thread, so on a 2-core machine half the CPU idles. Here each worker process hosts a fixed share of the
clients (balanced by cost: ``ProcessEngine.balanced``) and runs ``ClientWork``'s calls for them
(``drake.fl.nodes.serve_node``), all workers at once; the server loop, aggregation and callbacks stay in
this process. Each worker uses the server's torch thread count, so the numbers are exactly those of the
sequential engine on the same machine (a test checks it). Client states come back with every reply, so checkpoints and ``--resume`` work as with
the sequential engine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any

import torch

from drake.fl.checkpoint import Checkpoint
from drake.fl.engine import Engine
from drake.fl.method import Method
from drake.fl.nodes import NodeError, NodesEngine, loads, log_exchange
from drake.fl.types import RoundContext, RunResult


def default_workers(clients: int) -> int:
    """One worker per group of ``torch.get_num_threads()`` cores, at most one per client."""
    return max(1, min(clients, (os.cpu_count() or 1) // max(1, torch.get_num_threads())))


def image_seq_length(base: Any, default: int = 16) -> int:
    """Image tokens per image of a base HF model (LLaVA's ``config.image_seq_length``); ``default`` when the
    model does not say. Pass the unwrapped base model: a method's wrapper need not carry a ``config``."""
    return int(getattr(getattr(base, "config", None), "image_seq_length", None) or default)


def _serve(conn: Connection, node_config: dict[str, Any]) -> None:
    """A worker's loop: one request in, the reply and the hosted clients' states out, until the pipe closes."""
    from drake.fl.nodes import serve_node

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle; it stops the workers
    job = clients = None
    cache: dict[str, Any] = {}  # the engine and models built for the job, kept for the whole run
    while True:
        try:
            request = conn.recv_bytes()
        except (EOFError, OSError):
            return
        reply, new_job, new_clients = serve_node(request, job, clients, node_config, cache)
        job = new_job if new_job is not None else job
        clients = new_clients if new_clients is not None else clients
        try:
            conn.send_bytes(reply)
            conn.send_bytes(new_clients or b"")
        except OSError:  # the server stopped (Ctrl-C, an error elsewhere): nothing is waiting for this reply
            return


class ProcessEngine(NodesEngine):
    """The round loop with the client work of each round spread over local worker processes."""

    name = "processes"

    def run(
        self, method: Method, scenario: Any, *, seed: int, resume: bool = False, callbacks: Sequence[Any] = ()
    ) -> RunResult:
        ids = [c.id for c in scenario.clients]
        n = min(self.settings.workers or default_workers(len(ids)), len(ids))
        with self._workers(n):
            self.start(method, seed, self.balanced(n, scenario))
            return super().run(method, scenario, seed=seed, resume=resume, callbacks=callbacks)

    def balanced(self, n: int, scenario: Any) -> dict[int, list[int]]:
        """Clients dealt to ``n`` workers, the costliest first onto the least-loaded worker (the LPT rule), so
        the workers finish a round close together. A client's cost: its model's parameter count times the
        mean sequence length (image tokens + ~40 text tokens) of its tasks' training rows. Placement never
        changes a number, only the wall time. Both facts come from the architecture's base model
        (``ArchModel.loaded``), never from ``ArchModel.model``, which a method may have wrapped."""
        size = {name: sum(p.numel() for p in a.loaded.model.parameters()) for name, a in self.archs.items()}
        image_tokens = {name: image_seq_length(a.loaded.model) for name, a in self.archs.items()}

        def cost(client: Any) -> float:
            rows = [r for t in client.tasks for r in self.data[t].splits.get("train", [])]
            images = sum(len(r.get("images") or []) for r in rows) / max(1, len(rows))
            return size[client.model] * (image_tokens[client.model] * images + 40)

        costs = {c.id: cost(c) for c in scenario.clients}
        load, hosts = [0.0] * n, {w: [] for w in range(n)}
        for cid in sorted(costs, key=lambda c: (-costs[c], c)):
            w = min(range(n), key=lambda k: (load[k], k))
            load[w] += costs[cid]
            hosts[w].append(cid)
        return {w: sorted(cids) for w, cids in hosts.items()}

    def checkpoint(self) -> Checkpoint | None:
        return Engine.checkpoint(self)  # the workers send their clients' states back every round

    @contextlib.contextmanager
    def _workers(self, n: int) -> Iterator[None]:
        import multiprocessing as mp

        spawn = mp.get_context("spawn")  # a fresh interpreter: no forked torch thread pools or open files
        device = next(iter(self.archs.values())).loaded.device.type if self.archs else "cpu"
        self._procs, self._conns = [], []
        try:
            for _ in range(n):
                here, there = spawn.Pipe()
                proc = spawn.Process(target=_serve, args=(there, {"device": device}), daemon=True)
                proc.start()
                there.close()
                self._procs.append(proc)
                self._conns.append(here)
            yield
        finally:
            for conn in self._conns:
                conn.close()
            for proc in self._procs:
                proc.join(timeout=10)
                if proc.is_alive():
                    proc.kill()
                    proc.join()

    def send(self, kind: str, ctx: RoundContext, requests: Mapping[int, bytes]) -> dict[int, dict[str, Any]]:
        where, t0 = f"{kind} of round {ctx.round + 1}", time.perf_counter()
        for node, blob in requests.items():
            self._call(node, where, lambda node=node, blob=blob: self._conns[node].send_bytes(blob))
        out: dict[int, dict[str, Any]] = {}
        for node in requests:
            reply = loads(self._call(node, where, self._conns[node].recv_bytes))
            clients = self._call(node, where, self._conns[node].recv_bytes)
            if reply.get("error"):
                raise NodeError(f"worker {node} (clients {self.clients_of(node)}) failed in {where}: {reply['error']}")
            reply["states"] = loads(clients)["states"]
            out[node] = reply
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            log_exchange(self.run_dir / "exchanges.jsonl", kind, ctx, time.perf_counter() - t0, requests, out)
        return out

    def _call(self, node: int, where: str, fn: Any) -> Any:
        try:
            return fn()
        except (EOFError, OSError):  # BrokenPipeError is an OSError
            proc = self._procs[node]
            proc.join(timeout=5)
            resume = " (rerun with --resume to continue from the last finished round)" if self.run_dir else ""
            raise NodeError(
                f"worker {node} (clients {self.clients_of(node)}) exited during {where} with exit code "
                f"{proc.exitcode}{resume}"
            ) from None
