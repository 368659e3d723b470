"""The Flower App of ``--engine flower``: a ServerApp that relays, a ClientApp that runs a node's clients.

``flwr run`` installs this app (a pyproject that points here) on the SuperLink and every SuperNode.
- ``server_app`` connects back to the ``drake run`` process (address and key in the run config's relay
  file, readable only on the server's machine) and turns its requests into Flower Messages on the Grid:
  push one message per node, pull the replies, list the connected nodes.
- ``client_app`` answers "train" and "evaluate" messages with drake.fl.nodes.serve_node and keeps
  the node's job and client states in the node's persistent ``context.state`` between messages.
"""

from __future__ import annotations

import json
from multiprocessing.connection import Client
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

KEY = "drake"  # the one record of every message: {"blob": pickled request or reply}
JOB, CLIENTS = "drake.job", "drake.clients"  # node state: the job (fixed) and the client states (per message)

server_app = ServerApp()
client_app = ClientApp()


def _blob(blob: bytes) -> RecordDict:
    return RecordDict({KEY: ConfigRecord({"blob": blob})})


# ------------------------------------------------------------------------------------------ server
def _nodes(grid: Grid) -> list[int]:
    return sorted(grid.get_node_ids())


def _push(grid: Grid, batch: list[tuple[int, str, bytes]], group: str) -> list[str]:
    messages = [Message(_blob(blob), dst_node_id=node, message_type=kind, group_id=group) for node, kind, blob in batch]
    return list(grid.push_messages(messages))


def _pull(grid: Grid, ids: list[str]) -> list[tuple[str, str | None, bytes | None]]:
    out: list[tuple[str, str | None, bytes | None]] = []
    for m in grid.pull_messages(ids):
        if m.has_error():
            out.append((m.metadata.reply_to_message_id, f"Flower error {m.error.code}: {m.error.reason}", None))
        else:
            out.append((m.metadata.reply_to_message_id, None, bytes(m.content[KEY]["blob"])))
    return out


OPS: dict[str, Any] = {"nodes": _nodes, "push": _push, "pull": _pull}


@server_app.main()
def _serve(grid: Grid, context: Context) -> None:
    info = json.loads(Path(str(context.run_config["relay"])).read_text())
    with Client(tuple(info["address"]), authkey=bytes.fromhex(info["key"])) as conn:
        while True:
            try:
                op, *args = conn.recv()
            except EOFError:
                return
            if op == "stop":
                conn.send(("ok", None))
                return
            try:
                conn.send(("ok", OPS[op](grid, *args)))
            except Exception as exc:  # noqa: BLE001 - reported to the drake process as one line
                conn.send(("error", " ".join(f"{type(exc).__name__}: {exc}".split())))


# ------------------------------------------------------------------------------------------ client
def _answer(msg: Message, context: Context) -> Message:
    from drake.fl.nodes import serve_node

    state = context.state
    job = bytes(state[JOB]["blob"]) if JOB in state else None
    clients = bytes(state[CLIENTS]["blob"]) if CLIENTS in state else None
    reply, job, clients = serve_node(bytes(msg.content[KEY]["blob"]), job, clients, dict(context.node_config))
    if job is not None:
        state[JOB] = ConfigRecord({"blob": job})
    if clients is not None:
        state[CLIENTS] = ConfigRecord({"blob": clients})
    return Message(_blob(reply), reply_to=msg)


@client_app.train()
def _train(msg: Message, context: Context) -> Message:
    return _answer(msg, context)


@client_app.evaluate()
def _evaluate(msg: Message, context: Context) -> Message:
    return _answer(msg, context)
