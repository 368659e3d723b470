"""DRAKE-synth families of clients 0-2 (fashion, editing, comparison, time) and hqedit_0.

Each task is built the way the data builder builds it (tasks.yaml -> family -> SampleContext). Run this file
directly to write a contact sheet of 4 samples per task to /tmp/synth_clients02.png.
"""

from __future__ import annotations

import math
import re
import sys
from collections import Counter
from functools import cache
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

import drake.data.synth.families  # noqa: F401  (registers the families)
from drake.data.synth.base import FAMILIES, Sample, SampleContext
from drake.data.synth.families.edit import edit_text
from drake.data.synth.world import COLORS
from drake.spec import load_tasks

TASKS = ("fashion200k_0", "fashion200k_1", "fashion200k_2", "fashioniq_0", "nlvr2_0", "nlvr2_1", "cirr_0",
         "vision_0", "vision_1", "magicbrush_0", "vsr_0", "seedbench2_2", "hqedit_0")


@cache
def _specs() -> dict:
    return load_tasks()


def make(name: str, i: int, split: str = "train", seed: int = 0) -> Sample:
    spec = _specs()[name]
    src = spec.sources["synth"]
    return FAMILIES.get(src.family)(SampleContext(name, split, i, seed, 32, spec.images), **src.params)


@cache
def samples(name: str, n: int) -> tuple[Sample, ...]:
    return tuple(make(name, i) for i in range(n))


@pytest.mark.parametrize("name", TASKS)
def test_sample_contract(name: str) -> None:
    n_images = _specs()[name].images
    for s in samples(name, 40):
        assert len(s.images) == n_images
        assert all(im.mode == "RGB" and im.size == (32, 32) for im in s.images)
        assert s.prompt.count("<image>") == n_images
        assert s.choices and s.answer in s.choices and len(set(s.choices)) == len(s.choices)
        assert "Choice list:[" in s.prompt or "Answer with the option's letter" in s.prompt
        assert all(len(im.getcolors(64) or range(65)) >= 2 for im in s.images)  # something is drawn


@pytest.mark.parametrize("name", TASKS)
def test_deterministic(name: str) -> None:
    for i in (0, 7, 31):
        a, b = make(name, i), make(name, i)
        assert a.prompt == b.prompt and a.answer == b.answer and a.choices == b.choices
        assert [im.tobytes() for im in a.images] == [im.tobytes() for im in b.images]
    other = [make(name, i, seed=1) for i in range(8)]
    assert [s.images[0].tobytes() for s in other] != [s.images[0].tobytes() for s in samples(name, 8)]


@pytest.mark.parametrize("name", TASKS)
def test_answer_positions_balanced(name: str) -> None:
    k = len(samples(name, 1)[0].choices)
    got = Counter(s.choices.index(s.answer) for s in samples(name, 2 * 3 * k))
    assert got == Counter({p: 6 for p in range(k)})


def _words(text: str) -> list[str]:
    toks = re.findall(r"[a-z0-9]+", text.lower())
    return toks + [a + "_" + b for a, b in zip(toks, toks[1:])]


def _nb_accuracy(train: list[tuple[list[str], int]], test: list[tuple[list[str], int]]) -> float:
    """Held-out accuracy of a multinomial naive Bayes bag-of-words (+ bigrams) classifier."""
    classes = sorted({y for _, y in train})
    counts = {c: Counter() for c in classes}
    prior = Counter(y for _, y in train)
    for words, y in train:
        counts[y].update(words)
    vocab = set().union(*counts.values())
    totals = {c: sum(counts[c].values()) + len(vocab) for c in classes}

    def score(words: list[str], c: int) -> float:
        return math.log(prior[c]) + sum(math.log((counts[c][w] + 1) / totals[c]) for w in words if w in vocab)

    return sum(max(classes, key=lambda c: score(w, c)) == y for w, y in test) / len(test)


@pytest.mark.parametrize("name", TASKS)
def test_prompt_text_does_not_leak_the_answer(name: str) -> None:
    rows = samples(name, 700)
    k = len(rows[0].choices)
    whole = [(_words(s.prompt), s.choices.index(s.answer)) for s in rows]
    assert _nb_accuracy(whole[:400], whole[400:]) <= 1 / k + 0.1
    # per option: is this option text the right one? (options differ per sample only on some tasks)
    opts = [(_words(o), int(o == s.answer)) for s in rows for o in s.choices]
    train, test = opts[: 400 * k], rows[400:]
    classes_seen = {y for _, y in train}
    if len(classes_seen) == 2:
        counts = {c: Counter() for c in (0, 1)}
        for w, y in train:
            counts[y].update(w)
        vocab = set().union(*counts.values())
        tot = {c: sum(counts[c].values()) + len(vocab) for c in (0, 1)}

        def odds(words: list[str]) -> float:
            return sum(math.log((counts[1][w] + 1) / tot[1]) - math.log((counts[0][w] + 1) / tot[0])
                       for w in words if w in vocab)

        hits = sum(max(s.choices, key=lambda o: odds(_words(o))) == s.answer for s in test)
        assert hits / len(test) <= 1 / k + 0.1


def test_true_and_false_statements_share_their_wording() -> None:
    for name in ("fashion200k_1", "fashion200k_2", "nlvr2_0", "nlvr2_1", "vision_1", "vsr_0", "cirr_0"):
        bags = {"True": Counter(), "False": Counter()}
        for s in samples(name, 700):
            bags[s.answer].update(set(_words(s.prompt.split("<image>")[-1])))
        vocab_t, vocab_f = set(bags["True"]), set(bags["False"])
        assert len(vocab_t & vocab_f) / len(vocab_t | vocab_f) > 0.9, name


def _centroid(img: Image.Image, color: str) -> tuple[float, float] | None:
    rgb, pts = COLORS[color], []
    px = img.load()
    for y in range(img.height):
        for x in range(img.width):
            if px[x, y] == rgb:
                pts.append((x, y))
    if not pts:
        return None
    return sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)


def _bbox(img: Image.Image, color: str) -> tuple[int, int, int, int]:
    rgb, px = COLORS[color], img.load()
    pts = [(x, y) for y in range(img.height) for x in range(img.width) if px[x, y] == rgb]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return min(xs), min(ys), max(xs), max(ys)


def test_spatial_answers_match_the_pixels() -> None:
    shown = Counter()
    for s in samples("vsr_0", 80):
        m = re.search(r"Caption: the (\w+) \w+ is (.+?) the (\w+) \w+\.", s.prompt)
        assert m.group(2) == s.meta["relation"]
        (sx0, sy0, sx1, sy1), (bx0, by0, bx1, by1) = _bbox(s.images[0], m.group(1)), _bbox(s.images[0], m.group(3))
        inside = bx0 <= sx0 and sx1 <= bx1 and by0 <= sy0 and sy1 <= by1
        overlaps = sx0 <= bx1 + 1 and bx0 <= sx1 + 1 and sy0 <= by1 + 1 and by0 <= sy1 + 1  # touching counts
        holds = {"in": inside, "on": sy1 <= by0 + 1 and not inside, "behind": overlaps and not inside,
                 "next to": (sx1 <= bx0 + 1 or sx0 >= bx1 - 1) and not inside}[s.meta["shown"]]
        assert holds, (s.meta, s.prompt)
        assert s.answer == ("True" if s.meta["shown"] == m.group(2) else "False")
        shown[s.meta["shown"]] += 1
    assert set(shown) == {"in", "on", "next to", "behind"}


def test_motion_answers_match_the_pixels() -> None:
    kinds = Counter()
    for s in samples("seedbench2_2", 60):
        letter_line = re.search(rf"\n{s.answer}\. (\w+)", s.prompt).group(1)
        kinds[s.meta["about"]] += 1
        if s.meta["about"] == "colour":
            assert _centroid(s.images[-1], letter_line) is not None and _centroid(s.images[0], letter_line) is None
            continue
        color = re.search(r"does the (\w+) \w+ move", s.prompt).group(1)
        (x0, y0), (x1, y1) = _centroid(s.images[0], color), _centroid(s.images[-1], color)
        dx, dy = x1 - x0, y1 - y0
        moved = ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up")
        assert letter_line == moved == s.meta["direction"]
    assert min(kinds.values()) > 10


def test_edits_and_counts_match_their_descriptions() -> None:
    for s in samples("hqedit_0", 40):
        assert s.answer == edit_text(s.meta["edit"])
    for s in samples("fashion200k_0", 70):
        g = Counter(s.meta["garments"])
        assert int(s.answer) == g["dress"] + min(g["shirt"], g["pants"])
    letters = Counter(s.answer for s in samples("seedbench2_2", 40))
    assert letters == Counter({d: 10 for d in "ABCD"})


def test_defect_statements_match_the_parts() -> None:
    """'no part has X' is true iff no part shows X; over four parts a false one shows X on two or three."""
    for name, shown in (("vision_0", {1}), ("vision_1", {2, 3})):
        for s in samples(name, 60):
            if s.meta["template"] != "none":
                continue
            d = s.prompt.split("no part has ", 1)[1].split(".", 1)[0].split(" ", 1)[1]
            hits = sum(x == d for x in s.meta["defects"])
            assert (s.answer == "True") == (hits == 0) and (hits == 0 or hits in shown)


def test_bad_params_and_image_counts_raise() -> None:
    from drake.errors import SpecError

    fam = FAMILIES.get("multi_statement")
    with pytest.raises(SpecError, match="attribute"):
        fam(SampleContext("t", "train", 0, 0, 32, 3), attribute="size")
    with pytest.raises(SpecError, match="images"):
        FAMILIES.get("edit_direction")(SampleContext("t", "train", 0, 0, 32, 3))
    with pytest.raises(SpecError, match="relations"):
        FAMILIES.get("pair_statement")(SampleContext("t", "train", 0, 0, 32, 2), relations=["bigger"])


def contact_sheet(path: str | Path, per_task: int = 4, zoom: int = 4) -> Image.Image:
    """Every task's first samples, images zoomed, with the answer under each strip."""
    z = 32 * zoom
    strip_w, strip_h = 5 * (z + 4) + 8, z + 16
    sheet = Image.new("RGB", (per_task * strip_w, len(TASKS) * strip_h), "white")
    draw = ImageDraw.Draw(sheet)
    for r, name in enumerate(TASKS):
        for c, s in enumerate(samples(name, per_task)):
            for k, im in enumerate(s.images):
                sheet.paste(im.resize((z, z), Image.NEAREST), (c * strip_w + k * (z + 4), r * strip_h))
            draw.text((c * strip_w, r * strip_h + z + 2), f"{name}: {s.answer}"[:60], fill=(180, 0, 0))
    sheet.save(path)
    return sheet


def test_contact_sheet(tmp_path: Path) -> None:
    sheet = contact_sheet(tmp_path / "sheet.png", per_task=2, zoom=1)
    assert sheet.size[1] == len(TASKS) * 48


if __name__ == "__main__":
    contact_sheet(sys.argv[1] if len(sys.argv) > 1 else "/tmp/synth_clients02.png")
