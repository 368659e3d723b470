"""Client streams: round schedules (dynamic/static), replay memory, ClientStream, dirichlet partition."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from drake.data.stream import (
    ClientStream,
    ReplayMemory,
    build_streams,
    dirichlet_partition,
    round_schedule,
    shared_task_partition,
)
from drake.errors import DataError
from drake.spec import load_scenario

SIZES = {"a": 10, "b": 7, "c": 12, "d": 5}


def _scenario(tmp_path: Path, mode: str, rounds: int = 4, rounds_per_task: int = 2):
    text = f"""
name: t-{mode}
description: test
mode: {mode}
rounds: {rounds}
rounds_per_task: {rounds_per_task}
pools:
  p: [m1, m2]
clients:
  - {{id: 0, tasks: [a, b]}}
  - {{id: 1, tasks: [c, d]}}
"""
    path = tmp_path / f"{mode}.yaml"
    path.write_text(text)
    return load_scenario(path)


def _all_rows(client) -> Counter:
    return Counter((t, i) for t in client.tasks for i in range(SIZES[t]))


def test_dynamic_schedule_order_and_coverage(tmp_path):
    sc = _scenario(tmp_path, "dynamic")
    for client in sc.clients:
        sched = round_schedule(client, sc, SIZES, seed=0)
        assert len(sched) == 4
        first, second = client.tasks
        assert {t for r in sched[:2] for t, _ in r} == {first}  # rounds 0-1: first task only
        assert {t for r in sched[2:] for t, _ in r} == {second}
        assert Counter(x for r in sched for x in r) == _all_rows(client)  # every row exactly once
        assert abs(len(sched[0]) - len(sched[1])) <= 1  # equal parts
    again = round_schedule(sc.clients[0], sc, SIZES, seed=0)
    assert again == round_schedule(sc.clients[0], sc, SIZES, seed=0)
    assert again != round_schedule(sc.clients[0], sc, SIZES, seed=1)
    assert [i for _, i in again[0]] != sorted(i for _, i in again[0])  # shuffled, not in file order


def test_static_schedule_pools_tasks(tmp_path):
    sc = _scenario(tmp_path, "static", rounds=3)
    client = sc.clients[0]
    sched = round_schedule(client, sc, SIZES, seed=0)
    assert len(sched) == 3
    assert Counter(x for r in sched for x in r) == _all_rows(client)
    sizes = [len(r) for r in sched]
    assert max(sizes) - min(sizes) <= 1
    assert any(len({t for t, _ in r}) == 2 for r in sched)  # tasks are pooled: rounds mix them


def test_schedule_needs_train_sizes(tmp_path):
    sc = _scenario(tmp_path, "dynamic")
    with pytest.raises(DataError, match="build it first"):
        round_schedule(sc.clients[0], sc, {"a": 3}, seed=0)


def test_replay_prefers_fresh_samples_and_is_deterministic():
    m1, m2 = ReplayMemory(seed=3), ReplayMemory(seed=3)
    for i in range(10):
        m1.add(("a", i))
        m2.add(("a", i))
    draws1 = [m1.draw(1)[0] for _ in range(10)]
    draws2 = [m2.draw(1)[0] for _ in range(10)]
    assert draws1 == draws2
    assert len(set(draws1)) == 10  # softmax(-count/0.125): an unused sample beats a used one ~3000:1


def test_replay_batch_padding_and_capacity():
    m = ReplayMemory(capacity=3, seed=0)
    for i in range(5):
        m.add(("a", i))
    assert len(m) == 3
    batch = m.draw(7)
    assert len(batch) == 7 and len(set(batch)) == 3  # 3 distinct items cycled to fill the batch
    with pytest.raises(DataError):
        ReplayMemory(seed=0).draw(2)


def test_replay_state_round_trip_through_json():
    m = ReplayMemory(seed=5)
    for i in range(6):
        m.add(("b", i))
    m.draw(2)
    state = json.loads(json.dumps(m.state_dict()))
    restored = ReplayMemory(seed=999)
    restored.load_state_dict(state)
    assert [m.draw(3) for _ in range(5)] == [restored.draw(3) for _ in range(5)]


def test_client_stream_batches_deterministic_and_resumable(tmp_path):
    sc = _scenario(tmp_path, "dynamic")
    client = sc.clients[0]
    a = ClientStream(client, sc, SIZES, seed=0, batch_size=4)
    rounds_a = [a.batches(r, steps=6) for r in range(4)]
    for r, batches in enumerate(rounds_a):
        assert len(batches) == 6 and all(len(b) == 4 for b in batches)
        assert set(a.arrivals(r)) <= set(a.memory.items)  # arrivals all went into memory
    assert any(t == "a" for b in rounds_a[2] for t, _ in b)  # after the switch, the old task is replayed
    assert len(a.memory) == SIZES["a"] + SIZES["b"]

    b = ClientStream(client, sc, SIZES, seed=0, batch_size=4)
    assert [b.batches(r, steps=6) for r in range(2)] == rounds_a[:2]
    state = json.loads(json.dumps(b.state_dict()))
    c = ClientStream(client, sc, SIZES, seed=0, batch_size=4)
    c.load_state_dict(state)
    assert [c.batches(r, steps=6) for r in (2, 3)] == rounds_a[2:]
    assert c.num_examples_seen == SIZES["a"] + SIZES["b"]


def test_client_stream_more_steps_than_arrivals(tmp_path):
    sc = _scenario(tmp_path, "dynamic")
    s = ClientStream(sc.clients[1], sc, SIZES, seed=1, batch_size=2)
    out = s.batches(0, steps=50)  # 6 arrivals, 50 steps: the rest are drawn from memory
    assert len(out) == 50
    assert {x for b in out for x in b} == set(s.arrivals(0))


def test_dirichlet_partition_covers_every_index_once():
    labels = [f"l{i % 5}" for i in range(200)]
    parts = dirichlet_partition(labels, n_clients=4, alpha=0.3, seed=0)
    assert len(parts) == 4
    flat = [i for p in parts for i in p]
    assert sorted(flat) == list(range(200))
    assert parts == dirichlet_partition(labels, 4, 0.3, seed=0)
    assert parts != dirichlet_partition(labels, 4, 0.3, seed=1)

    def top_share(alpha: float) -> float:  # mean share of each label held by its main client
        split = dirichlet_partition(labels, 4, alpha, seed=0)
        owners = [
            Counter(c for c, p in enumerate(split) for i in p if labels[i] == lab) for lab in set(labels)
        ]
        return sum(o.most_common(1)[0][1] / 40 for o in owners) / len(owners)

    assert top_share(0.01) >= 0.8  # tiny alpha: labels concentrate on one client
    assert top_share(100.0) <= 0.5  # large alpha: close to IID (0.25 each)
    with pytest.raises(DataError):
        dirichlet_partition(labels, 0, 1.0, seed=0)
    with pytest.raises(DataError):
        dirichlet_partition(labels, 2, 0.0, seed=0)


def _shared_scenario(tmp_path: Path, partition: str = ""):
    path = tmp_path / "shared.yaml"
    path.write_text(
        "name: shared\ndescription: t\nmode: static\nrounds: 2\npools:\n  p: [m, m, m]\n"
        "clients:\n  - {id: 0, tasks: [a, b]}\n  - {id: 1, tasks: [a]}\n  - {id: 2, tasks: [a]}\n" + partition
    )
    return load_scenario(path)


def test_dirichlet_partition_splits_only_shared_tasks(tmp_path):
    labels = {"a": ["x", "y", "z"] * 40, "b": ["x", "y"] * 10}
    sc = _shared_scenario(tmp_path, "partition: {kind: dirichlet, alpha: 0.1}\n")
    owned = shared_task_partition(sc, labels, seed=0)
    assert set(owned) == {0, 1, 2} and all(set(v) == {"a"} for v in owned.values())  # b has one holder
    parts = [owned[c]["a"] for c in (0, 1, 2)]
    assert sorted(i for p in parts for i in p) == list(range(120))  # disjoint, complete
    # label skew: with alpha 0.1 some client holds (almost) none of some label
    shares = [Counter(labels["a"][i] for i in p) for p in parts]
    assert min(s.get(lab, 0) for s in shares for lab in "xyz") <= 4
    streams = build_streams(sc, labels, seed=0, batch_size=4)
    seen = {c: {i for r in range(2) for t, i in streams[c].arrivals(r) if t == "a"} for c in (0, 1, 2)}
    assert [sorted(seen[c]) for c in (0, 1, 2)] == parts
    assert {i for r in range(2) for t, i in streams[0].arrivals(r) if t == "b"} == set(range(20))
    assert shared_task_partition(sc, labels, seed=0) == owned  # deterministic
    assert shared_task_partition(sc, labels, seed=1) != owned


def test_without_partition_every_holder_sees_all_rows(tmp_path):
    labels = {"a": ["x", "y"] * 30, "b": ["x"] * 10}
    sc = _shared_scenario(tmp_path)
    assert shared_task_partition(sc, labels, seed=0) == {}
    streams = build_streams(sc, labels, seed=0, batch_size=4)
    for c in (0, 1, 2):
        assert sorted(i for r in range(2) for t, i in streams[c].arrivals(r) if t == "a") == list(range(60))
