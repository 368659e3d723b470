"""The contract every DRAKE-synth family follows.

A family is a function ``(ctx: SampleContext, **params) -> Sample`` registered in ``FAMILIES``. It must be a pure
function of the context: every sample is deterministic in (task, split, index, seed). Answer balance is by
construction: use ``ctx.slot(n)`` to pick which option/label is correct, not a random draw.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from drake.registry import Registry
from drake.seeds import stable_hash64

IMAGE_TOKEN = "<image>"


@dataclass(frozen=True)
class Sample:
    """A generated sample before it becomes a canonical row."""

    images: list[Image.Image]
    prompt: str  # contains exactly len(images) IMAGE_TOKEN placeholders
    answer: str
    choices: list[str] | None = None  # None for open-ended tasks
    meta: dict[str, Any] = field(default_factory=dict)  # not written; for tests/audits (e.g. concept ids)


@dataclass(frozen=True)
class SampleContext:
    task: str
    split: str
    index: int
    seed: int
    image_size: int = 32
    n_images: int = 1  # the task's declared images per sample

    @property
    def rng(self) -> random.Random:
        """A fresh RNG keyed by (task, split, index, seed); call once and keep the object."""
        return random.Random(stable_hash64(self.task, self.split, self.index, self.seed))

    def slot(self, n: int, salt: str = "") -> int:
        """Balanced label in ``range(n)``: each block of n consecutive indices uses every value once.

        The order within a block is a seeded permutation, so positions are balanced by construction but
        not trivially predictable from the index.
        """
        block, offset = divmod(self.index, n)
        perm = list(range(n))
        random.Random(stable_hash64(self.task, self.split, block, self.seed, salt)).shuffle(perm)
        return perm[offset]


Family = Callable[..., Sample]
FAMILIES: Registry[Family] = Registry("synth family")


def place(correct: str, distractors: Sequence[str], slot: int) -> list[str]:
    """Options with ``correct`` at position ``slot`` and the distractors, in order, elsewhere."""
    options = list(distractors)
    options.insert(slot, correct)
    return options


def pool_ordered_options(ctx: SampleContext, rng: random.Random, pool: Sequence[str], k: int,
                         salt: str = "pos") -> tuple[list[str], int]:
    """``k`` options of ``pool`` listed in pool order, and the correct one's index (a balanced slot).

    For labelled options (``A. red``, ``1. apple pie``), answered by the label. With options in a random
    order the label is a second lookup that the tiny zoo does not learn in the calibration budget (27% vs
    100% with a fixed order, on an item it reads at 100%: benchmarks/learnability_probes.py). In pool order
    the label is partly a function of the answer, as in real benchmarks whose options follow a natural
    order, while the option set is drawn before the slot, so the text alone still gives 1/k.
    """
    picks = sorted(rng.sample(range(len(pool)), k))
    return [pool[i] for i in picks], ctx.slot(k, salt)


def choice_list(choices: Sequence[str]) -> str:
    """DRAKE's appended list: ``Choice list:[a, b, c]. Your answer is:`` (exact real spelling)."""
    return "Choice list:[" + ", ".join(choices) + "]. Your answer is:"


def letter_options(options: Sequence[str]) -> str:
    """SEED-Bench style lettered options, one per line."""
    return "\n".join(f"{chr(65 + i)}. {o}" for i, o in enumerate(options))


def image_tokens(n: int, labels: Sequence[str] | None = None) -> str:
    """``<image><image>`` or ``Image A: <image>, Image B: <image>`` when labels are given."""
    if labels is None:
        return IMAGE_TOKEN * n
    return ", ".join(f"{lab}: {IMAGE_TOKEN}" for lab in labels[:n])
