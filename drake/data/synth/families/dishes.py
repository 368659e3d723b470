"""WorldCuisines (WCVQA) analogue: a fixed visual lexicon of ten synthetic dishes from five regions.

A dish is a plate (colour, flat or bowl) plus an arrangement of the shared food icons or simple shapes.
Dishes sharing a main food (two apple dishes, two egg dishes, two fish dishes) sit in different regions, and
the two dishes of a region have different main foods, so name and region both need the whole picture.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from PIL import Image, ImageDraw

from drake.data.synth.base import IMAGE_TOKEN, Sample, SampleContext, pool_ordered_options
from drake.data.synth.families.icons import SS, bad_param, big_canvas, draw_icon, expect_images, shrink

REGIONS = ("north", "south", "east", "west", "coast")
IDS = ("1", "2", "3", "4", "5")
WC_TAIL = "Print only the answer with a single answer id (1,2,3,4,5)."
TABLES = ((200, 190, 160), (128, 128, 128), (170, 130, 90))

Drawer = Callable[[ImageDraw.ImageDraw, float, float, float, random.Random], None]


def _plate(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, color: tuple[int, int, int],
           inner: tuple[int, int, int] | None = None) -> None:
    """A plate with a darker rim; ``inner`` fills a bowl with soup."""
    rim = tuple(max(0, int(c * 0.7)) for c in color)
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=rim)
    d.ellipse((cx - 0.88 * r, cy - 0.88 * r, cx + 0.88 * r, cy + 0.88 * r), fill=color)
    if inner is not None:
        d.ellipse((cx - 0.7 * r, cy - 0.7 * r, cx + 0.7 * r, cy + 0.7 * r), fill=inner)


def _ring(cx: float, cy: float, rad: float, n: int, rng: random.Random) -> list[tuple[float, float]]:
    a0 = rng.uniform(0, 2 * math.pi)
    return [(cx + rad * math.cos(a0 + k * 2 * math.pi / n), cy + rad * math.sin(a0 + k * 2 * math.pi / n))
            for k in range(n)]


def _icon_at(d: ImageDraw.ImageDraw, name: str, x: float, y: float, s: float) -> None:
    draw_icon(d, name, (x - s / 2, y - s / 2, x + s / 2, y + s / 2))


def _apple_pie(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, rng: random.Random) -> None:
    _plate(d, cx, cy, r, (245, 245, 245))
    pr = 0.8 * r
    d.ellipse((cx - pr, cy - pr, cx + pr, cy + pr), fill=(225, 150, 60))
    for k in (-0.4, 0.0, 0.4):
        d.line((cx + k * pr, cy - pr * 0.9, cx + k * pr, cy + pr * 0.9), fill=(140, 80, 30), width=max(1, SS))
        d.line((cx - pr * 0.9, cy + k * pr, cx + pr * 0.9, cy + k * pr), fill=(140, 80, 30), width=max(1, SS))


def _apple_salad(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, rng: random.Random) -> None:
    _plate(d, cx, cy, r, (40, 170, 60))
    for x, y in _ring(cx, cy, 0.42 * r, 3, rng):
        _icon_at(d, "apple", x, y, 0.62 * r)


def _egg_bowl(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, rng: random.Random) -> None:
    _plate(d, cx, cy, r, (40, 80, 220), inner=(90, 140, 235))
    _icon_at(d, "egg", cx, cy, 1.05 * r)


def _egg_toast(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, rng: random.Random) -> None:
    _plate(d, cx, cy, r, (245, 245, 245))
    t = 0.62 * r
    d.rounded_rectangle((cx - t, cy - t, cx + t, cy + t), radius=0.2 * t, fill=(205, 150, 80))
    d.ellipse((cx - 0.8 * t, cy - 0.6 * t, cx + 0.8 * t, cy + 0.6 * t), fill=(250, 250, 245))
    d.ellipse((cx - 0.3 * t, cy - 0.3 * t, cx + 0.3 * t, cy + 0.3 * t), fill=(245, 180, 20))


def _fish_soup(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, rng: random.Random) -> None:
    _plate(d, cx, cy, r, (245, 245, 245), inner=(235, 200, 60))
    _icon_at(d, "fish", cx, cy, 1.0 * r)


def _fish_grill(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, rng: random.Random) -> None:
    _plate(d, cx, cy, r, (30, 30, 30))
    _icon_at(d, "fish", cx, cy - 0.33 * r, 0.75 * r)
    _icon_at(d, "fish", cx, cy + 0.33 * r, 0.75 * r)


def _star_cake(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, rng: random.Random) -> None:
    _plate(d, cx, cy, r, (150, 60, 190))
    _icon_at(d, "star", cx, cy, 1.2 * r)


def _red_stew(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, rng: random.Random) -> None:
    _plate(d, cx, cy, r, (30, 30, 30), inner=(200, 40, 35))
    for x, y in _ring(cx, cy, 0.35 * r, 5, rng):
        q = 0.1 * r
        d.ellipse((x - q, y - q, x + q, y + q), fill=(245, 240, 220))


def _green_salad(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, rng: random.Random) -> None:
    _plate(d, cx, cy, r, (245, 245, 245))
    for x, y in _ring(cx, cy, 0.4 * r, 5, rng):
        q = 0.24 * r
        d.polygon([(x, y - q), (x + q, y + q), (x - q, y + q)], fill=(40, 150, 50))


def _rice_balls(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, rng: random.Random) -> None:
    _plate(d, cx, cy, r, (235, 210, 40))
    for x, y in _ring(cx, cy, 0.42 * r, 4, rng):
        q = 0.27 * r
        d.ellipse((x - q, y - q, x + q, y + q), fill=(250, 250, 250), outline=(160, 160, 150), width=SS)


# name -> (region, drawer)
DISHES: dict[str, tuple[str, Drawer]] = {
    "apple pie": ("north", _apple_pie), "egg toast": ("north", _egg_toast),
    "egg bowl": ("south", _egg_bowl), "green salad": ("south", _green_salad),
    "fish grill": ("east", _fish_grill), "red stew": ("east", _red_stew),
    "apple salad": ("west", _apple_salad), "rice balls": ("west", _rice_balls),
    "fish soup": ("coast", _fish_soup), "star cake": ("coast", _star_cake),
}  # fmt: skip
DISH_NAMES = tuple(DISHES)


def dish_image(name: str, size: int, rng: random.Random) -> Image.Image:
    """The dish on a table, with a jittered plate size and position."""
    img, d = big_canvas(size, rng.choice(TABLES))
    r = size * rng.uniform(0.4, 0.47)
    cx = size / 2 + rng.uniform(-1, 1) * (size / 2 - r)
    cy = size / 2 + rng.uniform(-1, 1) * (size / 2 - r)
    DISHES[name][1](d, cx * SS, cy * SS, r * SS, rng)
    return shrink(img)


def _numbered(options: list[str]) -> str:
    return "\n".join(f"{i + 1}. {o}" for i, o in enumerate(options))


def dish(ctx: SampleContext, mode: str = "name") -> Sample:
    """WCVQA analogue. ``name``: which dish; ``context``: with a true region hint (always two dishes of that
    region among the options, so the text alone gets at most 1/2); ``adversarial``: with a hint naming a
    wrong dish among the options (the text alone gets at most 1/4); ``location``: which region.
    Five numbered options in DISH_NAMES (or REGIONS) order, the answer is the id."""
    expect_images(ctx, "dish")
    rng = ctx.rng
    if mode == "location":
        # all five regions, north-first or coast-first: in one fixed order the id alone named the region
        # (98% after calibration, measured), so the id must be read against the listed order half the time
        options, pos = pool_ordered_options(ctx, rng, REGIONS if rng.random() < 0.5 else REGIONS[::-1], 5)
        region = options[pos]
        name = rng.choice(sorted(n for n, (r, _) in DISHES.items() if r == region))
        question, label = "Which region does this dish come from?", region
    elif mode in ("name", "context", "adversarial"):
        if mode == "context":  # both dishes of the hinted region are options: the hint alone gives 1/2
            pos = ctx.slot(5, "pos")
            while True:  # redraw until the slot falls on one of the pair (each draw: >= 2 chances in 5)
                region = rng.choice(REGIONS)
                pair = [n for n in DISH_NAMES if DISHES[n][0] == region]
                rest = rng.sample([n for n in DISH_NAMES if DISHES[n][0] != region], 3)
                options = sorted(pair + rest, key=DISH_NAMES.index)
                if options[pos] in pair:
                    break
            name = options[pos]
            hint = f"This dish is popular in the {region}. "
        else:
            options, pos = pool_ordered_options(ctx, rng, DISH_NAMES, 5)
            name = options[pos]
            hint = ""
            if mode == "adversarial":
                wrong = rng.choice([n for n in options if n != name])
                hint = rng.choice((f"My friend says this is {wrong}. ", f"The menu calls it {wrong}. "))
        question, label = f"{hint}What is the name of this dish?", name
    else:
        raise bad_param(ctx, "dish", "mode", mode, ("name", "context", "adversarial", "location"))
    img = dish_image(name, ctx.image_size, rng)
    prompt = f"{IMAGE_TOKEN}\n{question}\n{_numbered(options)}\n{WC_TAIL}"
    return Sample([img], prompt, IDS[pos], list(IDS), {"label": label, "dish": name})
