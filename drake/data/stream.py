"""Client data streams: which training rows arrive in which round, and the replay memory that batches them.

Follows the FedMosaic/DRAKE protocol (reference: fedmosaic.md 2.3): in PFL-Dynamic each client's tasks arrive
one after another and round r sees the r-th part of the current task's shuffled training set; in PFL-Static
all of a client's tasks are pooled, shuffled and cut into one chunk per round. Arriving samples enter an
episodic memory and every training batch is drawn from that memory, preferring rarely used samples, so
earlier tasks stay replayable. Everything is a pure function of the seed, and the mutable part (the memory)
has a JSON-friendly state dict for checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from drake.errors import DataError
from drake.seeds import derive_seed, stable_hash64
from drake.spec import ClientSpec, ScenarioSpec

Item = tuple[str, int]  # (task name, row index in that task's train split)


def _train_size(train_sizes: Mapping[str, int], task: str) -> int:
    if task not in train_sizes:
        raise DataError(
            f"no training rows known for task {task!r}; build it first (`drake build --tasks {task}`)"
        )
    return int(train_sizes[task])


def round_schedule(
    client: ClientSpec,
    scenario: ScenarioSpec,
    train_sizes: Mapping[str, int],
    seed: int,
    owned: Mapping[str, Sequence[int]] | None = None,
) -> list[list[Item]]:
    """For each round of ``scenario``, the (task, row index) pairs that arrive at ``client``.

    Every training row of the client's tasks (only the ``owned[task]`` rows where given) arrives exactly once
    over all rounds (no row is dropped when a task's size does not divide evenly: parts differ by one row).
    """

    def rows_of(task: str) -> Sequence[int]:
        return owned[task] if owned and task in owned else range(_train_size(train_sizes, task))

    rounds: list[list[Item]] = [[] for _ in range(scenario.rounds)]
    if scenario.mode == "dynamic":
        for k, stage in enumerate(client.stages):
            start, end = stage.start_round, min(stage.end_round, scenario.rounds)
            if end <= start:
                raise DataError(
                    f"{scenario.name}: client {client.id} stage {k} has no rounds ({start}..{end})"
                )
            items = [(t, int(i)) for t in stage.tasks for i in rows_of(t)]
            order = np.random.default_rng(stable_hash64(seed, scenario.name, client.id, k, *stage.tasks)).permutation(
                len(items)
            )
            for r, part in zip(range(start, end), np.array_split(order, end - start)):
                rounds[r] = [items[j] for j in part]
    else:
        items = [(t, int(i)) for t in client.tasks for i in rows_of(t)]
        order = np.random.default_rng(stable_hash64(seed, scenario.name, client.id, "static")).permutation(len(items))
        for r, part in enumerate(np.array_split(order, scenario.rounds)):
            rounds[r] = [items[j] for j in part]
    return rounds


def stage_index(client: ClientSpec, round_idx: int) -> int:
    """Index of the stage active at ``round_idx`` (the last stage past the end)."""
    for k, stage in enumerate(client.stages):
        if stage.start_round <= round_idx < stage.end_round:
            return k
    return len(client.stages) - 1


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x))
    return e / e.sum()


class ReplayMemory:
    """Episodic memory with count-based priority sampling (FedMosaic's online datastream).

    Each draw first decays every use count by ``decay``, then picks ``batch_size`` distinct items with
    probability softmax(-count / temperature) and increments their counts: fresh samples are preferred, but
    old ones keep a chance of being replayed. A full memory evicts a uniformly random item.
    """

    def __init__(
        self, capacity: int = 100_000, *, temperature: float = 0.125, decay: float = 0.99, seed: int = 0
    ) -> None:
        if capacity < 1:
            raise DataError(f"replay memory capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.temperature = temperature
        self.decay = decay
        self.items: list[Item] = []
        self.counts = np.zeros(0, dtype=np.float64)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.items)

    def add(self, item: Item) -> None:
        if len(self.items) >= self.capacity:
            drop = int(self.rng.integers(len(self.items)))
            self.items.pop(drop)
            self.counts = np.delete(self.counts, drop)
        self.items.append((item[0], int(item[1])))
        self.counts = np.append(self.counts, 0.0)

    def draw(self, batch_size: int) -> list[Item]:
        """One batch of exactly ``batch_size`` items (repeated cyclically when memory is smaller)."""
        if not self.items:
            raise DataError("cannot draw a batch from an empty replay memory")
        self.counts *= self.decay
        p = _softmax(-self.counts / self.temperature)
        k = min(len(self.items), batch_size)
        idx = self.rng.choice(len(self.items), size=k, replace=False, p=p)
        self.counts[idx] += 1
        batch = [self.items[i] for i in idx]
        return (batch * (batch_size // k + 1))[:batch_size]

    def state_dict(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "temperature": self.temperature,
            "decay": self.decay,
            "items": [[t, i] for t, i in self.items],
            "counts": self.counts.tolist(),
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.capacity = int(state["capacity"])
        self.temperature = float(state["temperature"])
        self.decay = float(state["decay"])
        self.items = [(str(t), int(i)) for t, i in state["items"]]
        self.counts = np.asarray(state["counts"], dtype=np.float64)
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = dict(state["rng"])


class ClientStream:
    """One client's training batches per round: the round's arrivals go into replay memory, batches come out.

    ``batches(r, steps)`` interleaves arrivals and draws as the reference does (one draw per
    len(arrivals)/steps arrivals) and returns exactly ``steps`` batches of (task, row) pairs.
    """

    def __init__(
        self,
        client: ClientSpec,
        scenario: ScenarioSpec,
        train_sizes: Mapping[str, int],
        seed: int,
        batch_size: int,
        *,
        memory_size: int = 100_000,
        owned: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        self.client = client
        self.batch_size = batch_size
        self.schedule = round_schedule(client, scenario, train_sizes, seed, owned)
        self.memory = ReplayMemory(memory_size, seed=stable_hash64(seed, scenario.name, client.id, "replay"))
        self.rounds_done: list[int] = []

    @property
    def num_examples_seen(self) -> int:
        return sum(len(self.schedule[r]) for r in self.rounds_done if r < len(self.schedule))

    def arrivals(self, round_idx: int) -> list[Item]:
        return list(self.schedule[round_idx]) if 0 <= round_idx < len(self.schedule) else []

    def batches(self, round_idx: int, steps: int) -> list[list[Item]]:
        """``steps`` batches for round ``round_idx`` (fewer only if nothing ever arrived).

        The round's arrivals enter memory on the first call for that round only, so a method may call this
        several times in one round (e.g. FedRep's head phase then body phase) and draw more replay batches.
        """
        first = round_idx not in self.rounds_done
        arrivals = self.arrivals(round_idx) if first else []
        out: list[list[Item]] = []
        if arrivals and steps > 0:
            ratio, credit = steps / len(arrivals), 0.0
            for item in arrivals:
                self.memory.add(item)
                credit += ratio
                while credit >= 1 and len(out) < steps:
                    out.append(self.memory.draw(self.batch_size))
                    credit -= 1
        while len(out) < steps and len(self.memory):
            out.append(self.memory.draw(self.batch_size))
        if first:
            self.rounds_done.append(round_idx)
        return out

    def current_tasks(self, round_idx: int) -> tuple[str, ...]:
        """The tasks of the stage active at ``round_idx``."""
        return self.client.stage_at(round_idx).tasks

    def state_dict(self) -> dict[str, Any]:
        return {"memory": self.memory.state_dict(), "rounds_done": list(self.rounds_done)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.memory.load_state_dict(state["memory"])
        self.rounds_done = [int(r) for r in state["rounds_done"]]


def epoch_batches(rows: Sequence[Any], steps: int, batch_size: int, seed: int) -> list[list[Any]]:
    """``steps`` batches of ``rows``: seeded shuffles, one epoch after another (no replay memory; used for
    single-task fine-tuning: unseen-task adaptation and per-task calibration)."""
    import random

    rng = random.Random(seed)
    order: list[int] = []
    while len(order) < steps * batch_size:
        epoch = list(range(len(rows)))
        rng.shuffle(epoch)
        order += epoch
    return [[rows[i] for i in order[k * batch_size : (k + 1) * batch_size]] for k in range(steps)]


def build_streams(
    scenario: ScenarioSpec, train_labels: Mapping[str, Sequence[str]], seed: int, batch_size: int
) -> dict[int, ClientStream]:
    """Every client's stream for one run (``train_labels[task]``: the answer of each train row)."""
    sizes = {t: len(labels) for t, labels in train_labels.items()}
    owned = shared_task_partition(scenario, train_labels, seed)
    return {
        # the seed equals drake.fl.client.derive_seed(seed, "stream", id): same streams as before this helper
        c.id: ClientStream(c, scenario, sizes, derive_seed(seed, "stream", c.id), batch_size, owned=owned.get(c.id))
        for c in scenario.clients
    }


def shared_task_partition(
    scenario: ScenarioSpec, train_labels: Mapping[str, Sequence[str]], seed: int
) -> dict[int, dict[str, list[int]]]:
    """With ``partition: {kind: dirichlet, alpha}``, the train rows of every task held by several clients are
    split among them by label skew (the answer is the label); a task held by one client stays whole.
    Without a partition every holder sees all rows. Returns {client: {task: row indices}} for split tasks."""
    if scenario.partition.get("kind") != "dirichlet":
        return {}
    holders: dict[str, list[int]] = {}
    for c in scenario.clients:
        for t in c.tasks:
            holders.setdefault(t, []).append(c.id)
    out: dict[int, dict[str, list[int]]] = {}
    for task, ids in sorted(holders.items()):
        if len(ids) < 2:
            continue
        if task not in train_labels:
            raise DataError(f"no training rows known for task {task!r}; build it first (`drake build --tasks {task}`)")
        parts = dirichlet_partition(train_labels[task], len(ids), scenario.partition["alpha"], stable_hash64(seed, "dirichlet", task))
        for cid, part in zip(ids, parts):
            out.setdefault(cid, {})[task] = part
    return out


def dirichlet_partition(labels: Sequence[str], n_clients: int, alpha: float, seed: int) -> list[list[int]]:
    """Label-skew split: for each label, client shares ~ Dirichlet(alpha); every index assigned exactly once.

    Small ``alpha`` gives each client few labels; large ``alpha`` approaches an IID split.
    """
    if n_clients < 1:
        raise DataError(f"dirichlet_partition needs n_clients >= 1, got {n_clients}")
    if alpha <= 0:
        raise DataError(f"dirichlet_partition needs alpha > 0, got {alpha}")
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(n_clients)]
    by_label: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        by_label.setdefault(str(lab), []).append(i)
    for lab in sorted(by_label):
        idx = rng.permutation(by_label[lab])
        shares = rng.dirichlet(np.full(n_clients, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
        for c, chunk in enumerate(np.split(idx, cuts)):
            parts[c].extend(int(i) for i in chunk)
    return [sorted(p) for p in parts]
