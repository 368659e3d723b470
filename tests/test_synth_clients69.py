"""DRAKE-synth families of clients 6-9 (quality, charts, scene, icons, dishes): format, determinism, balance,
and that the prompt text alone cannot predict the answer beyond what the design allows.

Run as a script to write a contact sheet (4 samples per task) and print ms per sample:
``.venv/bin/python tests/test_synth_clients69.py``.
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections import Counter, defaultdict
from functools import cache, lru_cache

import pytest

import drake.data.synth.families  # noqa: F401  (registers the families)
from drake.data.synth.base import FAMILIES, Sample, SampleContext
from drake.data.synth.families.icons import PLURAL
from drake.spec import load_tasks

TASKS = [
    "coinstruct_0", "coinstruct_1", "coinstruct_2", "coinstruct_3", "tqa_0", "dvqa_0", "seedbench2_0",
    "seedbench2_1", "iconqa_0", "iconqa_1", "iconqa_2", "iconqa_3", "wcvqa_0", "wcvqa_1", "wcvqa_2", "wcvqa_3",
]  # fmt: skip
N = 480  # a multiple of every block size used (2, 3, 4, 5, 6, 8, 10)
OPEN_TAIL = " Answer with a single word or a number. "
# best accuracy a text-only predictor can reach by design (None: 1 / number of choices)
# (iconqa_3: half count questions, 1 in 4 values; half "which is most frequent", 1 in 6 kinds)
TEXT_CEILING = {"wcvqa_1": 0.5, "wcvqa_2": 0.25, "iconqa_2": 1 / 4, "iconqa_3": (1 / 4 + 1 / 6) / 2}
# task -> (block size, label key) where the underlying label is balanced by construction (wcvqa, seedbench2_1:
# the answer is the slot-th option of a list in pool order, so each value is uniform in expectation only)
LABEL_BLOCKS = {"coinstruct_0": 4, "iconqa_0": 4, "iconqa_2": 4, "iconqa_1": 8, "iconqa_3": 8}


@lru_cache(maxsize=1)
def _specs():
    return load_tasks()


def make(name: str, index: int, split: str = "train", seed: int = 0) -> Sample:
    spec = _specs()[name]
    src = spec.sources["synth"]
    ctx = SampleContext(name, split, index, seed, 32, spec.images)
    return FAMILIES.get(src.family)(ctx, **src.params)


@cache
def samples(name: str, split: str = "train") -> tuple[Sample, ...]:
    return tuple(make(name, i, split) for i in range(N))


@pytest.mark.parametrize("name", TASKS)
def test_format(name: str) -> None:
    spec = _specs()[name]
    for s in samples(name):
        assert len(s.images) == spec.images
        assert all(im.mode == "RGB" and im.size == (32, 32) for im in s.images)
        assert s.prompt.count("<image>") == spec.images
        if spec.answer == "open":
            assert s.choices is None and s.prompt.endswith(OPEN_TAIL)
            assert s.answer.isdigit() or s.answer in PLURAL.values()
            continue
        assert s.choices and s.answer in s.choices and len(set(s.choices)) == len(s.choices)
        if name.startswith("wcvqa"):
            assert s.choices == ["1", "2", "3", "4", "5"]
            assert "Print only the answer with a single answer id (1,2,3,4,5)." in s.prompt
            assert all(f"\n{c}. " in s.prompt for c in s.choices)
        elif name in ("coinstruct_0", "coinstruct_1", "seedbench2_0", "seedbench2_1"):
            assert all(f"\n{c}. " in s.prompt for c in s.choices)
            assert s.prompt.endswith("\nAnswer with the option's letter from the given choices directly.")
        elif name in ("coinstruct_2", "coinstruct_3"):
            assert s.prompt.endswith(f"Choice list:[{', '.join(s.choices)}]. You must choose your answer "
                                     "from the Choice List. ")
        else:
            assert s.prompt.endswith(f"\nChoice list:[{', '.join(s.choices)}]. Your answer is:")
        if not name.startswith("seedbench"):
            assert s.prompt.startswith("<image>")


@pytest.mark.parametrize("name", TASKS)
def test_deterministic_and_varied(name: str) -> None:
    for i in (0, 7, 31):
        a, b = make(name, i), make(name, i)
        assert (a.prompt, a.answer, a.choices) == (b.prompt, b.answer, b.choices)
        assert [im.tobytes() for im in a.images] == [im.tobytes() for im in b.images]
    firsts = {s.images[0].tobytes() for s in samples(name)[:40]}
    assert len(firsts) >= 35, "images barely vary"
    other = make(name, 0, "test")
    assert (other.prompt, other.images[0].tobytes()) != (samples(name)[0].prompt, samples(name)[0].images[0].tobytes())


@pytest.mark.parametrize("name", TASKS)
def test_balance(name: str) -> None:
    rows = samples(name)
    if rows[0].choices is not None:
        k = len(rows[0].choices)
        assert all(len(s.choices) == k for s in rows)
        pos = [s.choices.index(s.answer) for s in rows]
        for b in range(0, N, k):
            assert sorted(pos[b : b + k]) == list(range(k)), f"block {b}: {pos[b : b + k]}"
    if name in LABEL_BLOCKS:
        k = LABEL_BLOCKS[name]
        first = Counter(s.meta["label"] for s in rows[:k])
        assert len(first) == k, first
        for b in range(k, N, k):
            assert Counter(s.meta["label"] for s in rows[b : b + k]) == first


def _option_texts(s: Sample) -> list[str]:
    """What the prompt shows for each choice (the text after 'A. ' / '1. ', or the choice itself)."""
    out = []
    for c in s.choices:
        m = re.search(rf"\n{re.escape(c)}\. ([^\n]*)", s.prompt)
        out.append(m.group(1) if m and (len(c) == 1) else c)
    return out


def _question_words(s: Sample) -> set[str]:
    """Words of the prompt outside the option lines and the choice list."""
    text = re.sub(r"\n[A-E1-5]\. [^\n]*", " ", s.prompt)
    text = re.sub(r"Choice list:\[[^\]]*\]", " ", text)
    return set(re.findall(r"[a-z]+", text.lower()))


def _nb_accuracy(train: tuple[Sample, ...], test: tuple[Sample, ...]) -> float:
    """Multinomial naive Bayes over the prompt's words -> answer string."""
    counts: dict[str, Counter] = defaultdict(Counter)
    prior: Counter = Counter()
    vocab: set[str] = set()
    for s in train:
        words = re.findall(r"[a-z0-9]+", s.prompt.lower())
        counts[s.answer].update(words)
        prior[s.answer] += 1
        vocab.update(words)
    totals = {a: sum(c.values()) for a, c in counts.items()}
    hits = 0
    for s in test:
        words = re.findall(r"[a-z0-9]+", s.prompt.lower())

        def score(a: str, words: list[str] = words) -> float:
            return math.log(prior[a]) + sum(
                math.log((counts[a][w] + 1) / (totals[a] + len(vocab))) for w in words)

        hits += max(prior, key=score) == s.answer
    return hits / len(test)


def _option_scorer_accuracy(train: tuple[Sample, ...], test: tuple[Sample, ...]) -> float:
    """Score each shown option by learned log-odds of (option) and (question word, option) being correct."""
    pos: Counter = Counter()
    neg: Counter = Counter()

    def feats(s: Sample, opt: str, qwords: set[str]) -> list[tuple[str, ...]]:
        return [(opt,)] + [(w, opt) for w in qwords]

    for s in train:
        opts = _option_texts(s)
        qw = _question_words(s)
        for c, o in zip(s.choices, opts):
            (pos if c == s.answer else neg).update(feats(s, o, qw))
    hits = 0
    for s in test:
        opts = _option_texts(s)
        qw = _question_words(s)
        scores = [sum(math.log((pos[f] + 1) / (neg[f] + 2)) for f in feats(s, o, qw)) for o in opts]
        hits += s.choices[scores.index(max(scores))] == s.answer
    return hits / len(test)


@pytest.mark.parametrize("name", TASKS)
def test_no_text_leakage(name: str) -> None:
    train, test = samples(name), samples(name, "test")
    k = len(train[0].choices) if train[0].choices else None
    ceiling = TEXT_CEILING.get(name, 1 / k if k else 0.0)
    assert _nb_accuracy(train, test) <= ceiling + 0.08
    if k:
        assert _option_scorer_accuracy(train, test) <= ceiling + 0.08


def test_context_modes_say_what_they_claim() -> None:
    """Helpful context names the true region; adversarial context names a wrong dish that is an option."""
    from drake.data.synth.families.dishes import DISHES

    for s in samples("wcvqa_1"):
        assert f"popular in the {DISHES[s.meta['dish']][0]}." in s.prompt
    for s in samples("wcvqa_2"):
        m = re.search(r"(?:says this is|calls it) ([a-z ]+)\.", s.prompt)
        assert m and m.group(1) != s.meta["dish"] and f". {m.group(1)}\n" in s.prompt


def test_answers_follow_the_pixels() -> None:
    """Spot checks that the gold answer is what the image shows (brightness; bar heights; distortion name)."""
    from PIL import ImageStat

    from drake.data.synth import world
    from drake.data.synth.families.quality import WHAT

    checked = 0
    for s in samples("coinstruct_3"):
        sup = re.search(r"the (\w+)\?", s.prompt).group(1)
        if sup in ("brightest", "darkest"):
            lum = [ImageStat.Stat(im.convert("L")).mean[0] for im in s.images]
            pick = lum.index(max(lum) if sup == "brightest" else min(lum))
            assert s.choices[pick] == s.answer
            checked += 1
    for s in samples("dvqa_0"):
        m = re.search(r"Which bar is the (tallest|shortest)\?", s.prompt)
        if m:
            colors = s.images[0].getcolors(1024)
            area = {c: sum(n for n, rgb in colors if rgb == world.COLORS[c]) for c in s.choices}
            best = (max if m.group(1) == "tallest" else min)(area, key=area.get)
            assert best == s.answer
            checked += 1
    for s in samples("coinstruct_0"):
        assert f"\n{s.answer}. {WHAT[s.meta['label']]}\n" in s.prompt
    assert checked > 150


@pytest.mark.parametrize(
    ("family", "params", "n_images", "match"),
    [
        ("quality", {"mode": "why"}, 1, "no mode 'why'"),
        ("quality", {"mode": "compare"}, 4, "draws 2 or 3 images, not 4"),
        ("icon_count", {"mode": "open", "level": "medium"}, 1, "no level 'medium'"),
        ("scene_qa", {"mode": "instance"}, 2, "draws 1 images, not 2"),
        ("dish", {"mode": "menu"}, 1, "no mode 'menu'"),
        ("bar_chart", {}, 3, "not 3"),
    ],
)
def test_bad_params_are_spec_errors(family: str, params: dict, n_images: int, match: str) -> None:
    from drake.errors import SpecError

    with pytest.raises(SpecError, match=match):
        FAMILIES.get(family)(SampleContext("t", "train", 0, 0, 32, n_images), **params)


def contact_sheet(path: str = "/tmp/synth_clients69.png", per_task: int = 4, zoom: int = 3) -> None:
    """Rows = tasks, 4 samples each (images side by side), plus ms per sample per task on stdout."""
    from PIL import Image, ImageDraw

    cell = 32 * zoom
    width = 110 + per_task * (3 * cell + 12)
    sheet = Image.new("RGB", (width, len(TASKS) * (cell + 8)), (255, 255, 255))
    d = ImageDraw.Draw(sheet)
    for r, name in enumerate(TASKS):
        t0 = time.perf_counter()
        rows = [make(name, i, "bench") for i in range(400)]
        ms = (time.perf_counter() - t0) / 400 * 1000
        print(f"{name:14s} {ms:6.2f} ms/sample   e.g. {rows[0].prompt!r} -> {rows[0].answer!r}")
        y = r * (cell + 8) + 4
        d.text((4, y + cell // 2 - 5), name, fill=(0, 0, 0))
        for j, s in enumerate(rows[:per_task]):
            x = 110 + j * (3 * cell + 12)
            for k, im in enumerate(s.images):
                sheet.paste(im.resize((cell, cell), Image.NEAREST), (x + k * cell, y))
    sheet.save(path)


if __name__ == "__main__":
    contact_sheet(*sys.argv[1:2])
