"""Bongard-style concept tasks, and the one concept library that figurative and story tasks share.

A concept is a predicate over a small scene with a sampler for positives and near-miss negatives. Two
libraries: ``objects`` (Bongard-OpenWorld: "has a star", "everything is red", "two objects", ...) and
``actions`` (Bongard-HOI: how a small shape interacts with a big one: sit_on, hide_in, ...). Supports are
re-drawn until no other concept of the library explains them too, so every sample has one right answer.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from drake.data.synth.base import Sample, SampleContext, choice_list, image_tokens
from drake.data.synth.world import COLORS, SHAPES, canvas, draw_shape
from drake.errors import SpecError

CONCEPT_COLORS = ("red", "green", "blue", "yellow", "purple", "orange")
CONCEPT_TEXTURES = ("striped", "checked", "dotted")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five")
ACTIONS = ("sit_on", "hang_from", "lean_on", "hide_in", "run_from", "hide_behind")
BIG_SHAPES = ("circle", "square", "diamond")  # roomy enough to hold a small shape
IMAGE_LABELS = ("Image A", "Image B", "Image C", "Image D")
_TEXTURE_WEIGHTS = (("plain", 0.55), ("striped", 0.15), ("checked", 0.15), ("dotted", 0.15))
_MAX_TRIES = 30


@dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    texture: str
    box: tuple[float, float, float, float]  # unit coordinates; scaled to the image size when drawn


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]  # in drawing order
    relation: str = ""  # action scenes only


@dataclass(frozen=True)
class Concept:
    key: str  # "shape:star", "color:red", "texture:striped", "count:2" or "action:sit_on"
    phrase: str  # how prompts and choice lists name it

    @property
    def attr(self) -> str:
        return self.key.split(":", 1)[0]

    @property
    def value(self) -> str:
        return self.key.split(":", 1)[1]

    def holds(self, scene: Scene) -> bool:
        attr, value, objs = self.attr, self.value, scene.objects
        if attr == "shape":
            return any(o.shape == value for o in objs)
        if attr == "color":
            return all(o.color == value for o in objs)
        if attr == "texture":
            return all(o.texture == value for o in objs)
        if attr == "count":
            return len(objs) == int(value)
        return scene.relation == value


OBJECT_CONCEPTS: tuple[Concept, ...] = (
    *(Concept(f"shape:{s}", f"has a {s}") for s in SHAPES),
    *(Concept(f"color:{c}", f"everything is {c}") for c in CONCEPT_COLORS),
    *(Concept(f"texture:{t}", f"everything is {t}") for t in CONCEPT_TEXTURES),
    *(Concept(f"count:{n}", f"{NUMBER_WORDS[n]} object" + ("s" if n > 1 else "")) for n in range(1, 5)),
)
ACTION_CONCEPTS: tuple[Concept, ...] = tuple(Concept(f"action:{a}", a) for a in ACTIONS)
LIBRARIES: dict[str, tuple[Concept, ...]] = {"objects": OBJECT_CONCEPTS, "actions": ACTION_CONCEPTS}
CONCEPTS: dict[str, Concept] = {c.key: c for lib in LIBRARIES.values() for c in lib}


# ----------------------------------------------------------------------------------------------- sampling
def _texture(rng: random.Random) -> str:
    x, acc = rng.random(), 0.0
    for name, w in _TEXTURE_WEIGHTS:
        acc += w
        if x < acc:
            return name
    return "plain"


def cell_boxes(n: int, rng: random.Random) -> list[tuple[float, float, float, float]]:
    """``n`` (<= 4) jittered boxes in distinct quadrants: few, large objects stay legible at 32 px."""
    boxes = []
    for cell in rng.sample(range(4), n):
        side = rng.uniform(0.34, 0.42)
        x0 = (cell % 2) * 0.5 + rng.uniform(0.03, 0.47 - side)
        y0 = (cell // 2) * 0.5 + rng.uniform(0.03, 0.47 - side)
        boxes.append((x0, y0, x0 + side, y0 + side))
    return boxes


def object_scene(
    rng: random.Random, concept: Concept | None = None, positive: bool = True, n: int = 0
) -> Scene:
    """A scene of 1-4 objects; with a concept, a positive or a near-miss negative (one attribute off)."""
    attr, value = (concept.attr, concept.value) if concept else ("", "")
    if attr == "count":
        k = int(value)
        n = k if positive else rng.choice([m for m in range(1, 5) if m != k])
    n = n or rng.randint(1, 4)
    shapes = [rng.choice(SHAPES) for _ in range(n)]
    colors = [rng.choice(tuple(COLORS)) for _ in range(n)]
    textures = [_texture(rng) for _ in range(n)]
    if attr == "shape":
        others = [s for s in SHAPES if s != value]
        shapes = [s if s != value else rng.choice(others) for s in shapes]
        if positive:
            shapes[rng.randrange(n)] = value
    elif attr in ("color", "texture"):
        vals = colors if attr == "color" else textures
        pool = [c for c in (COLORS if attr == "color" else ("plain", *CONCEPT_TEXTURES)) if c != value]
        if positive:
            vals[:] = [value] * n
        else:  # near miss: one object surely off, the others often on
            odd = rng.randrange(n)
            vals[:] = [
                rng.choice(pool) if i == odd else (value if rng.random() < 0.5 else v)
                for i, v in enumerate(vals)
            ]
            if vals[odd] == value:
                vals[odd] = pool[0]
    boxes = cell_boxes(n, rng)
    return Scene(tuple(Obj(s, c, t, b) for s, c, t, b in zip(shapes, colors, textures, boxes)))


def action_scene(rng: random.Random, relation: str) -> Scene:
    """A small shape and a big shape in one interaction; layouts are in unit coordinates."""
    b, s = rng.uniform(0.42, 0.52), rng.uniform(0.19, 0.23)
    mid = b / 2 - s / 2
    j = rng.uniform(-0.03, 0.03)
    side = rng.random() < 0.5
    if relation == "sit_on":
        sx, sy = mid + j, -s
    elif relation == "hang_from":
        sx, sy = mid + j, b
    elif relation == "lean_on":
        sx, sy = (b if side else -s), mid + j
    elif relation == "hide_in":
        sx, sy = mid + j / 2, mid - j / 2
    elif relation == "run_from":
        g = rng.uniform(0.1, 0.14)
        sx, sy = (b + g if side else -s - g), (b + g if rng.random() < 0.5 else -s - g)
    elif relation == "hide_behind":
        where = rng.randrange(3)
        sx, sy = [(b - s / 2, mid + j), (-s / 2, mid + j), (mid + j, -s / 2)][where]
    else:
        raise SpecError(f"unknown action {relation!r}; known: {', '.join(ACTIONS)}")
    x0, y0 = min(0.0, sx), min(0.0, sy)
    x1, y1 = max(b, sx + s), max(b, sy + s)
    ox = rng.uniform(0.04, 0.96 - (x1 - x0)) - x0
    oy = rng.uniform(0.04, 0.96 - (y1 - y0)) - y0
    big_color, small_color = rng.sample(tuple(COLORS), 2)
    big = Obj(rng.choice(BIG_SHAPES), big_color, "plain", (ox, oy, ox + b, oy + b))
    small = Obj(rng.choice(SHAPES), small_color, "plain", (ox + sx, oy + sy, ox + sx + s, oy + sy + s))
    return Scene((small, big) if relation == "hide_behind" else (big, small), relation)


def sample_scene(rng: random.Random, concept: Concept, positive: bool) -> Scene:
    """A positive or a negative of ``concept`` from its own library."""
    if concept.attr != "action":
        return object_scene(rng, concept, positive)
    relation = concept.value if positive else rng.choice([a for a in ACTIONS if a != concept.value])
    return action_scene(rng, relation)


def draw_scene(scene: Scene, size: int) -> Image.Image:
    img = canvas(size)
    for o in scene.objects:
        x0, y0, x1, y1 = (v * size for v in o.box)
        draw_shape(img, o.shape, o.color, (round(x0), round(y0), round(x1) - 1, round(y1) - 1), o.texture)
    return img


# ----------------------------------------------------------------------------------------------- family
def _query(rng: random.Random, lib: Sequence[Concept], target: Concept, positive_query: bool) -> list[Scene]:
    for _ in range(_MAX_TRIES):
        pos = [sample_scene(rng, target, True) for _ in range(3)]
        neg = [sample_scene(rng, target, False) for _ in range(3)]
        query = sample_scene(rng, target, positive_query)
        rivals = [
            c
            for c in lib
            if c != target and all(c.holds(p) for p in pos) and not any(c.holds(n) for n in neg)
        ]
        if all(c.holds(query) == positive_query for c in rivals):
            break
    return [*pos, *neg, query]


def _odd(rng: random.Random, lib: Sequence[Concept], target: Concept, odd: int) -> list[Scene]:
    for _ in range(_MAX_TRIES):
        scenes = [sample_scene(rng, target, i != odd) for i in range(4)]
        rivals = [c for c in lib if c != target and [c.holds(s) for s in scenes].count(False) == 1]
        if all(not c.holds(scenes[odd]) for c in rivals):
            break
    return scenes


_WORD = {"objects": "concept", "actions": "action"}
_COUNTS = {"query": 7, "common": 6, "odd_one_out": 4}


def bongard(ctx: SampleContext, mode: str = "query", concepts: str = "objects") -> Sample:
    """Hidden concept over support images: ``query`` (pos/neg), ``common`` (which concept), ``odd_one_out``."""
    if concepts not in LIBRARIES:
        raise SpecError(
            f"{ctx.task}: bongard concepts {concepts!r} unknown; use one of {', '.join(LIBRARIES)}"
        )
    if mode not in _COUNTS:
        raise SpecError(f"{ctx.task}: bongard mode {mode!r} unknown; use one of {', '.join(_COUNTS)}")
    if ctx.n_images != _COUNTS[mode]:
        raise SpecError(
            f"{ctx.task}: bongard mode {mode!r} makes {_COUNTS[mode]} images, tasks.yaml says {ctx.n_images}"
        )
    rng, lib, word = ctx.rng, LIBRARIES[concepts], _WORD[concepts]
    target = rng.choice(lib)
    if mode == "query":
        label = ctx.slot(2)
        scenes = _query(rng, lib, target, positive_query=label == 0)
        choices = ["Positive", "Negative"]
        prompt = (
            f"Positive: {image_tokens(3)}\nNegative: {image_tokens(3)}\nQuery: {image_tokens(1)}\n"
            f'Given 3 "positive" images and 3 "negative" images, where the "positive" images share a common {word} '
            f'that the "negative" images do not have, please determine whether the query image belongs to '
            f'"positive" or "negative".\n{choice_list(choices)}'
        )
        answer = choices[label]
    elif mode == "common":
        rivals = rng.sample([c for c in lib if c != target], 3)  # drawn before the images: no text cue
        for _ in range(_MAX_TRIES):
            scenes = [sample_scene(rng, target, True) for _ in range(6)]
            if not any(all(c.holds(s) for s in scenes) for c in rivals):
                break
        choices = [c.phrase for c in rivals]
        choices.insert(ctx.slot(4), target.phrase)
        prompt = (
            f"{image_tokens(6)}\nWhich {word} do all six images have in common?\n"
            f"Choice List: [{', '.join(choices)}]"
        )
        answer = target.phrase
    else:
        odd = ctx.slot(4)
        scenes = _odd(rng, lib, target, odd)
        choices = list(IMAGE_LABELS)
        prompt = (
            f"{image_tokens(4, IMAGE_LABELS)}\nWhich image does not share the {word} of the other three images?\n"
            f"{choice_list(choices)}"
        )
        answer = choices[odd]
    images = [draw_scene(s, ctx.image_size) for s in scenes]
    return Sample(images, prompt, answer, choices, meta={"concept": target.key, "scenes": tuple(scenes)})
