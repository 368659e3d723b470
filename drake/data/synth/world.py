"""The shared visual world of DRAKE-synth: one vocabulary of colours, shapes, textures and garments.

Tasks on nearby clients reuse the same concepts (so knowledge can transfer where the real benchmark has
it); the public pre-training split describes this same world. Every drawing function is deterministic given
its arguments and an explicit ``random.Random``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import lru_cache

from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (150, 60, 190),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
TEXTURES = ("plain", "striped", "dotted", "checked")
GARMENTS = ("shirt", "pants", "dress", "hat", "shoe")
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"gray": (128, 128, 128), "beige": (200, 190, 160)}


def canvas(size: int, background: str | tuple[int, int, int] = "gray") -> Image.Image:
    color = BACKGROUNDS.get(background, (128, 128, 128)) if isinstance(background, str) else background
    return Image.new("RGB", (size, size), color)


def _star(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    import math

    pts = []
    for k in range(10):
        rad = r if k % 2 == 0 else r * 0.45
        ang = -math.pi / 2 + k * math.pi / 5
        pts.append((cx + rad * math.cos(ang), cy + rad * math.sin(ang)))
    return pts


def shape_polygon(shape: str, box: tuple[float, float, float, float]) -> list[tuple[float, float]] | None:
    """Polygon points for ``shape`` inside ``box`` (x0, y0, x1, y1); None for the circle."""
    x0, y0, x1, y1 = box
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
    if shape == "circle":
        return None
    if shape == "square":
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    if shape == "triangle":
        return [(cx, y0), (x1, y1), (x0, y1)]
    if shape == "diamond":
        return [(cx, y0), (x1, cy), (cx, y1), (x0, cy)]
    if shape == "star":
        return _star(cx, cy, min(w, h) / 2)
    if shape == "cross":
        t = w / 3
        return [
            (x0 + t, y0), (x1 - t, y0), (x1 - t, y0 + t), (x1, y0 + t), (x1, y1 - t), (x1 - t, y1 - t),
            (x1 - t, y1), (x0 + t, y1), (x0 + t, y1 - t), (x0, y1 - t), (x0, y0 + t), (x0 + t, y0 + t),
        ]  # fmt: skip
    raise ValueError(f"unknown shape {shape!r}")


def _texture_mask(size: tuple[int, int], texture: str, period: int = 4) -> Image.Image | None:
    """A 1-bit mask of where the texture's secondary colour goes (None for plain)."""
    if texture == "plain":
        return None
    w, h = size
    mask = Image.new("1", size, 0)
    d = ImageDraw.Draw(mask)
    if texture == "striped":
        for y in range(0, h, period):
            d.rectangle([0, y, w, y + period // 2 - 1], fill=1)
    elif texture == "dotted":
        for y in range(1, h, period):
            for x in range(1, w, period):
                d.point((x, y), fill=1)
    elif texture == "checked":
        for y in range(0, h, period):
            for x in range(0, w, period):
                if (x // period + y // period) % 2 == 0:
                    d.rectangle([x, y, x + period - 1, y + period - 1], fill=1)
    else:
        raise ValueError(f"unknown texture {texture!r}")
    return mask


@lru_cache(maxsize=512)
def paint_layer(size: tuple[int, int], color: str, texture: str = "plain") -> Image.Image:
    """A full-canvas fill of ``color`` with the texture overlaid in black or white (cached: never mutate)."""
    layer = Image.new("RGB", size, COLORS[color])
    mask = _texture_mask(size, texture)
    if mask is not None:
        second = (255, 255, 255) if color in ("black", "blue", "purple", "red", "green") else (20, 20, 20)
        layer.paste(Image.new("RGB", size, second), (0, 0), mask)
    return layer


def draw_shape(
    img: Image.Image,
    shape: str,
    color: str,
    box: tuple[float, float, float, float],
    texture: str = "plain",
) -> None:
    """Draw a (possibly textured) shape in place; textures overlay black or white on the fill."""
    shape_mask = Image.new("L", img.size, 0)
    d = ImageDraw.Draw(shape_mask)
    poly = shape_polygon(shape, box)
    if poly is None:
        d.ellipse(box, fill=255)
    else:
        d.polygon(poly, fill=255)
    img.paste(paint_layer(img.size, color, texture), (0, 0), shape_mask)


def garment_polygon(garment: str, box: tuple[float, float, float, float]) -> list[tuple[float, float]]:
    """A recognisable silhouette for each garment in ``box``."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    X = lambda f: x0 + f * w  # noqa: E731
    Y = lambda f: y0 + f * h  # noqa: E731
    if garment == "shirt":
        return [(X(.3), Y(0)), (X(.7), Y(0)), (X(1), Y(.3)), (X(.85), Y(.45)), (X(.75), Y(.35)), (X(.75), Y(1)),
                (X(.25), Y(1)), (X(.25), Y(.35)), (X(.15), Y(.45)), (X(0), Y(.3))]  # fmt: skip
    if garment == "pants":
        return [(X(.2), Y(0)), (X(.8), Y(0)), (X(.9), Y(1)), (X(.6), Y(1)), (X(.5), Y(.4)), (X(.4), Y(1)),
                (X(.1), Y(1))]  # fmt: skip
    if garment == "dress":
        return [(X(.38), Y(0)), (X(.62), Y(0)), (X(.65), Y(.35)), (X(1), Y(1)), (X(0), Y(1)), (X(.35), Y(.35))]
    if garment == "hat":
        return [(X(.3), Y(.3)), (X(.7), Y(.3)), (X(.75), Y(.7)), (X(1), Y(.7)), (X(1), Y(.85)), (X(0), Y(.85)),
                (X(0), Y(.7)), (X(.25), Y(.7))]  # fmt: skip
    if garment == "shoe":
        return [(X(.1), Y(.3)), (X(.4), Y(.3)), (X(.45), Y(.6)), (X(1), Y(.75)), (X(1), Y(.95)), (X(.1), Y(.95))]
    raise ValueError(f"unknown garment {garment!r}")


def draw_garment(
    img: Image.Image, garment: str, color: str, box: tuple[float, float, float, float], texture: str = "plain"
) -> None:
    m = Image.new("L", img.size, 0)
    ImageDraw.Draw(m).polygon(garment_polygon(garment, box), fill=255)
    img.paste(paint_layer(img.size, color, texture), (0, 0), m)


def position_box(position: str, size: int, scale: float = 0.45) -> tuple[float, float, float, float]:
    """Bounding box of an object at a named position (left/right/top/bottom/center)."""
    s = size * scale
    c = size / 2
    cx, cy = {
        "left": (size * 0.27, c),
        "right": (size * 0.73, c),
        "top": (c, size * 0.27),
        "bottom": (c, size * 0.73),
        "center": (c, c),
    }[position]
    return (cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2)


def grid_boxes(n: int, size: int, rng: random.Random, margin: int = 1) -> list[tuple[float, float, float, float]]:
    """``n`` non-overlapping boxes on a 3x3 grid (n <= 9), chosen by ``rng``."""
    cell = size / 3
    cells = rng.sample(range(9), n)
    pad = max(margin, cell * 0.1)
    return [
        ((c % 3) * cell + pad, (c // 3) * cell + pad, (c % 3 + 1) * cell - pad, (c // 3 + 1) * cell - pad)
        for c in cells
    ]


def degrade(img: Image.Image, kind: str, rng: random.Random, strength: float = 1.0) -> Image.Image:
    """Image-quality distortions shared by quality tasks: blur, noise, dark, bright, or clean."""
    if kind == "clean":
        return img.copy()
    if kind == "blur":
        return img.filter(ImageFilter.GaussianBlur(radius=1.2 * strength))
    if kind == "dark":
        return ImageEnhance.Brightness(img).enhance(max(0.15, 1 - 0.65 * strength))
    if kind == "bright":
        return ImageEnhance.Brightness(img).enhance(1 + 0.9 * strength)
    if kind == "noise":
        out = img.copy()
        px = out.load()
        amp = int(70 * strength)
        for y in range(out.size[1]):
            for x in range(out.size[0]):
                r, g, b = px[x, y]
                n = rng.randint(-amp, amp)
                px[x, y] = (min(255, max(0, r + n)), min(255, max(0, g + n)), min(255, max(0, b + n)))
        return out
    raise ValueError(f"unknown degradation {kind!r}")


def pick_distinct(rng: random.Random, pool: Sequence[str], k: int, exclude: Sequence[str] = ()) -> list[str]:
    """``k`` distinct items of ``pool`` not in ``exclude``, in a seeded order."""
    return rng.sample([p for p in pool if p not in exclude], k)


def cell_box(cell: int, size: int, grid: int = 2, pad: float = 0.1) -> tuple[float, float, float, float]:
    """Box of ``cell`` (row-major) in a ``grid`` x ``grid`` layout, inset by ``pad`` of a cell on each side."""
    c = size / grid
    x0, y0 = (cell % grid) * c, (cell // grid) * c
    p = c * pad
    return (x0 + p, y0 + p, x0 + c - p, y0 + c - p)


def centered_box(cx: float, cy: float, side: float) -> tuple[float, float, float, float]:
    """Square box of ``side`` centred on (cx, cy)."""
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
