"""FlowerEngine (``--engine flower``): the engine's rounds with every client on a real Flower SuperNode.

Who runs what:
- this process keeps the server half: ``Engine.run``'s loop (drake/fl/engine.py: sampling, configure_round,
  aggregate, comm accounting, callbacks, the returned result) runs here unchanged;
- a Flower ServerApp (drake/fl/flower_app.py), started by the SuperLink, holds the Grid and relays
  messages between this process (an authenticated loopback pipe) and the SuperNodes (Message API);
- each SuperNode hosts a fixed share of the clients (round-robin over the sorted node ids) and answers with
  ``drake.fl.nodes.serve_node``, keeping each client's state (adapter, optimizer, stream position, method
  extras) in the node's persistent Flower context between messages.

The messages and the ``ClientWork`` calls they make are those of every ``NodesEngine`` (drake/fl/nodes.py), so this engine
computes the same numbers as the sequential one (exactly, on the same machine and thread count).

Without ``DRAKE_FLOWER_SUPERLINK`` the engine starts its own SuperLink and ``DRAKE_FLOWER_NODES`` SuperNodes
on 127.0.0.1 (``--insecure``, loopback only) and stops them afterwards; docs/flower.md has the recipes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from multiprocessing.connection import Connection, Listener
from pathlib import Path
from typing import Any

from drake.errors import DrakeError, SpecError
from drake.fl.method import Method
from drake.fl.nodes import NodeError, NodesEngine, loads, log_exchange
from drake.fl.types import RoundContext, RunResult

INSTALL_HINT = "pip install drake-bench[flower]"
if importlib.util.find_spec("flwr") is None:
    raise DrakeError(f"engine 'flower' needs the Flower extra: {INSTALL_HINT}")

ENV_SUPERLINK = "DRAKE_FLOWER_SUPERLINK"  # host:port of a running SuperLink; unset: start one on loopback
ENV_ROOT_CERT = "DRAKE_FLOWER_ROOT_CERT"  # CA certificate for TLS to that SuperLink (required off loopback)
ENV_NODES = "DRAKE_FLOWER_NODES"  # SuperNodes to start (local) or to wait for (external); default 2 / 1
ENV_TIMEOUT = "DRAKE_FLOWER_TIMEOUT"  # seconds one message may take on a node (default 900)
ENV_START_TIMEOUT = "DRAKE_FLOWER_START_TIMEOUT"  # seconds to wait for the ServerApp and the nodes (default 180)
FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",  # never `uv sync` app dependencies at run time
    "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.2",  # default 1 s per message hop
    "RAY_USAGE_STATS_ENABLED": "0",
    "PYTHONUNBUFFERED": "1",
}


REPO = Path(__file__).resolve().parents[2]


class FlowerError(NodeError):
    """The federation failed: a node was lost, timed out or raised, or Flower did not start."""


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    try:
        return float(raw) if raw else default
    except ValueError:
        raise SpecError(f"{name}={raw!r}: expected a number of seconds") from None


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise SpecError(f"{name}={raw!r}: expected a positive integer")
    return int(raw)


def flower_env(home: Path) -> dict[str, str]:
    """The environment of every Flower process: private FLWR_HOME, telemetry and update checks off."""
    env = {**os.environ, **FLOWER_ENV, "FLWR_HOME": str(home)}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # the checkout that holds drake also holds the method packages (baselines, fedmosaic): nodes import them
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def _exe(name: str) -> str:
    """A Flower command from this interpreter's environment (the venv), else from PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        raise FlowerError(f"`{name}` not found next to {sys.executable} or on PATH; {INSTALL_HINT}")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------- federation
class LocalFederation:
    """A SuperLink and ``nodes`` SuperNodes on 127.0.0.1 (``--insecure``: loopback only), stopped by PID."""

    def __init__(self, nodes: int, home: Path) -> None:
        if nodes < 1:
            raise SpecError(f"a local federation needs at least one SuperNode, got {nodes}")
        self.n_nodes = nodes
        self.home = home
        self.port = 0
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.home / f"{name}.log", "wb")  # noqa: SIM115 - the child keeps it open
        proc = subprocess.Popen(cmd, env=flower_env(self.home), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def start(self, timeout: float = 60.0) -> LocalFederation:
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        link = self._spawn("superlink", [_exe("flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port", str(self.port)])
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                break
            if link.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise FlowerError(f"the local SuperLink did not start; see {self.home / 'superlink.log'}")
            time.sleep(0.2)
        for i in range(self.n_nodes):
            self._spawn(f"node{i}", [
                _exe("flower-supernode"), "--insecure", "--superlink", self.address, "--port", str(_free_port()),
                "--max-retries", "10", "--node-config", f"partition-id={i} num-partitions={self.n_nodes}",
            ])  # fmt: skip
        return self

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items()}

    def dead(self) -> list[str]:
        """'name (pid N, exit code C)' for every process of the federation that has exited."""
        return [f"{n} (pid {p.pid}, exit code {p.returncode})" for n, p in self.procs.items() if p.poll() is not None]

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM each process group this federation started, then SIGKILL what is left after ``grace``."""
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)

    def __enter__(self) -> LocalFederation:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _raise_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def write_app(home: Path, relay_file: Path, address: str, root_cert: str | None) -> Path:
    """The Flower App (pyproject only: its components live in the installed drake) and the CLI connection."""
    tls = f'root-certificates = "{Path(root_cert).resolve()}"' if root_cert else "insecure = true"
    (home / "config.toml").write_text(f'[superlink]\ndefault = "drake"\n\n[superlink.drake]\naddress = "{address}"\n{tls}\n')
    app = home / "app"
    app.mkdir(parents=True, exist_ok=True)
    (app / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        '[project]\nname = "drake-flower"\nversion = "1.0.0"\n'
        'description = "DRAKE on Flower: the ServerApp relay and the SuperNode runtime (drake.fl.flower_app)"\n'
        'license = "Apache-2.0"\ndependencies = []\n\n'
        '[tool.flwr.app]\npublisher = "drake"\n\n'
        '[tool.flwr.app.components]\nserverapp = "drake.fl.flower_app:server_app"\n'
        'clientapp = "drake.fl.flower_app:client_app"\n\n'
        f'[tool.flwr.app.config]\nrelay = "{relay_file}"\n'
    )
    return app


class Relay:
    """This process's end of the pipe to the ServerApp: a loopback listener with a random key."""

    def __init__(self, folder: Path) -> None:
        key = secrets.token_bytes(32)
        self.listener = Listener(("127.0.0.1", 0), authkey=key)
        self.file = folder / "relay.json"
        fd = os.open(self.file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"address": list(self.listener.address), "key": key.hex()}, f)
        self.conn: Connection | None = None
        self._accepted: list[Connection] = []

    def accept(self, timeout: float, check: Any) -> None:
        """Wait for the ServerApp to connect; ``check()`` returns a reason to give up early (or None)."""

        def run() -> None:
            with contextlib.suppress(OSError, EOFError):
                self._accepted.append(self.listener.accept())

        threading.Thread(target=run, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self._accepted:
            reason = check()
            if reason or time.monotonic() > deadline:
                raise FlowerError(
                    f"the Flower ServerApp did not connect back within {timeout:.0f} s ({reason or 'timeout'}); the "
                    "SuperLink must run on this machine, from an environment where drake is importable"
                )  # fmt: skip
            time.sleep(0.1)
        self.conn = self._accepted[0]

    def call(self, op: str, *args: Any, timeout: float = 300.0) -> Any:
        assert self.conn is not None
        try:
            self.conn.send((op, *args))
            if not self.conn.poll(timeout):
                raise FlowerError(f"the Flower ServerApp did not answer {op!r} within {timeout:.0f} s")
            status, value = self.conn.recv()
        except (EOFError, OSError) as exc:
            raise FlowerError(f"the Flower ServerApp went away during {op!r} ({type(exc).__name__})") from None
        if status != "ok":
            raise FlowerError(f"the Flower ServerApp failed on {op!r}: {value}")
        return value

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.call("stop", timeout=10.0)
            self.conn.close()
        self.listener.close()
        self.file.unlink(missing_ok=True)


def submit_run(home: Path, app: Path) -> str:
    """``flwr run`` the app on the "drake" connection; returns the run id."""
    cmd = [_exe("flwr"), "run", str(app), "drake", "--format", "json"]
    try:
        out = subprocess.run(cmd, env=flower_env(home), capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise FlowerError("`flwr run` did not return within 120 s; is the SuperLink reachable?") from None
    text = out.stdout.strip()
    try:
        info = json.loads(text[text.index("{") :])
    except ValueError:
        info = {}
    if out.returncode != 0 or not info.get("success", False):
        detail = (info.get("error") or (out.stderr or text).strip().splitlines() or ["no output"])
        raise FlowerError(f"`flwr run` failed: {' '.join(str(detail[-1] if isinstance(detail, list) else detail).split())}")
    return str(info.get("run-id", ""))


# ---------------------------------------------------------------------------------------- the engine
@dataclasses.dataclass
class _Session:
    relay: Relay
    home: Path
    timeout: float
    federation: LocalFederation | None
    run_id: str


class FlowerEngine(NodesEngine):
    """The round loop on a real SuperLink + SuperNodes; client state lives on the nodes."""

    name = "flower"

    def run(
        self, method: Method, scenario: Any, *, seed: int, resume: bool = False, callbacks: Sequence[Any] = ()
    ) -> RunResult:
        if resume:
            raise SpecError("--resume does not work with --engine flower (client state lives on the SuperNodes); rerun without it")
        with self._connect(method, seed, scenario):
            return super().run(method, scenario, seed=seed, callbacks=callbacks)

    # ------------------------------------------------------------------------------ connection
    @contextlib.contextmanager
    def _connect(self, method: Method, seed: int, scenario: Any) -> Iterator[None]:
        """Start (or reach) the federation, submit the app, wait for the ServerApp and the nodes, place clients."""
        keep = self.run_dir is not None
        home = (self.run_dir / "flower") if self.run_dir is not None else Path(tempfile.mkdtemp(prefix="drake-flower-"))
        home.mkdir(parents=True, exist_ok=True)
        start_timeout = _env_float(ENV_START_TIMEOUT, 180.0)
        address, root_cert = os.environ.get(ENV_SUPERLINK, "").strip(), os.environ.get(ENV_ROOT_CERT) or None
        if address and not root_cert and not _is_loopback(address):
            raise SpecError(f"{ENV_SUPERLINK}={address} is not a loopback address: set {ENV_ROOT_CERT} to its CA certificate (TLS)")
        federation = None if address else LocalFederation(_env_int(ENV_NODES, 2), home)
        relay = None
        stop_on_term = threading.current_thread() is threading.main_thread()
        if stop_on_term:  # a terminated run still stops the processes it started (the default handler would not)
            previous = signal.signal(signal.SIGTERM, _raise_exit)
        try:
            if federation is not None:
                address = federation.start().address
            relay = Relay(home)
            run_id = submit_run(home, write_app(home, relay.file, address, root_cert))

            def check() -> str | None:
                dead = federation.dead() if federation is not None else []
                return f"exited: {', '.join(dead)}; logs in {home}" if dead else None

            relay.accept(start_timeout, check)
            nodes = self._wait_nodes(relay, federation, start_timeout, check)
            self.start(method, seed, self.place(nodes, [c.id for c in scenario.clients]))
            self._session = _Session(relay, home, _env_float(ENV_TIMEOUT, 900.0), federation, run_id)
            (home / "placement.json").write_text(json.dumps(
                {"run_id": run_id, "superlink": address, "nodes": {str(n): c for n, c in self.hosts.items()},
                 "pids": federation.pids() if federation is not None else {}}, indent=1
            ))  # fmt: skip
            yield
        finally:
            if relay is not None:
                relay.close()
            if federation is not None:
                federation.stop()
            if stop_on_term:
                signal.signal(signal.SIGTERM, previous)
            if not keep:
                shutil.rmtree(home, ignore_errors=True)

    def _wait_nodes(self, relay: Relay, federation: LocalFederation | None, timeout: float, check: Any) -> list[int]:
        want = federation.n_nodes if federation is not None else _env_int(ENV_NODES, 1)
        deadline = time.monotonic() + timeout
        while True:
            nodes = sorted(relay.call("nodes"))
            if len(nodes) >= want:
                return nodes
            reason = check()
            if reason or time.monotonic() > deadline:
                raise FlowerError(f"only {len(nodes)} of {want} SuperNodes connected within {timeout:.0f} s ({reason or 'timeout'})")
            time.sleep(0.5)

    # ------------------------------------------------------------------------------ messaging
    def send(self, kind: str, ctx: RoundContext, requests: Mapping[int, bytes]) -> dict[int, dict[str, Any]]:
        """Push one message per node through the ServerApp and pull the replies (the round trip is logged)."""
        s = self._session
        batch = [(node, kind, blob) for node, blob in requests.items()]
        t0 = time.perf_counter()
        ids = s.relay.call("push", batch, str(ctx.round + 1))
        if len(ids) != len(batch) or not all(ids):
            raise FlowerError(f"the SuperLink refused the {kind} messages of round {ctx.round + 1} (too large?)")
        pending = dict(zip(ids, requests))
        out: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + s.timeout
        where = f"{kind} of round {ctx.round + 1}"
        while pending:
            for message_id, error, blob in s.relay.call("pull", list(pending)):
                node = pending.pop(message_id, None)
                if node is None:
                    continue
                reply = loads(blob) if blob is not None else {"error": error}
                if reply.get("error"):
                    raise FlowerError(f"node {node} (clients {self.clients_of(node)}) failed in {where}: {reply['error']}")
                out[node] = reply
            if not pending:
                break
            lost = ", ".join(f"{n} (clients {self.clients_of(n)})" for n in pending.values())
            dead = s.federation.dead() if s.federation is not None else []
            if dead:
                raise FlowerError(
                    f"a SuperNode exited during {where}: {', '.join(dead)}, while node(s) {lost} had not replied; "
                    "client state lives on the nodes, so the run stops (rerun it)"
                )  # fmt: skip
            if time.monotonic() > deadline:
                raise FlowerError(
                    f"no reply from node(s) {lost} in {where} within {s.timeout:.0f} s; a lost node takes its clients' state "
                    f"with it, so the run stops (restart the node and rerun; {ENV_TIMEOUT} sets the limit)"
                )  # fmt: skip
            time.sleep(0.2)
        log_exchange(s.home / "exchanges.jsonl", kind, ctx, time.perf_counter() - t0, requests, out)
        return out
