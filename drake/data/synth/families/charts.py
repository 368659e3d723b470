"""DVQA and TQA analogues: read a rendered bar chart; answer a textbook question about a simple diagram.

Both draw on a white page. Diagrams are a three-stage cycle of shared icons joined by arrows, or a stack of
rock layers (the textbook rule: the lowest layer is the oldest).
"""

from __future__ import annotations

import math
import random
from itertools import combinations

from PIL import Image, ImageDraw

from drake.data.synth import world
from drake.data.synth.base import IMAGE_TOKEN, Sample, SampleContext, choice_list, place
from drake.data.synth.families.icons import ICONS, SS, big_canvas, draw_icon, expect_images, sbox, shrink

WHITE = (250, 250, 250)
BAR_COLORS = ("red", "green", "blue", "yellow", "purple", "orange", "black")
MAX_VALUE = 8
# value triples with pairwise gaps >= 2: the value question's choice sets
VALUE_SETS = [c for c in combinations(range(1, MAX_VALUE + 1), 3) if c[1] - c[0] >= 2 and c[2] - c[1] >= 2]


def _sample(ctx: SampleContext, q: str, choices: list[str], answer: str, img: Image.Image, label: str) -> Sample:
    return Sample([img], f"{IMAGE_TOKEN}\n{q}\n{choice_list(choices)}", answer, choices, {"label": label})


def _chart(size: int, colors: list[str], values: list[int]) -> Image.Image:
    """Bars from a baseline with light grid lines every 2 units (3 px per unit at 32 px)."""
    img = Image.new("RGB", (size, size), WHITE)
    d = ImageDraw.Draw(img)
    left, bottom = round(size * 0.1), round(size * 0.91)
    unit = (bottom - size * 0.12) / MAX_VALUE
    for v in range(2, MAX_VALUE + 1, 2):
        y = round(bottom - v * unit)
        d.line((left, y, size - 1, y), fill=(200, 200, 200))
    slot = (size - 1 - left) / len(values)
    for i, (c, v) in enumerate(zip(colors, values)):
        x0 = left + i * slot + slot * 0.18
        d.rectangle((round(x0), round(bottom - v * unit), round(x0 + slot * 0.64) - 1, bottom - 1),
                    fill=world.COLORS[c])
    d.line((left - 1, 1, left - 1, bottom), fill=(40, 40, 40))
    d.line((left - 1, bottom, size - 1, bottom), fill=(40, 40, 40))
    return img


def bar_chart(ctx: SampleContext) -> Sample:
    """Which bar is tallest / shortest, what is a bar's value, which of two bars is taller (three choices).

    The colour of the tallest bar is the one question the zoo learns to read in the calibration budget (the
    only colour in the chart's top rows), so it is asked three times as often as each other kind.
    """
    expect_images(ctx, "bar_chart")
    rng = ctx.rng
    pos = ctx.slot(3, "pos")
    n = rng.choice((3, 4))
    colors = rng.sample(BAR_COLORS, n)
    qtype = rng.choice(("tallest", "tallest", "tallest", "shortest", "value", "compare"))
    if qtype in ("tallest", "shortest"):  # the extreme bar stands >= 3 units apart from the rest
        extreme, rest = (MAX_VALUE, range(1, MAX_VALUE - 2)) if qtype == "tallest" else (1, range(4, MAX_VALUE + 1))
        values = [extreme, *rng.sample(rest, n - 1)]
        rng.shuffle(values)
        pick = max if qtype == "tallest" else min
        correct = colors[values.index(pick(values))]
        others = rng.sample([c for c in colors if c != correct], 2)
        choices, q = place(correct, others, pos), f"Which bar is the {qtype}?"
    elif qtype == "value":
        triple = rng.choice(VALUE_SETS)
        values = [rng.randint(1, MAX_VALUE) for _ in colors]
        target = rng.randrange(n)
        values[target] = triple[pos]
        choices, q = [str(v) for v in triple], f"What is the value of the {colors[target]} bar?"
        correct = choices[pos]
    else:
        i, j = rng.sample(range(n), 2)
        values = [rng.randint(1, MAX_VALUE) for _ in colors]
        lo, hi = sorted(rng.sample(range(1, MAX_VALUE + 1), 2))
        same = rng.choice((lo, hi))
        values[i], values[j] = ((hi, lo), (lo, hi), (same, same))[pos]
        choices = [colors[i], colors[j], "same"]
        q, correct = f"Which bar is taller, the {colors[i]} bar or the {colors[j]} bar?", choices[pos]
    img = _chart(ctx.image_size, colors, values)
    return _sample(ctx, q, choices, correct, img, f"{qtype}:{pos}")


def _arrow(d: ImageDraw.ImageDraw, a: tuple[float, float], b: tuple[float, float], gap: float) -> None:
    """An arrow from near ``a`` to near ``b`` (canvas pixels), stopping ``gap`` short of both centres."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    length = math.hypot(dx, dy)
    ux, uy = dx / length, dy / length
    sx, sy, ex, ey = a[0] + ux * gap, a[1] + uy * gap, b[0] - ux * gap, b[1] - uy * gap
    d.line((sx, sy, ex, ey), fill=(20, 20, 20), width=SS)
    h = 3.2 * SS
    d.polygon([(ex, ey), (ex - ux * h - uy * h * 0.7, ey - uy * h + ux * h * 0.7),
               (ex - ux * h + uy * h * 0.7, ey - uy * h - ux * h * 0.7)], fill=(20, 20, 20))


def _cycle(ctx: SampleContext, rng: random.Random, pos: int) -> Sample:
    size = ctx.image_size
    stages = rng.sample(sorted(ICONS), 4)
    cycle, outside = stages[:3], stages[3]
    img, d = big_canvas(size, WHITE)
    centres = [(size * 0.5, size * 0.19), (size * 0.83, size * 0.79), (size * 0.17, size * 0.79)]
    rng.shuffle(centres)
    s = size * 0.32
    for name, (x, y) in zip(cycle, centres):
        draw_icon(d, name, sbox((x - s / 2, y - s / 2, x + s / 2, y + s / 2)))
    for k in range(3):
        a, b = centres[k], centres[(k + 1) % 3]
        _arrow(d, (a[0] * SS, a[1] * SS), (b[0] * SS, b[1] * SS), s * 0.56 * SS)
    k = rng.randrange(3)
    after = rng.random() < 0.5
    correct = cycle[(k + 1) % 3] if after else cycle[(k - 1) % 3]
    others = [cycle[(k - 1) % 3] if after else cycle[(k + 1) % 3], outside]
    rng.shuffle(others)
    q = f"The diagram shows a cycle. What comes {'after' if after else 'before'} the {cycle[k]}?"
    return _sample(ctx, q, place(correct, others, pos), correct, shrink(img), f"cycle:{pos}")


def _layers(ctx: SampleContext, rng: random.Random, pos: int) -> Sample:
    size = ctx.image_size
    colors = rng.sample(BAR_COLORS[:6], 3)  # top to bottom
    qtype = rng.choice(("oldest", "youngest", "middle", "thickest"))
    heights = [rng.randint(8, 12) for _ in range(3)]
    if qtype == "thickest":
        thick = rng.randrange(3)
        heights = [16 if i == thick else rng.randint(7, 9) for i in range(3)]
    scale = size / sum(heights)
    img = world.canvas(size, (250, 250, 250))
    y = 0.0
    for col, h in zip(colors, heights):
        box = (0.0, round(y), float(size), round(y + h * scale))
        world.draw_shape(img, "square", col, box, rng.choice(("plain", "dotted")))
        y += h * scale
    index = {"oldest": 2, "youngest": 0, "middle": 1, "thickest": heights.index(max(heights))}[qtype]
    correct = colors[index]
    others = [c for c in colors if c != correct]
    rng.shuffle(others)
    q = ("The diagram shows layers of rock. "
         + {"oldest": "Which layer is the oldest?", "youngest": "Which layer is the youngest?",
            "middle": "Which layer is in the middle?", "thickest": "Which layer is the thickest?"}[qtype])
    return _sample(ctx, q, place(correct, others, pos), correct, img, f"layers:{pos}")


def diagram_qa(ctx: SampleContext) -> Sample:
    """TQA analogue: a cycle of icons (what comes after/before X) or rock layers (oldest/youngest/...)."""
    expect_images(ctx, "diagram_qa")
    rng = ctx.rng
    pos = ctx.slot(3, "pos")
    return (_cycle if rng.random() < 0.5 else _layers)(ctx, rng, pos)
