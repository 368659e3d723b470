"""The icon library shared by clients 6-9 (icon counting, scene knowledge, dishes) and the ``icon_count`` family.

Icons are drawn on a supersampled canvas and box-filtered down, so they stay recognisable at ~9 px. Each icon
has one fixed look (the colour is part of its identity), which lets the knowledge and dish tasks reuse what a
model learns while counting.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from PIL import Image, ImageDraw

from drake.data.synth.base import IMAGE_TOKEN, Sample, SampleContext, choice_list, place
from drake.errors import SpecError

Box = tuple[float, float, float, float]
SS = 3  # supersampling factor of every icon canvas

BROWN = (120, 70, 30)
LEAF = (40, 150, 50)


def _apple(d: ImageDraw.ImageDraw, b: Box) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2
    d.ellipse((x0 + 0.05 * w, y0 + 0.22 * h, x1 - 0.05 * w, y1), fill=(220, 40, 40))
    d.line((cx, y0 + 0.3 * h, cx + 0.05 * w, y0), fill=BROWN, width=max(1, round(0.1 * w)))
    d.ellipse((cx + 0.05 * w, y0 + 0.02 * h, cx + 0.45 * w, y0 + 0.22 * h), fill=LEAF)


def _egg(d: ImageDraw.ImageDraw, b: Box) -> None:
    x0, y0, x1, y1 = b
    w = x1 - x0
    d.ellipse((x0 + 0.18 * w, y0, x1 - 0.18 * w, y1), fill=(250, 246, 230), outline=(150, 140, 120),
              width=max(1, round(0.06 * w)))


def _fish(d: ImageDraw.ImageDraw, b: Box) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    cy = (y0 + y1) / 2
    blue = (40, 80, 220)
    d.polygon([(x0 + 0.6 * w, cy), (x1, y0 + 0.15 * h), (x1, y1 - 0.15 * h)], fill=blue)
    d.ellipse((x0, y0 + 0.22 * h, x0 + 0.75 * w, y1 - 0.22 * h), fill=blue)
    r = 0.08 * w
    d.ellipse((x0 + 0.18 * w - r, cy - 0.06 * h - r, x0 + 0.18 * w + r, cy - 0.06 * h + r), fill=(245, 245, 245))


def _bird(d: ImageDraw.ImageDraw, b: Box) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    dark = (25, 25, 25)
    d.polygon([(x0 + 0.5 * w, y0 + 0.55 * h), (x1, y0 + 0.35 * h), (x1 - 0.1 * w, y0 + 0.75 * h)], fill=dark)
    d.ellipse((x0 + 0.2 * w, y0 + 0.35 * h, x1 - 0.15 * w, y1 - 0.05 * h), fill=dark)
    d.ellipse((x0 + 0.12 * w, y0 + 0.08 * h, x0 + 0.55 * w, y0 + 0.5 * h), fill=dark)
    d.polygon([(x0 + 0.16 * w, y0 + 0.22 * h), (x0 + 0.16 * w, y0 + 0.38 * h), (x0, y0 + 0.3 * h)],
              fill=(245, 140, 30))
    r = 0.07 * w
    d.ellipse((x0 + 0.3 * w - r, y0 + 0.24 * h - r, x0 + 0.3 * w + r, y0 + 0.24 * h + r), fill=(245, 245, 245))


def _flower(d: ImageDraw.ImageDraw, b: Box) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2, y0 + 0.4 * h
    d.line((cx, cy, cx, y1), fill=LEAF, width=max(1, round(0.12 * w)))
    pr, pd = 0.19 * w, 0.22 * w
    for k in range(5):
        a = -math.pi / 2 + k * 2 * math.pi / 5
        px, py = cx + pd * math.cos(a), cy + pd * math.sin(a)
        d.ellipse((px - pr, py - pr, px + pr, py + pr), fill=(240, 110, 170))
    r = 0.13 * w
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(235, 210, 40))


def _cactus(d: ImageDraw.ImageDraw, b: Box) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2
    g = (30, 130, 60)
    d.rounded_rectangle((cx - 0.14 * w, y0, cx + 0.14 * w, y0 + 0.8 * h), radius=0.14 * w, fill=g)
    d.rounded_rectangle((x0 + 0.08 * w, y0 + 0.2 * h, x0 + 0.3 * w, y0 + 0.5 * h), radius=0.1 * w, fill=g)
    d.rounded_rectangle((x1 - 0.3 * w, y0 + 0.12 * h, x1 - 0.08 * w, y0 + 0.42 * h), radius=0.1 * w, fill=g)
    d.rectangle((x0 + 0.08 * w, y0 + 0.42 * h, cx, y0 + 0.52 * h), fill=g)
    d.rectangle((cx, y0 + 0.34 * h, x1 - 0.08 * w, y0 + 0.44 * h), fill=g)
    d.polygon([(x0 + 0.2 * w, y0 + 0.72 * h), (x1 - 0.2 * w, y0 + 0.72 * h), (x1 - 0.3 * w, y1),
               (x0 + 0.3 * w, y1)], fill=(200, 90, 40))


def _ball(d: ImageDraw.ImageDraw, b: Box) -> None:
    x0, y0, x1, y1 = b
    w = x1 - x0
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    lw = max(1, round(0.09 * w))
    d.ellipse(b, fill=(245, 140, 30))
    d.line((x0, cy, x1, cy), fill=(20, 20, 20), width=lw)
    d.line((cx, y0, cx, y1), fill=(20, 20, 20), width=lw)


def _boat(d: ImageDraw.ImageDraw, b: Box) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    d.polygon([(x0, y0 + 0.62 * h), (x1, y0 + 0.62 * h), (x1 - 0.2 * w, y1), (x0 + 0.2 * w, y1)], fill=BROWN)
    d.polygon([(x0 + 0.5 * w, y0), (x0 + 0.5 * w, y0 + 0.56 * h), (x0 + 0.12 * w, y0 + 0.56 * h)],
              fill=(250, 250, 250), outline=(90, 90, 90), width=max(1, round(0.05 * w)))
    d.line((x0 + 0.54 * w, y0, x0 + 0.54 * w, y0 + 0.62 * h), fill=(20, 20, 20), width=max(1, round(0.07 * w)))


def _star(d: ImageDraw.ImageDraw, b: Box) -> None:
    x0, y0, x1, y1 = b
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2 + 0.04 * (y1 - y0), min(x1 - x0, y1 - y0) / 2
    pts = []
    for k in range(10):
        rad = r if k % 2 == 0 else r * 0.45
        a = -math.pi / 2 + k * math.pi / 5
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    d.polygon(pts, fill=(235, 200, 30))


def _heart(d: ImageDraw.ImageDraw, b: Box) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    c = (150, 60, 190)
    d.ellipse((x0, y0 + 0.05 * h, x0 + 0.55 * w, y0 + 0.6 * h), fill=c)
    d.ellipse((x1 - 0.55 * w, y0 + 0.05 * h, x1, y0 + 0.6 * h), fill=c)
    d.polygon([(x0 + 0.02 * w, y0 + 0.42 * h), (x1 - 0.02 * w, y0 + 0.42 * h), (x0 + 0.5 * w, y1)], fill=c)


ICONS: dict[str, Callable[[ImageDraw.ImageDraw, Box], None]] = {
    "apple": _apple, "egg": _egg, "fish": _fish, "bird": _bird, "flower": _flower, "cactus": _cactus,
    "ball": _ball, "boat": _boat, "star": _star, "heart": _heart,
}  # fmt: skip
PLURAL = {"apple": "apples", "egg": "eggs", "fish": "fish", "bird": "birds", "flower": "flowers",
          "cactus": "cactuses", "ball": "balls", "boat": "boats", "star": "stars", "heart": "hearts"}  # fmt: skip
COUNT_ICONS = ("apple", "fish", "star", "heart", "flower", "ball")  # distinct colours: counted by iconqa
PAPER = (236, 236, 228)  # light "worksheet" background of icon pictures


def expect_images(ctx: SampleContext, family: str, allowed: tuple[int, ...] = (1,)) -> None:
    """Reject a tasks.yaml ``images`` count the family cannot draw."""
    if ctx.n_images not in allowed:
        raise SpecError(f"task {ctx.task!r}: family {family!r} draws {' or '.join(map(str, allowed))} images, "
                        f"not {ctx.n_images}; fix 'images' in tasks.yaml")


def bad_param(ctx: SampleContext, family: str, name: str, value: object, allowed: tuple[str, ...]) -> SpecError:
    return SpecError(f"task {ctx.task!r}: family {family!r} has no {name} {value!r}; use one of "
                     f"{', '.join(allowed)} in tasks.yaml")


def draw_icon(d: ImageDraw.ImageDraw, name: str, box: Box) -> None:
    """Draw icon ``name`` into ``box`` (canvas coordinates, so scale boxes by ``SS`` on a big canvas)."""
    ICONS[name](d, box)


def big_canvas(size: int, color: tuple[int, int, int]) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    """A supersampled canvas and its drawer; finish it with ``shrink``."""
    img = Image.new("RGB", (size * SS, size * SS), color)
    return img, ImageDraw.Draw(img)


def shrink(img: Image.Image) -> Image.Image:
    return img.resize((img.width // SS, img.height // SS), Image.BOX)


def sbox(box: Box) -> Box:
    """Scale a box from output pixels to supersampled canvas pixels."""
    return (box[0] * SS, box[1] * SS, box[2] * SS, box[3] * SS)


def grid_cells(n: int, size: int, rng: random.Random, cols: int = 3, fill: float = 0.86) -> list[Box]:
    """``n`` icon boxes in distinct cells of a ``cols`` x ``cols`` grid, jittered a little, output pixels."""
    cell = size / cols
    s = cell * fill
    out = []
    for c in rng.sample(range(cols * cols), n):
        jx, jy = rng.uniform(-0.5, 0.5) * (cell - s), rng.uniform(-0.5, 0.5) * (cell - s)
        x, y = (c % cols + 0.5) * cell + jx, (c // cols + 0.5) * cell + jy
        out.append((x - s / 2, y - s / 2, x + s / 2, y + s / 2))
    return out


def icon_scene(size: int, names: list[str], rng: random.Random) -> Image.Image:
    """Icons ``names`` (one per grid cell, order randomised by the cell draw) on worksheet paper."""
    img, d = big_canvas(size, PAPER)
    for name, box in zip(names, grid_cells(len(names), size, rng)):
        draw_icon(d, name, sbox(box))
    return shrink(img)


EASY_RANGE = (1, 2, 3, 4)
HARD_COUNT = (1, 2, 3, 4)  # count one kind among two kinds
HARD_MOST = (2, 3, 4, 5)  # which of three kinds is the most frequent: that kind's count
OPEN_SUFFIX = " Answer with a single word or a number. "


def _numeric_choices(ctx: SampleContext, rng: random.Random, answer: int, pool: tuple[int, ...]) -> list[str]:
    """Three numbers: the answer plus two drawn uniformly from the pool, so the set says nothing about it."""
    others = rng.sample([v for v in pool if v != answer], 2)
    return place(str(answer), [str(v) for v in others], ctx.slot(3, "pos"))


def icon_count(ctx: SampleContext, mode: str = "choice", level: str = "easy") -> Sample:
    """IconQA analogue: count icons of one kind (easy), or count one kind among two / name the most
    frequent of three kinds (hard).

    The label (question type and count) comes from one ``ctx.slot`` over all (type, value) pairs; the
    correct choice's position from another. Counts stop at 4 for easy and counting-among-two questions:
    with 1-6 the zoo reached 42% (chance 33) and it never learnt "how many more A than B" (34%), the hard
    level's former second type; naming the most frequent kind (a colour majority) it learns (55% alone,
    3 seeds).
    """
    expect_images(ctx, "icon_count")
    if mode not in ("choice", "open"):
        raise bad_param(ctx, "icon_count", "mode", mode, ("choice", "open"))
    rng = ctx.rng
    distractors: list[str] | None = None  # None: numeric choices drawn from ``pool``
    if level == "easy":
        kind = rng.choice(COUNT_ICONS)
        n = EASY_RANGE[ctx.slot(len(EASY_RANGE), "value")]
        names, pool, q = [kind] * n, EASY_RANGE, f"How many {PLURAL[kind]} are {rng.choice(('there', 'shown'))}?"
        qtype, answer = "count", str(n)
    elif level == "hard":
        v = ctx.slot(len(HARD_COUNT) + len(HARD_MOST), "value")
        if v < len(HARD_COUNT):
            a, b = rng.sample(COUNT_ICONS, 2)
            n, qtype, pool, answer = HARD_COUNT[v], "count", HARD_COUNT, str(HARD_COUNT[v])
            names = [a] * n + [b] * rng.randint(1, min(4, 9 - n))
            q = f"How many {PLURAL[a]} are there?"
        else:
            top, *rest = rng.sample(COUNT_ICONS, 3)
            n, qtype, answer = HARD_MOST[v - len(HARD_COUNT)], "most", PLURAL[top]
            names = [top] * n + [k for k in rest for _ in range(rng.randint(1, min(n - 1, 2)))]
            q, distractors = "What is there the most of?", [PLURAL[k] for k in rest]
    else:
        raise bad_param(ctx, "icon_count", "level", level, ("easy", "hard"))
    img = icon_scene(ctx.image_size, names, rng)
    meta = {"label": f"{qtype}:{n}", "count": n}
    if mode == "open":
        return Sample([img], f"{IMAGE_TOKEN}\n{q}{OPEN_SUFFIX}", answer, None, meta)
    if distractors is None:
        choices = _numeric_choices(ctx, rng, n, pool)
    else:
        choices = place(answer, distractors, ctx.slot(3, "pos"))
    return Sample([img], f"{IMAGE_TOKEN}\n{q}\n{choice_list(choices)}", answer, choices, meta)
