"""The helpers every DRAKE-synth family shares (drake/data/synth/base.py)."""

from __future__ import annotations

from collections import Counter

from drake.data.synth.base import SampleContext, pool_ordered_options

POOL = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")


def test_pool_ordered_options_keep_the_pool_order_and_balance_the_answer() -> None:
    draws = []
    for i in range(800):
        ctx = SampleContext("t", "train", i, 0)
        options, pos = pool_ordered_options(ctx, ctx.rng, POOL, 4)
        assert options == sorted(options, key=POOL.index) and len(set(options)) == 4
        draws.append((options, pos))
    for b in range(0, 800, 4):  # the answer position is a slot: every block of 4 uses each position once
        assert sorted(pos for _, pos in draws[b : b + 4]) == [0, 1, 2, 3]
    answers = Counter(options[pos] for options, pos in draws)
    assert set(answers) == set(POOL) and max(answers.values()) < 2 * min(answers.values())
    # the option set is drawn before the slot: it says nothing about where the answer is
    lows = [sum(POOL.index(o) for o in options) for options, _ in draws]
    by_pos = [sum(x for x, (_, p) in zip(lows, draws) if p == k) / 200 for k in range(4)]
    assert max(by_pos) - min(by_pos) < 1.0


def test_a_full_pool_names_the_value_by_its_position() -> None:
    for i in range(20):
        ctx = SampleContext("t", "test", i, 3)
        options, pos = pool_ordered_options(ctx, ctx.rng, POOL[:4], 4)
        assert options == list(POOL[:4])
