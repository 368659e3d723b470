"""DRAKE-synth families of clients 3-5 and the unseen tasks: format, balance, determinism, no text leakage.

Run as a script to write a contact sheet of 4 samples per task: ``python tests/test_synth_clients35.py``.
"""

from __future__ import annotations

import math
import re
import sys
from collections import Counter, defaultdict
from functools import cache

import numpy as np
import pytest
from PIL import Image, ImageChops

import drake.data.synth.families  # noqa: F401  (registers the families)
from drake.data.sources.easy_vqa import (
    easy_vqa_answers,
    easy_vqa_image,
    easy_vqa_labels,
    easy_vqa_questions,
    easy_vqa_rows,
)
from drake.data.synth.base import FAMILIES, IMAGE_TOKEN, Sample, SampleContext
from drake.data.synth.families.bongard import CONCEPTS
from drake.errors import DataError, SpecError
from drake.spec import load_tasks

TASKS = (
    "vizwiz_0", "mitstates_0", "irfl_0", "irfl_1", "irfl_2", "irfl_3", "bongard_ow_0", "bongard_ow_1",
    "bongard_hoi_0", "bongard_hoi_1", "bongard_hoi_2", "comics_0", "recipeqa_coherence", "recipeqa_cloze",
    "mantis_cc_0", "mantis_cc_1", "dreamsim_0", "imagecode_0",
)  # fmt: skip
CHOICE_MARKERS = ("Choice list:[", "Choice List: [")
N_FORMAT = 48  # a multiple of 2, 3 and 4: whole balance blocks for every task


@cache
def _tasks():
    return load_tasks()


def build(name: str, index: int, split: str = "train", seed: int = 0, size: int = 32) -> Sample:
    spec = _tasks()[name]
    src = spec.sources["synth"]
    return FAMILIES.get(src.family)(SampleContext(name, split, index, seed, size, spec.images), **src.params)


@cache
def samples(name: str, split: str, n: int) -> tuple[Sample, ...]:
    return tuple(build(name, i, split) for i in range(n))


@pytest.mark.parametrize("name", TASKS)
def test_format(name: str) -> None:
    n_images = _tasks()[name].images
    for s in samples(name, "train", N_FORMAT):
        assert len(s.images) == n_images
        assert all(im.mode == "RGB" and im.size == (32, 32) for im in s.images)
        assert s.prompt.count(IMAGE_TOKEN) == n_images
        assert s.choices and len(set(s.choices)) == len(s.choices)
        assert s.answer in s.choices
        assert any(m in s.prompt for m in CHOICE_MARKERS)
        listed = s.prompt[s.prompt.rindex("[") :]
        assert all(c in listed for c in s.choices)  # every choice is spelled out in the prompt's list
        assert s.prompt == s.prompt.strip() and "  " not in s.prompt


@pytest.mark.parametrize("size", [24, 64])
def test_other_image_sizes(size: int) -> None:
    for name in TASKS:
        assert all(im.size == (size, size) for im in build(name, 3, size=size).images), name


@pytest.mark.parametrize("name", TASKS)
def test_deterministic(name: str) -> None:
    for i in (0, 7):
        a, b = build(name, i), build(name, i)
        assert a.prompt == b.prompt and a.answer == b.answer and a.choices == b.choices
        assert [im.tobytes() for im in a.images] == [im.tobytes() for im in b.images]
    other = build(name, 0, seed=1)
    assert [im.tobytes() for im in other.images] != [im.tobytes() for im in build(name, 0).images]


@pytest.mark.parametrize("name", TASKS)
def test_balanced_positions(name: str) -> None:
    """Each block of k consecutive indices puts the answer once at every one of the k positions."""
    got = samples(name, "train", N_FORMAT)
    k = len(got[0].choices)
    for start in range(0, N_FORMAT, k):
        block = got[start : start + k]
        assert sorted(s.choices.index(s.answer) for s in block) == list(range(k)), (name, start)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9_]+", text.lower())


def naive_bayes_accuracy(train: tuple[Sample, ...], test: tuple[Sample, ...]) -> float:
    """A bag-of-words naive Bayes that reads only the prompt and picks one of the sample's choices."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    prior: Counter[str] = Counter()
    vocab: set[str] = set()
    for s in train:
        words = _words(s.prompt)
        counts[s.answer].update(words)
        prior[s.answer] += 1
        vocab.update(words)
    v = len(vocab) + 1

    def score(choice: str, words: list[str]) -> float:
        total = sum(counts[choice].values())
        return math.log(prior[choice] + 1) + sum(
            math.log((counts[choice][w] + 1) / (total + v)) for w in words
        )

    hits = 0
    for s in test:
        words = _words(s.prompt)
        hits += max(s.choices, key=lambda c: score(c, words)) == s.answer  # noqa: B023 (used at once)
    return hits / len(test)


@pytest.mark.parametrize("name", TASKS)
def test_prompt_alone_predicts_nothing(name: str) -> None:
    train, test = samples(name, "train", 300), samples(name, "val", 200)
    chance = 1 / len(test[0].choices)
    assert naive_bayes_accuracy(train, test) < chance + 0.12


def test_leakage_check_catches_a_leak() -> None:
    """The predictor above is strong enough: prompts naming their answer are found out."""
    train = tuple(Sample([], f"q {a} x", a, ["True", "False"]) for a in ["True", "False"] * 50)
    assert naive_bayes_accuracy(train, train[:40]) == 1.0


# ------------------------------------------------------------------------------------------ semantics
@pytest.mark.parametrize("name", ["bongard_ow_0", "bongard_hoi_0"])
def test_bongard_query_supports_fit_the_concept(name: str) -> None:
    for s in samples(name, "train", N_FORMAT):
        concept, scenes = CONCEPTS[s.meta["concept"]], s.meta["scenes"]
        assert all(concept.holds(x) for x in scenes[:3]) and not any(concept.holds(x) for x in scenes[3:6])
        assert concept.holds(scenes[6]) == (s.answer == "Positive")


@pytest.mark.parametrize("name", ["bongard_ow_1", "bongard_hoi_1"])
def test_bongard_common_answer_is_the_only_shared_option(name: str) -> None:
    by_phrase = {c.phrase: c for c in CONCEPTS.values()}
    for s in samples(name, "train", N_FORMAT):
        shared = [c for c in s.choices if all(by_phrase[c].holds(x) for x in s.meta["scenes"])]
        assert shared == [s.answer]


def test_bongard_odd_one_out_lacks_the_action() -> None:
    for s in samples("bongard_hoi_2", "train", N_FORMAT):
        concept, scenes = CONCEPTS[s.meta["concept"]], s.meta["scenes"]
        assert [not concept.holds(x) for x in scenes].index(True) == s.choices.index(s.answer)
        assert sum(concept.holds(x) for x in scenes) == 3


def _is_gray(im: Image.Image) -> bool:
    r, g, b = im.convert("RGB").split()
    return ImageChops.difference(r, g).getbbox() is None and ImageChops.difference(g, b).getbbox() is None


def test_figurative_images_match_the_phrase() -> None:
    unrelated = 0
    for s in samples("irfl_1", "train", N_FORMAT):
        concept = CONCEPTS[s.meta["concept"]]
        holds = [x is not None and concept.holds(x) for x in s.meta["scenes"]]  # None: an unrelated picture
        assert holds.index(True) == s.choices.index(s.answer) and sum(holds) == 1
        if None in s.meta["scenes"]:
            unrelated += 1
            assert s.meta["scenes"].count(None) == 3
            assert all(_is_gray(im) for im, x in zip(s.images, s.meta["scenes"]) if x is None)
    assert 0.5 < unrelated / N_FORMAT < 0.9  # UNRELATED_SHARE of the items, the rest need the phrase
    for s in samples("irfl_0", "train", N_FORMAT):
        assert CONCEPTS[s.meta["concept"]].holds(s.meta["scenes"][0]) == (s.answer == "True")


def test_comic_options_are_one_line_per_kind_of_change() -> None:
    from drake.data.synth.families.story import COLOR_STORIES, MOTION_STORIES, STORY_LINES

    kinds = [{STORY_LINES[k] for k in MOTION_STORIES}, {STORY_LINES[k] for k in COLOR_STORIES}, {STORY_LINES["meet"]}]
    for s in samples("comics_0", "train", N_FORMAT):
        lines = re.search(r"Choice list:\[(.*)\]\. Answer", s.prompt).group(1).split("| ")
        assert [line[3:] in kind for line, kind in zip(lines, kinds)] == [True] * 3, lines
        assert lines[s.choices.index(s.answer)][3:] == STORY_LINES[s.meta["story"]]


def test_contrastive_caption_on_real_images() -> None:
    for s in samples("mantis_cc_0", "train", 24):
        labels = easy_vqa_labels(s.meta["split"])
        first, second = (labels[i] for i in s.meta["image_ids"])
        assert s.answer.split()[1:] == list(first) and first != second
        # one distractor describes the second image; none names the first image's colour
        others = [c.split()[1:] for c in s.choices if c != s.answer]
        assert list(second) in others and all(c[0] != first[0] for c in others)
    # val/test draw on easy-VQA's own test images, train on its train images
    assert build("mantis_cc_0", 0, split="test").meta["split"] == "test"


def test_bad_params_are_user_errors() -> None:
    ctx = SampleContext("bongard_ow_0", "train", 0, 0, 32, 7)
    with pytest.raises(SpecError, match="mode"):
        FAMILIES.get("bongard")(ctx, mode="nope")
    with pytest.raises(SpecError, match="makes 6 images"):
        FAMILIES.get("bongard")(ctx, mode="common")


# ------------------------------------------------------------------------------------------ easy-VQA
def test_easy_vqa_rows() -> None:
    rows = list(easy_vqa_rows("train", 20, 32, seed=3))
    again = list(easy_vqa_rows("train", 20, 32, seed=3))
    assert len(rows) == 20 and len({r["id"] for r in rows}) == 20
    assert [r["id"] for r in rows] == [r["id"] for r in again]
    assert [r["images"][0].tobytes() for r in rows] == [r["images"][0].tobytes() for r in again]
    assert [r["id"] for r in easy_vqa_rows("train", 20, 32, seed=4)] != [r["id"] for r in rows]
    answers = list(easy_vqa_answers())
    assert len(answers) == 13
    for r in rows:
        assert set(r) == {"id", "task", "images", "prompt", "choices", "answer"} and r["task"] == "easy_vqa"
        assert r["prompt"].count(IMAGE_TOKEN) == 1 and r["prompt"].endswith("]. Your answer is:")
        assert r["choices"] == answers and r["answer"] in answers
        assert r["images"][0].size == (32, 32) and r["images"][0].mode == "RGB"
    assert easy_vqa_image("test", 0, 48).size == (48, 48)
    with pytest.raises(DataError):
        next(easy_vqa_rows("val", 1, 32, 0))
    with pytest.raises(DataError):
        next(easy_vqa_rows("test", 10**6, 32, 0))


def test_easy_vqa_labels_agree_with_questions() -> None:
    labels = easy_vqa_labels("test")
    assert len(labels) > 800
    checked = 0
    for question, answer, image_id in easy_vqa_questions("test"):
        if answer not in ("yes", "no") and image_id in labels:
            assert answer in labels[image_id], (question, answer, labels[image_id])
            checked += 1
    assert checked > 1000


def contact_sheet(path: str, per_task: int = 4, scale: int = 3) -> None:
    """One row per task, ``per_task`` samples side by side, images separated by a white gap."""
    rows = [[build(name, i).images for i in range(per_task)] for name in TASKS]
    width = max(sum(len(s) * 34 + 10 for s in row) for row in rows)
    sheet = Image.new("RGB", (width, 36 * len(rows)), (255, 255, 255))
    for y, row in enumerate(rows):
        x = 0
        for images in row:
            for im in images:
                sheet.paste(im, (x, y * 36))
                x += 34
            x += 10
    sheet.resize((sheet.width * scale, sheet.height * scale), Image.NEAREST).save(path)


def test_contact_sheet(tmp_path) -> None:
    out = tmp_path / "sheet.png"
    contact_sheet(str(out), per_task=1, scale=1)
    arr = np.asarray(Image.open(out))
    assert arr.shape[0] == 36 * len(TASKS) and arr.std() > 10


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "/tmp/synth_clients35.png"
    contact_sheet(target)
    print(target)
