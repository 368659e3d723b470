"""easy-VQA (the ``easy_vqa`` PyPI package, MIT) read offline: real images for public rows and unseen tasks.

The package bundles 64 px PNGs (one coloured circle, rectangle or triangle each) and templated questions with
13 answers. Reads are cached; every function is deterministic in its arguments.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from functools import cache, lru_cache
from typing import Any

from PIL import Image

from drake.data.synth.base import IMAGE_TOKEN, choice_list
from drake.errors import DataError

SPLITS = ("train", "test")
EASY_VQA_SHAPES = ("circle", "rectangle", "triangle")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"easy_vqa has no split {split!r}; use one of {', '.join(SPLITS)}")


@cache
def easy_vqa_answers() -> tuple[str, ...]:
    """The 13 answers in the package's fixed order (``answers.txt``)."""
    import easy_vqa

    return tuple(easy_vqa.get_answers())


@cache
def _questions(split: str) -> tuple[tuple[str, str, int], ...]:
    import easy_vqa

    _check_split(split)
    texts, answers, ids = (
        easy_vqa.get_train_questions() if split == "train" else easy_vqa.get_test_questions()
    )
    return tuple(zip(texts, answers, (int(i) for i in ids)))


def easy_vqa_questions(split: str) -> list[tuple[str, str, int]]:
    """All ``(question, answer, image_id)`` of a split, in the package's order."""
    return list(_questions(split))


@cache
def _paths(split: str) -> dict[int, str]:
    import easy_vqa

    _check_split(split)
    return easy_vqa.get_train_image_paths() if split == "train" else easy_vqa.get_test_image_paths()


@lru_cache(maxsize=8192)
def _image(split: str, image_id: int, size: int) -> Image.Image:
    path = _paths(split).get(image_id)
    if path is None:
        raise DataError(f"easy_vqa {split} has no image {image_id}; ids run 0..{len(_paths(split)) - 1}")
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    return rgb if rgb.size == (size, size) else rgb.resize((size, size), Image.BILINEAR)


def easy_vqa_image(split: str, image_id: int, size: int) -> Image.Image:
    """Image ``image_id`` of ``split`` as RGB, ``size`` x ``size`` (a fresh copy: callers may draw on it)."""
    return _image(split, int(image_id), int(size)).copy()


@cache
def easy_vqa_labels(split: str) -> dict[int, tuple[str, str]]:
    """``image_id -> (color, shape)`` of the one shape in each image, read off its questions and answers.

    A word is present when it is the answer, or is named by a "what" question, or by a yes/no question
    whose answer affirms it ("is there a red shape?" yes; "is there not a red shape?" no); a value is also
    known when the yes/no answers rule out all the others. Images the questions leave open are skipped.
    """
    colors = tuple(a for a in easy_vqa_answers() if a not in EASY_VQA_SHAPES and a not in ("yes", "no"))
    present: dict[int, set[str]] = {}
    absent: dict[int, set[str]] = {}
    for question, answer, image_id in _questions(split):
        words = question.rstrip("?").split()
        if answer in ("yes", "no"):
            named = [w for w in words if w in colors or w in EASY_VQA_SHAPES]
            negated = "not" in words or "no" in words
            target = present if (answer == "yes") != negated else absent
            target.setdefault(image_id, set()).update(named)
        else:
            present.setdefault(image_id, set()).update(
                w for w in (*words, answer) if w in colors or w in EASY_VQA_SHAPES
            )
    labels = {}
    for image_id in sorted(set(present) | set(absent)):
        found, gone = present.get(image_id, set()), absent.get(image_id, set())
        color = [c for c in colors if c in found] or [c for c in colors if c not in gone]
        shape = [s for s in EASY_VQA_SHAPES if s in found] or [s for s in EASY_VQA_SHAPES if s not in gone]
        if len(color) == 1 and len(shape) == 1:  # else the questions leave it open: skip the image
            labels[image_id] = (color[0], shape[0])
    return labels


@cache
def easy_vqa_by_label(split: str) -> dict[tuple[str, str], tuple[int, ...]]:
    """``(color, shape) -> sorted image ids``: lets tasks pick a real image with known content."""
    out: dict[tuple[str, str], list[int]] = {}
    for image_id, label in easy_vqa_labels(split).items():
        out.setdefault(label, []).append(image_id)
    return {k: tuple(v) for k, v in sorted(out.items())}


def easy_vqa_rows(split: str, n: int, image_size: int, seed: int) -> Iterator[dict[str, Any]]:
    """``n`` canonical rows of real easy-VQA questions (a seeded sample without repeats), choices fixed."""
    questions = _questions(split)
    if not 0 <= n <= len(questions):
        raise DataError(f"easy_vqa {split} has {len(questions)} questions; asked for n={n}")
    choices = list(easy_vqa_answers())
    order = random.Random(f"easy_vqa|{split}|{seed}").sample(range(len(questions)), n)
    for q_index in order:
        question, answer, image_id = questions[q_index]
        yield {
            "id": f"easy_vqa-{split}-{q_index}",
            "task": "easy_vqa",
            "images": [easy_vqa_image(split, image_id, image_size)],
            "prompt": f"{IMAGE_TOKEN}\n{question}\n{choice_list(choices)}",
            "choices": list(choices),
            "answer": answer,
        }
