"""Comparison analogues: NLVR2 pair statements, VISION defect inspection, VSR spatial captions.

Every statement is sampled first; the pictures are then built to make it true or false, with hard negatives
(the named object or defect is shown, but in the wrong picture or place). Each builder re-checks its own
answer with a plain predicate, so a construction bug fails loudly instead of mislabelling.
"""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

from drake.data.synth.base import IMAGE_TOKEN, Sample, SampleContext, choice_list
from drake.data.synth.families.fashion import NUM_WORDS, TF, check_images, check_param, jitter_box
from drake.data.synth.world import (
    BACKGROUNDS,
    COLORS,
    SHAPES,
    canvas,
    cell_box,
    centered_box,
    draw_shape,
    shape_polygon,
)

COLOR_NAMES = tuple(COLORS)
Obj = tuple[str, str, int]  # (shape, color, cell of the 2x2 grid: 0 top left, 1 top right, 2 bottom left, 3 bottom right)


def an(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def scene_image(objs: list[Obj], size: int) -> Image.Image:
    img = canvas(size)
    for shape, color, cell in objs:
        draw_shape(img, shape, color, cell_box(cell, size))
    return img


def random_objs(rng: random.Random, n: int, *, shapes: tuple[str, ...] = SHAPES,
                colors: tuple[str, ...] = COLOR_NAMES, avoid: tuple[str, str] | None = None) -> list[Obj]:
    """``n`` objects with distinct shapes, colours and cells; never the (shape, color) pair ``avoid``."""
    while True:
        objs = list(zip(rng.sample(shapes, n), rng.sample(colors, n), rng.sample(range(4), n)))
        if avoid is None or all((s, c) != avoid for s, c, _ in objs):
            return objs


def _tf(truth: bool) -> str:
    return TF[0] if truth else TF[1]


# ------------------------------------------------------------------------------------------- NLVR2
PAIR_RELATIONS = ("same_color", "same_shape", "more_objects", "both_contain", "left_image_has",
                  "exactly_one_contains")
_SIDE_CELLS = {"top": (0, 1), "bottom": (2, 3), "left": (0, 2), "right": (1, 3)}
_OPPOSITE = {"top": "bottom", "bottom": "top", "left": "right", "right": "left"}


def _has(objs: list[Obj], shape: str, color: str | None = None, cells: tuple[int, ...] = (0, 1, 2, 3)) -> bool:
    return any(s == shape and (color is None or c == color) and cell in cells for s, c, cell in objs)


def _pair_holds(rel: str, a: list[Obj], b: list[Obj], arg: tuple) -> bool:
    both = a + b
    if rel == "same_color":
        return len({c for _, c, _ in both}) == 1
    if rel == "same_shape":
        return len({s for s, _, _ in both}) == 1
    if rel == "more_objects":
        return len(a) > len(b) if arg[0] == "left" else len(b) > len(a)
    if rel == "both_contain":
        return _has(a, arg[0], arg[1]) and _has(b, arg[0], arg[1])
    if rel == "left_image_has":
        return _has(a, arg[0], cells=_SIDE_CELLS[arg[1]])
    return _has(a, arg[0]) != _has(b, arg[0])  # exactly_one_contains


def _pair_same(rng: random.Random, truth: bool, key: int) -> tuple[list[Obj], list[Obj], tuple, str]:
    """All objects share one colour (key 1) or one shape (key 0); a false pair breaks it once."""
    pools = (SHAPES, COLOR_NAMES)
    common = rng.choice(pools[key])
    sides = []
    for _ in range(2):
        free = rng.sample(pools[1 - key], rng.randint(1, 3))
        sides.append([(common, f, cell) if key == 0 else (f, common, cell)
                      for f, cell in zip(free, rng.sample(range(4), len(free)))])
    if not truth:
        side = sides[rng.randrange(2)]
        i = rng.randrange(len(side))
        o = list(side[i])
        o[key] = rng.choice([x for x in pools[key] if x != common])
        side[i] = (o[0], o[1], o[2])
    word = "shape" if key == 0 else "color"
    return sides[0], sides[1], (), f"all the objects in both images have the same {word}"


def _pair_build(rng: random.Random, rel: str, truth: bool) -> tuple[list[Obj], list[Obj], tuple, str]:
    if rel in ("same_color", "same_shape"):
        return _pair_same(rng, truth, 1 if rel == "same_color" else 0)
    if rel == "more_objects":
        side = rng.choice(("left", "right"))
        other = "right" if side == "left" else "left"
        lo, hi = sorted(rng.sample(range(1, 5), 2))
        counts = (hi, lo) if truth else (lo, hi) if rng.random() < 0.7 else (lo, lo)
        n_side, n_other = counts
        a, b = random_objs(rng, n_side), random_objs(rng, n_other)
        if side == "right":
            a, b = b, a
        return a, b, (side,), f"the {side} image has more objects than the {other} image"
    if rel == "both_contain":
        shape, color = rng.choice(SHAPES), rng.choice(COLOR_NAMES)
        sides = []
        for has in (True, truth):
            objs = [o for o in random_objs(rng, rng.randint(1, 3)) if o[0] != shape and o[1] != color][:2]
            free = [c for c in range(4) if c not in {cell for _, _, cell in objs}]
            if has:
                objs.append((shape, color, rng.choice(free)))
            elif rng.random() < 0.6 or not objs:  # a near miss: right shape, wrong colour (or the reverse)
                if rng.random() < 0.5:
                    objs.append((shape, rng.choice([c for c in COLOR_NAMES if c != color]), rng.choice(free)))
                else:
                    objs.append((rng.choice([s for s in SHAPES if s != shape]), color, rng.choice(free)))
            sides.append(objs)
        if not truth and rng.random() < 0.5:
            sides.reverse()
        text = f"both images contain {an(color)} {color} {shape}"
        return sides[0], sides[1], (shape, color), text
    if rel == "left_image_has":
        shape, pos = rng.choice(SHAPES), rng.choice(tuple(_SIDE_CELLS))
        right = random_objs(rng, rng.randint(1, 3), shapes=tuple(s for s in SHAPES if s != shape))
        if rng.random() < 0.7:  # the named object at the named place, but in the other image
            right = [o for o in right if o[2] not in _SIDE_CELLS[pos]][:2]
            right.append((shape, rng.choice(COLOR_NAMES), rng.choice(_SIDE_CELLS[pos])))
        left = random_objs(rng, rng.randint(1, 3), shapes=tuple(s for s in SHAPES if s != shape))
        where = pos if truth else _OPPOSITE[pos]
        if truth or rng.random() < 0.7:
            left = [o for o in left if o[2] not in _SIDE_CELLS[where]][:2]
            left.append((shape, rng.choice(COLOR_NAMES), rng.choice(_SIDE_CELLS[where])))
        return left, right, (shape, pos), f"the left image has {an(shape)} {shape} at the {pos}"
    shape = rng.choice(SHAPES)  # exactly_one_contains
    rest = tuple(s for s in SHAPES if s != shape)
    has = (True, False) if truth else (True, True) if rng.random() < 0.75 else (False, False)
    sides = []
    for h in has:
        objs = random_objs(rng, rng.randint(1, 3), shapes=rest)
        if h:
            objs[0] = (shape, objs[0][1], objs[0][2])
        sides.append(objs)
    if rng.random() < 0.5:
        sides.reverse()
    return sides[0], sides[1], (shape,), f"exactly one image contains {an(shape)} {shape}"


def pair_statement(ctx: SampleContext, relations: list[str] | tuple[str, ...] = PAIR_RELATIONS) -> Sample:
    """NLVR2: a T/F relation over a left and a right image of simple shapes.

    The real prompt glues the statement to ``Choice List:``; a ". " keeps the statement's last word a word.
    """
    for rel in relations:
        check_param("pair_statement", "relations", rel, PAIR_RELATIONS)
    check_images(ctx, "pair_statement", 2)
    rng, truth = ctx.rng, ctx.slot(2) == 0
    rel = rng.choice(list(relations))
    a, b, arg, text = _pair_build(rng, rel, truth)
    if _pair_holds(rel, a, b, arg) != truth:
        raise AssertionError(f"pair_statement {rel}: construction gives the wrong answer")
    size = ctx.image_size
    prompt = (f"decide whether the relation between the two images is true.{IMAGE_TOKEN * 2}Relation: {text}. "
              f"Choice List:['True','False']Answer: \n{choice_list(TF)}")
    return Sample([scene_image(a, size), scene_image(b, size)], prompt, _tf(truth), TF,
                  {"relation": rel, "left": a, "right": b})


# ------------------------------------------------------------------------------------------- VISION
DEFECTS = ("scratch", "hole", "missing corner")
PARTS = ("square", "diamond", "triangle")
PART_COLORS = ("white", "yellow", "orange", "green")
_DARK = (25, 25, 25)


def part_image(rng: random.Random, size: int, shape: str, color: str, defect: str | None) -> Image.Image:
    """One inspected part (a large plain polygon) with at most one defect drawn on it."""
    img = canvas(size)
    box = jitter_box(rng, size, (0.14, 0.14, 0.86, 0.86), 0.04)
    draw_shape(img, shape, color, box)
    poly = shape_polygon(shape, box) or []
    cx, cy = sum(x for x, _ in poly) / len(poly), sum(y for _, y in poly) / len(poly)
    d = ImageDraw.Draw(img)
    w = box[2] - box[0]
    if defect == "scratch":
        dx, dy = rng.choice(((1, 0.5), (1, -0.5), (0.5, 1), (-0.5, 1)))
        r = (0.2 if shape == "triangle" else 0.3) * w
        d.line([(cx - dx * r, cy - dy * r), (cx + dx * r, cy + dy * r)], fill=_DARK, width=max(2, size // 16))
    elif defect == "hole":
        d.ellipse(centered_box(cx + rng.uniform(-0.06, 0.06) * w, cy + rng.uniform(-0.06, 0.06) * w, 0.22 * w),
                  fill=_DARK)
    elif defect == "missing corner":
        i = rng.randrange(len(poly))
        (vx, vy), (px, py), (nx, ny) = poly[i], poly[i - 1], poly[(i + 1) % len(poly)]
        f = 0.42
        d.polygon([(vx, vy), (vx + f * (px - vx), vy + f * (py - vy)), (vx + f * (nx - vx), vy + f * (ny - vy))],
                  fill=BACKGROUNDS["gray"])
        # widen the cut a little past the outline so no anti-alias sliver of the part survives
        d.line([(vx + f * (px - vx), vy + f * (py - vy)), (vx, vy), (vx + f * (nx - vx), vy + f * (ny - vy))],
               fill=BACKGROUNDS["gray"], width=2)
    return img


def _random_defect(rng: random.Random, exclude: str | None = None) -> str | None:
    if rng.random() < 0.5:
        return None
    return rng.choice([x for x in DEFECTS if x != exclude])


def defect_check(ctx: SampleContext) -> Sample:
    """VISION: T/F statement about defects on the parts shown in N inspection images."""
    check_images(ctx, "defect_check", 2, 8)
    rng, n, truth = ctx.rng, ctx.n_images, ctx.slot(2) == 0
    template = rng.choice(("one", "none", "only"))
    d = rng.choice(DEFECTS)
    k, j = rng.sample(range(n), 2)
    defects = [_random_defect(rng) for _ in range(n)]
    if template == "one":  # only image k decides; defect d is usually shown elsewhere whatever the answer
        if rng.random() < 0.75:
            defects[j] = d
        defects[k] = d if truth else _random_defect(rng, exclude=d)
        text = f"the part in image {k + 1} has {an(d)} {d}"
        holds = defects[k] == d
    elif template == "none":
        defects = [_random_defect(rng, exclude=d) for _ in range(n)]
        if not truth:
            defects[k] = d
        text = f"no part has {an(d)} {d}"
        holds = d not in defects
    else:
        defects = [None] * n
        if truth:
            defects[k] = rng.choice(DEFECTS)
        else:
            defects[j] = rng.choice(DEFECTS)
            if rng.random() < 0.5:
                defects[k] = rng.choice(DEFECTS)
        text = f"only the part in image {k + 1} has a defect"
        holds = defects[k] is not None and sum(x is not None for x in defects) == 1
    if holds != truth:
        raise AssertionError(f"defect_check {template}: construction gives the wrong answer")
    shape, color = rng.choice(PARTS), rng.choice(PART_COLORS)
    images = [part_image(rng, ctx.image_size, shape, color, x) for x in defects]
    prompt = (f"inspect the parts in the {NUM_WORDS[n]} images. {IMAGE_TOKEN * n}"
              f"Statement: {text}.\n{choice_list(TF)}")
    return Sample(images, prompt, _tf(truth), TF, {"template": template, "defects": defects})


# ------------------------------------------------------------------------------------------- VSR
SPATIAL = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}
_SPATIAL_OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}
_STEP = {"left": (-1, 0), "right": (1, 0), "above": (0, -1), "below": (0, 1)}


def spatial_relation(ctx: SampleContext) -> Sample:
    """VSR: is "the <a> is <relation> the <b>" true of a two-object image?"""
    check_images(ctx, "spatial_relation", 1)
    rng, size, truth = ctx.rng, ctx.image_size, ctx.slot(2) == 0
    (sa, sb), (ca, cb) = rng.sample(SHAPES, 2), rng.sample(COLOR_NAMES, 2)
    rel = rng.choice(tuple(SPATIAL))
    if truth:
        actual = rel
    elif rng.random() < 0.6:
        actual = _SPATIAL_OPPOSITE[rel]
    else:
        actual = rng.choice([r for r in SPATIAL if r not in (rel, _SPATIAL_OPPOSITE[rel])])
    ux, uy = _STEP[actual]
    gap = rng.uniform(0.38, 0.5)  # along the relation's axis, as a fraction of the image
    mid, cross = rng.uniform(0.42, 0.58), rng.uniform(0.25, 0.75)
    off = rng.uniform(-0.12, 0.12)  # small misalignment across the axis
    a_along, b_along = mid + gap / 2 * (ux + uy), mid - gap / 2 * (ux + uy)
    if ux:
        pa, pb = (a_along, cross + off / 2), (b_along, cross - off / 2)
    else:
        pa, pb = (cross + off / 2, a_along), (cross - off / 2, b_along)
    img = canvas(size)
    side = 0.32 * size
    draw_shape(img, sa, ca, centered_box(pa[0] * size, pa[1] * size, side))
    draw_shape(img, sb, cb, centered_box(pb[0] * size, pb[1] * size, side))
    text = f"the {ca} {sa} is {SPATIAL[rel]} the {cb} {sb}"
    prompt = f"decide whether the caption is true for the image.\n{IMAGE_TOKEN}\nCaption: {text}.\n{choice_list(TF)}"
    return Sample([img], prompt, _tf(truth), TF, {"relation": rel, "actual": actual})
