"""Engines whose clients live in other processes ("nodes"): the part that does not depend on the transport.

The server process runs the engine's round loop unchanged (drake/fl/engine.py: sampling, configure_round,
aggregate, comm accounting, callbacks, the returned result); its client half is ``RemoteWork``, which sends
each of ``ClientWork``'s public calls (drake/fl/work.py) as one message per node and phase. A node answers
with ``serve_node``: it makes the same call on a ``ClientWork`` over the clients placed on it, so every engine
built on this computes the same numbers (exactly, on the same machine and thread count). The first message to
a node also carries the job (method, config, scenario, seed, settings), its clients' initial states and
streams, and the rows they use.

Transports: ``ProcessEngine`` (drake/fl/process_engine.py, worker processes on this machine) and
``FlowerEngine`` (drake/fl/flower_engine.py, Flower SuperNodes).
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from drake.errors import DrakeError
from drake.fl.assemble import build_method, prepare_models, set_threads
from drake.fl.checkpoint import Checkpoint
from drake.fl.client import TaskRows, state_sha256
from drake.fl.engine import Engine
from drake.fl.method import Method, ServerState
from drake.fl.settings import EngineSettings
from drake.fl.state_store import StateStore
from drake.fl.types import RoundContext
from drake.fl.work import ClientWork, RoundTraining


class NodeError(DrakeError):
    """A node failed: it was lost, timed out or raised, or it built other models than the server."""


def dumps(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def loads(blob: bytes) -> Any:
    """Unpickle a blob from the other end of the run (nodes already run the code the SuperLink sends them)."""
    return torch.load(io.BytesIO(blob), weights_only=False)


def build_node(job: Mapping[str, Any], node_config: Mapping[str, Any]) -> tuple[ClientWork, Method]:
    """The node's client work and method, built exactly as ``drake run`` builds them (same seeds, same models)."""
    from drake.method_registry import METHODS

    set_threads(int(node_config.get("threads", 0) or 0) or int(job["threads"]))
    method, archs = build_method(
        METHODS.get(job["method"]), job["config"], job["scenario"].architectures, seed=int(job["seed"]),
        device=str(node_config.get("device", "auto")), progress=False, data_dir=None,
    )  # fmt: skip
    prepare_models(archs, job["settings"])
    work = ClientWork(archs, job["data"], job["settings"], job["hosted"])
    work.grad_accum = dict(job["grad_accum"])
    return work, method


def serve_node(
    request_blob: bytes, job_blob: bytes | None, clients_blob: bytes | None, node_config: Mapping[str, Any],
    cache: dict[str, Any] | None = None,
) -> tuple[bytes, bytes | None, bytes | None]:
    """Serve one message on a node: (reply, job to keep, client states to keep); None keeps what is there.

    ``cache`` (a dict the caller keeps between messages, for nodes that live as long as the run) holds the
    client work and method built for the current job, so later messages skip unpickling the job and rebuilding
    the models (~1.5 s a message on the default scenario). Errors come back as ``{"error": one line}`` (the
    traceback goes to the node's log), so the server can stop the run with a clear message instead of waiting.
    """
    t0 = time.perf_counter()
    try:
        request = loads(request_blob)
        setup = request.get("setup")
        if setup is not None:
            job_blob, job, saved = dumps(setup["job"]), setup["job"], {"states": setup["states"], "streams": setup["streams"]}
        elif job_blob is None or clients_blob is None:
            raise NodeError("this node holds no state for the run (was it restarted?); rerun the scenario")
        else:
            saved = loads(clients_blob)
        if cache is not None and setup is None and cache.get("job_blob") is job_blob:
            work, method = cache["built"]
        else:
            job = job if setup is not None else loads(job_blob)
            work, method = build_node(job, node_config)
            if cache is not None:
                cache.update(job_blob=job_blob, built=(work, method))
        built = time.perf_counter()
        if setup is not None:
            digest = {name: state_sha256(arch.model) for name, arch in work.archs.items()}  # base + adapters
            differ = sorted(a for a in digest if digest[a] != job["digest"].get(a))
            if differ:
                raise NodeError(
                    f"the node built different initial models for {', '.join(differ)} than the server "
                    "(other base model files, drake version or method code); give every node the same install"
                )
        store = StateStore(None, float("inf"))
        for cid, state in saved["states"].items():
            store.put(cid, state)
        unknown = [call for call, _ in request["calls"] if call not in ClientWork.CALLS]
        if unknown:
            raise NodeError(f"unknown call {', '.join(unknown)}; server and node run different drake versions")
        results = [
            getattr(work, call)(method, request["ctx"], first, store, saved["streams"]) for call, first in request["calls"]
        ]
        saved["states"] = {cid: store.get(cid) for cid in saved["states"]}
        seconds = {"build": built - t0, "work": time.perf_counter() - built}
        return dumps({"results": results, "seconds": seconds}), (job_blob if setup is not None else None), dumps(saved)
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the server as one line
        import traceback

        traceback.print_exc()
        line = " ".join(f"{type(exc).__name__}: {exc}".split())
        return dumps({"error": line}), None, None


def node_rows(
    data: Mapping[str, TaskRows], scenario: Any, hosted: Sequence[int], s: EngineSettings
) -> dict[str, TaskRows]:
    """The rows a node needs: its clients' training rows and the test rows its evaluations score."""
    own = {t for c in scenario.clients if c.id in hosted for t in c.tasks}
    train = own | (set(scenario.unseen) if s.effective_protocol().unseen_stops() else set())
    others = (s.others_limit or None) if s.eval_others else 0

    def widest(*limits: int | None) -> int | None:
        return None if any(x is None for x in limits) else max(limits)  # type: ignore[type-var]

    out = {}
    for name, rows in data.items():
        if name in own:
            limit = widest(s.self_limit or None, others)
        elif name in scenario.unseen:
            limit = s.unseen_limit or None
        else:
            limit = others
        test = rows.splits.get("test", [])
        out[name] = TaskRows(
            rows.name, rows.answer, rows.metric,
            {"train": rows.splits.get("train", []) if name in train else [], "test": test if limit is None else test[:limit]},
        )  # fmt: skip
    return out


def log_exchange(path: Path, kind: str, ctx: RoundContext, seconds: float, requests: Mapping[int, bytes],
                 replies: Mapping[int, Mapping[str, Any]]) -> None:
    """One JSON line per exchange: where the time goes (round trip vs each node's build and work)."""
    import json

    with open(path, "a") as f:
        f.write(json.dumps({"kind": kind, "round": ctx.round + 1, "seconds": seconds,
                            "bytes_out": sum(len(b) for b in requests.values()),
                            "nodes": {str(n): r.get("seconds", {}) for n, r in replies.items()}}) + "\n")  # fmt: skip


# ---------------------------------------------------------------------------------------- server side
class NodesEngine(Engine):
    """The round loop with every client's work on a node (``RemoteWork``); subclasses provide ``send``.

    ``self.hosts`` (node id -> client ids) is set by the subclass before the first round.
    """

    hosts: dict[int, list[int]]

    def client_work(self) -> RemoteWork:
        return RemoteWork(self)

    def start(self, method: Method, seed: int, hosts: Mapping[int, Sequence[int]]) -> None:
        """Remember the run and the placement (call before ``Engine.run``)."""
        self._method, self._seed = method, seed
        self.hosts = {node: list(cids) for node, cids in hosts.items()}
        self._digest = {name: state_sha256(arch.model) for name, arch in self.archs.items()}  # base + adapters
        self._ready: set[int] = set()

    @staticmethod
    def place(nodes: Sequence[int], client_ids: Sequence[int]) -> dict[int, list[int]]:
        """Clients dealt round-robin over the sorted node ids."""
        hosts: dict[int, list[int]] = {node: [] for node in nodes}
        for i, cid in enumerate(sorted(client_ids)):
            hosts[nodes[i % len(nodes)]].append(cid)
        return hosts

    def checkpoint(self) -> Checkpoint | None:
        return None  # client states live on the nodes, so a server-side checkpoint could not resume the run

    def send(self, kind: str, ctx: RoundContext, requests: Mapping[int, bytes]) -> dict[int, dict[str, Any]]:
        """Deliver one request per node and return each node's decoded reply (``{"results", "seconds"}``);
        raise NodeError (one line naming the node, its clients and the phase) when a node fails."""
        raise NotImplementedError

    def clients_of(self, node: int) -> str:
        return ", ".join(map(str, self.hosts.get(node, []))) or "none"

    def exchange(
        self, kind: str, ctx: RoundContext, calls: Mapping[int, list[tuple[str, Any]]], store: StateStore,
        streams: Mapping[int, Any],
    ) -> dict[int, list[Any]]:
        """One message per node (``calls``: node -> [(ClientWork call, its first argument)]); their results."""
        requests = {}
        for node, node_calls in calls.items():
            request: dict[str, Any] = {"ctx": ctx, "calls": node_calls}
            if node not in self._ready:
                request["setup"] = self._job(node, ctx, store, streams)
            requests[node] = dumps(request)
        replies = self.send(kind, ctx, requests)
        self._ready.update(calls)
        for reply in replies.values():  # engines whose nodes send their clients' states back keep them current
            for cid, state in reply.get("states", {}).items():
                store.put(cid, state)
        return {node: reply["results"] for node, reply in replies.items()}

    def _job(self, node: int, ctx: RoundContext, store: StateStore, streams: Mapping[int, Any]) -> dict[str, Any]:
        hosted = self.hosts[node]
        job = {
            "method": self._method.name, "config": self._method.config, "scenario": ctx.scenario, "seed": ctx.seed,
            "settings": dataclasses.replace(self.settings, progress=False), "hosted": hosted,
            "data": node_rows(self.data, ctx.scenario, hosted, self.settings),
            "grad_accum": dict(self.work.grad_accum), "threads": torch.get_num_threads(), "digest": self._digest,
        }  # fmt: skip
        return {"job": job, "states": {c: store.get(c) for c in hosted}, "streams": {c: streams[c] for c in hosted}}


class RemoteWork:
    """``ClientWork``'s calls for clients that live on nodes: one message per node and call."""

    def __init__(self, engine: NodesEngine) -> None:
        self.engine = engine
        self.grad_accum: dict[str, int] = {}

    def train(
        self, method: Method, ctx: RoundContext, payloads: Mapping[int, Any], store: StateStore,
        streams: Mapping[int, Any], bar: Any = None,
    ) -> RoundTraining:
        hosts = self.engine.hosts
        per_node: dict[int, dict[int, Any]] = {}
        for cid in ctx.participants:
            node = next(n for n, cids in hosts.items() if cid in cids)
            per_node.setdefault(node, {})[cid] = payloads[cid]
        calls = {node: [("train", node_payloads)] for node, node_payloads in per_node.items()}
        replies = self.engine.exchange("train", ctx, calls, store, streams)
        out = RoundTraining([], {"round": ctx.round + 1, "up": {}, "down": {}}, {})
        for node in calls:
            part: RoundTraining = replies[node][0]
            out.updates += part.updates
            out.comm["up"].update(part.comm["up"])
            out.comm["down"].update(part.comm["down"])
            out.log.update(part.log)
        order = {cid: i for i, cid in enumerate(ctx.participants)}
        out.updates.sort(key=lambda u: order[u.client_id])
        out.comm["up"] = {c: out.comm["up"][c] for c in ctx.participants if c in out.comm["up"]}
        out.comm["down"] = {c: out.comm["down"][c] for c in ctx.participants if c in out.comm["down"]}
        out.log = {c: out.log[c] for c in ctx.participants if c in out.log}
        if bar is not None:
            bar.set_postfix(nodes=len(calls), clients=len(out.updates))
        return out

    def evaluate(self, method: Method, ctx: RoundContext, server: ServerState, store: StateStore,
                 streams: Mapping[int, Any]) -> dict[int, dict[str, Any]]:
        return self._on_nodes("evaluate", ctx, server, store, streams)

    def evaluate_unseen(self, method: Method, ctx: RoundContext, server: ServerState, store: StateStore,
                        streams: Mapping[int, Any]) -> dict[int, dict[str, float]]:
        return self._on_nodes("evaluate_unseen", ctx, server, store, streams) if ctx.scenario.unseen else {}

    def adapt_unseen(self, method: Method, ctx: RoundContext, server: ServerState, store: StateStore,
                     streams: Mapping[int, Any]) -> dict[int, dict[str, dict[str, Any]]]:
        # a message of its own (not one with the zero-shot scoring), so the run's wall time has it as a phase
        if not ctx.scenario.unseen or not self.engine.protocol.unseen_stops():
            return {}
        return self._on_nodes("adapt_unseen", ctx, server, store, streams)

    def _on_nodes(self, call: str, ctx: RoundContext, server: ServerState, store: StateStore,
                  streams: Mapping[int, Any]) -> dict[int, Any]:
        """An evaluation ``call`` on every node that hosts clients; the results merged by client id."""
        nodes = [n for n, cids in self.engine.hosts.items() if cids]
        calls = {n: [(call, self._server_view(server, n, ctx))] for n in nodes}
        replies = self.engine.exchange("evaluate", ctx, calls, store, streams)
        return dict(sorted(((c, v) for n in nodes for c, v in replies[n][0].items()), key=lambda kv: kv[0]))

    def _server_view(self, server: ServerState, node: int, ctx: RoundContext) -> ServerState:
        """What ``load_server_model`` on a node may read: its architectures' globals and its clients' own globals."""
        hosted = self.engine.hosts[node]
        archs = {ctx.clients[c].architecture for c in hosted}
        return ServerState(
            per_arch={a: v for a, v in server.per_arch.items() if a in archs},
            per_client={c: v for c, v in server.per_client.items() if c in hosted},
        )
