"""Scoring under the run's evaluation protocol (drake/protocol.py): which model, which tasks, which rounds.

Each function works on the clients a ``ClientWork`` hosts (drake/fl/work.py) and leaves every client's
saved state, its stream position and torch's global RNG as they were: evaluation never changes training.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

import torch

from drake.data.stream import ClientStream, epoch_batches
from drake.errors import DataError
from drake.fl.client import ClientRuntime, ClientState, Row, has_dropout
from drake.fl.method import Method, ScoringWatch, ServerState
from drake.fl.state_store import StateStore
from drake.fl.types import RoundContext
from drake.seeds import derive_seed

if TYPE_CHECKING:
    from drake.fl.work import ClientWork


def scored_model(work: ClientWork, method: Method, ctx: RoundContext, rt: ClientRuntime, server: ServerState) -> None:
    """Put the model the protocol scores in place on ``rt``: the client's own post-local state (or, under a
    ``server`` protocol, what the server holds for it), in the state the method is scored in."""
    if work.protocol.scored == "server":
        method.load_server_model(ctx, rt, server)
    method.select_scored_state(ctx, rt)


def evaluate_round(
    work: ClientWork, method: Method, ctx: RoundContext, server: ServerState, store: StateStore,
    streams: Mapping[int, ClientStream],
) -> dict[int, dict[str, Any]]:
    """Each client's scored model on its own tasks (Self) and, at the protocol's Others rounds, on the
    other clients' tasks; which tasks (all, or those started) is the protocol's.
    Returns ``{client: {"scores": {task: score}, "diagnostics": the method's (where it gives some)}}``."""
    s, p, rnd = work.settings, work.protocol, ctx.round
    specs = {c.id: c for c in ctx.scenario.clients}
    tasks = {cid: p.scored_tasks(spec, rnd) for cid, spec in specs.items()}
    self_round = rnd + 1 in p.self_rounds(ctx.scenario)
    others_rounds = p.others_rounds(ctx.scenario)
    others = s.eval_others and rnd + 1 in others_rounds
    out: dict[int, dict[str, Any]] = {}
    memo: dict[Hashable, float] = {}
    for cid in work.hosts(specs):
        rt = work.runtime(method, ctx.clients[cid], streams[cid], store.get(cid), ctx.seed, rnd)
        scored_model(work, method, ctx, rt, server)
        watch = method.watch_scoring(ctx, rt) if others and s.diagnostics else None
        score = _scorer(work, method, ctx, rt, server, memo, watch)
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
        if others and s.diagnostics:
            own = [t for t in scores if t in specs[cid].tasks]
            theirs = [t for t in scores if t not in specs[cid].tasks]
            diag = method.diagnostics(ctx, rt, own, theirs, final=rnd + 1 == others_rounds[-1], limit=s.others_limit,
                                      watch=watch, passes=s.diagnostic_passes)  # fmt: skip
            if diag:
                out[cid]["diagnostics"] = diag
    # the client's stream position must not move because of evaluation
    for cid in work.hosts(specs):
        st = store.get(cid)
        if st.stream:
            streams[cid].load_state_dict(st.stream)
    return out


def evaluate_unseen(
    work: ClientWork, method: Method, ctx: RoundContext, server: ServerState, store: StateStore,
    streams: Mapping[int, ClientStream],
) -> dict[int, dict[str, float]]:
    """Each client's scored model, zero-shot, on the unseen tasks the protocol gives it."""
    unseen = ctx.scenario.unseen
    if not unseen:
        return {}
    out: dict[int, dict[str, float]] = {}
    memo: dict[Hashable, float] = {}
    tasks = work.protocol.unseen_tasks(ctx.clients, unseen)
    for cid in work.hosts(tasks):
        rt = work.runtime(method, ctx.clients[cid], streams[cid], store.get(cid), ctx.seed, ctx.round)
        scored_model(work, method, ctx, rt, server)
        score = _scorer(work, method, ctx, rt, server, memo)
        out[cid] = {t: score(t, work.settings.unseen_limit) for t in tasks[cid]}
    return out


def adapt_unseen(
    work: ClientWork, method: Method, ctx: RoundContext, server: ServerState, store: StateStore,
    streams: Mapping[int, ClientStream],
) -> dict[int, dict[str, dict[str, Any]]]:
    """FedMosaic's generalization test: how fast each client's learned model adapts to a new task.

    A copy of a client's scored model is fine-tuned for the protocol's ``unseen_steps`` on each unseen task
    the protocol gives it (``unseen_tasks``), on the task's train split (the same seeded batches for every
    client, so clients differ only in what they learned), with the method's learning-rate groups scaled
    by ``unseen_lr_scale``, and scored every ``unseen_eval_every`` steps and after the last one. Each task
    starts from the scored model with a fresh optimizer. The client's saved state, its stream position,
    torch's global RNG and the model's weights are left as they were.
    Returns ``{client: {task: {"score": after the last step, "steps": n, "curve": {step: score},
    "loss": {step: mean training loss of the steps up to it}}}}`` (the loss shows whether the fine-tune
    fits the task at all, apart from what that buys on the test split).
    """
    p, scenario = work.protocol, ctx.scenario
    stops = p.unseen_stops()
    if not scenario.unseen or not stops:
        return {}
    steps = stops[-1]
    batch = work.settings.unseen_adapt_batch or method.config.batch_size
    tasks = p.unseen_tasks(ctx.clients, scenario.unseen)
    batches = {t: unseen_batches(work, t, ctx.seed, steps, batch) for t in scenario.unseen}
    out: dict[int, dict[str, dict[str, Any]]] = {}
    memo: dict[Hashable, dict[str, dict[str, Any]]] = {}
    with _rng_kept(work):
        for cid in work.hosts(tasks):
            saved = store.get(cid)
            state = ClientState(adapter=saved.adapter, optimizer=None, stream=copy.deepcopy(saved.stream),
                                method_state=copy.deepcopy(saved.method_state))  # fmt: skip
            rt = work.runtime(method, ctx.clients[cid], streams[cid], state, ctx.seed, ctx.round, p.unseen_lr_scale)
            scored_model(work, method, ctx, rt, server)
            # the same model trained on the same batches ends the same, unless dropout (seeded per client) acts
            key = None if has_dropout(rt.model) else _eval_key(work, method, ctx, rt, server)
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
                loss: dict[int, float] = {}
                for stop in stops:
                    loss[stop] = rt.train(stop - done, batches=batches[task][done:stop], lr_groups=groups)["loss"]
                    done = stop
                    curve[stop] = rt.evaluate(task, limit=work.settings.unseen_limit)["score"]
                scores[task] = {"score": curve[steps], "steps": steps, "curve": curve, "loss": loss}
                with torch.no_grad():
                    for param, p0 in zip(params, start):
                        param.copy_(p0)
            out[cid] = scores
            if key is not None:
                memo[key] = scores  # every client it serves gets a copy
    return out


def unseen_batches(work: ClientWork, task: str, seed: int, steps: int, batch: int) -> list[list[Row]]:
    """``steps`` batches from ``task``'s train split: seeded shuffles, one epoch after another."""
    rows = work.data[task].splits.get("train") or []
    if not rows:
        raise DataError(f"unseen task {task!r} has no train rows to adapt on; build its train split or set "
                        "engine.unseen_adapt_steps=0")  # fmt: skip
    return epoch_batches(rows, steps, batch, derive_seed(seed, "unseen-adapt", task))


def _scorer(work: ClientWork, method: Method, ctx: RoundContext, rt: ClientRuntime, server: ServerState,
            memo: dict[Hashable, float], watch: ScoringWatch | None = None) -> Callable[[str, int | None], float]:
    """``score(task, limit)`` for a client's scored model: clients with the same ``method.eval_key`` (the
    same model) share one evaluation per task and limit within ``memo``, the rest score on their own.
    A ``watch`` (``method.watch_scoring``) sees every scoring forward, so its client scores on its own."""
    key = None if watch is not None else _eval_key(work, method, ctx, rt, server)

    def evaluate(task: str, limit: int | None) -> float:
        with watch.task(task) if watch is not None else nullcontext():
            return rt.evaluate(task, limit=limit)["score"]

    def score(task: str, limit: int | None) -> float:
        if key is None:
            return evaluate(task, limit)
        if (key, task, limit) not in memo:
            memo[key, task, limit] = evaluate(task, limit)
        return memo[key, task, limit]

    return score


def _eval_key(work: ClientWork, method: Method, ctx: RoundContext, rt: ClientRuntime, server: ServerState) -> Hashable | None:
    """The method's ``eval_key`` (and the architecture: each has its own base model); None where the
    method watches the rows it scores (``before_eval``) or does not give one, and under a post-local
    protocol (every client then holds its own model)."""
    if work.protocol.scored != "server" or rt.before_eval is not None:
        return None
    key = method.eval_key(ctx, rt, server)
    return None if key is None else (rt.architecture, key)


@contextmanager
def _rng_kept(work: ClientWork) -> Iterator[None]:
    """Torch's global RNG (CPU and the GPUs in use) as it was before the block."""
    devices = sorted({a.loaded.device.index or 0 for a in work.archs.values() if a.loaded.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        yield
