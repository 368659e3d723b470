"""Fashion200K analogues: count outfits over five pictures; T/F statements on garment colour or texture.

Garments are drawn large (one per picture, two at most when counting) so silhouette, colour and texture stay
legible at 32 px. Statements are sampled before the pictures, so their wording never depends on the answer;
pictures the statement does not talk about are drawn from the same distribution whatever the answer.
"""

from __future__ import annotations

import random

from PIL import Image

from drake.data.synth.base import IMAGE_TOKEN, Sample, SampleContext, choice_list
from drake.data.synth.world import COLORS, GARMENTS, TEXTURES, canvas, draw_garment
from drake.errors import SpecError

TF = ["True", "False"]
NUM_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
COLOR_NAMES = tuple(COLORS)
LARGE_GARMENTS = ("shirt", "pants", "dress")
Garment = tuple[str, str, str]  # (garment, color, texture)
Box = tuple[float, float, float, float]


def check_param(family: str, name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise SpecError(f"synth family {family!r}: {name}={value!r} is unknown; use one of {', '.join(allowed)}")


def check_images(ctx: SampleContext, family: str, lo: int, hi: int | None = None) -> None:
    hi = lo if hi is None else hi
    if not lo <= ctx.n_images <= hi:
        want = str(lo) if lo == hi else f"{lo}-{hi}"
        raise SpecError(f"task {ctx.task!r}: family {family!r} draws {want} images, not {ctx.n_images}; fix 'images'")


def texture_ok(color: str, texture: str) -> bool:
    """Stripes or checks on white/black read as either colour, so those pairs are never drawn."""
    return not (color in ("white", "black") and texture in ("striped", "checked"))


def ok_textures(*colors: str) -> list[str]:
    return [t for t in TEXTURES if all(texture_ok(c, t) for c in colors)]


def ok_colors(*textures: str) -> list[str]:
    return [c for c in COLOR_NAMES if all(texture_ok(c, t) for t in textures)]


def random_garment(rng: random.Random, garment: str | None = None, color: str | None = None,
                   texture: str | None = None) -> Garment:
    """A garment with the given fields fixed and the rest random (never an ambiguous colour/texture pair)."""
    g = garment or rng.choice(GARMENTS)
    if color is None:
        color = rng.choice(ok_colors(texture) if texture else COLOR_NAMES)
    if texture is None:
        texture = rng.choice(ok_textures(color))
    return (g, color, texture)


def jitter_box(rng: random.Random, size: int, box: Box = (0.13, 0.13, 0.87, 0.87), amount: float = 0.06) -> Box:
    """A fractional box scaled to ``size`` and shifted by up to ``amount`` of the image."""
    dx, dy = rng.uniform(-amount, amount) * size, rng.uniform(-amount, amount) * size
    return (box[0] * size + dx, box[1] * size + dy, box[2] * size + dx, box[3] * size + dy)


def garment_image(size: int, items: list[tuple[Garment, Box]]) -> Image.Image:
    img = canvas(size)
    for (g, color, texture), box in items:
        draw_garment(img, g, color, box, texture)
    return img


# ------------------------------------------------------------------------------------------- counting
_PAIR_BOXES: tuple[Box, Box] = ((0.02, 0.18, 0.49, 0.82), (0.51, 0.18, 0.98, 0.82))


def _outfit_items(rng: random.Random, n: int, lo: int, hi: int) -> list[str]:
    """Garment names making exactly ``n`` outfits (dress, or shirt + pants), ``lo``-``hi`` items in all."""
    dresses = rng.randint(max(0, 2 * n - hi), n)
    items = ["dress"] * dresses + ["shirt", "pants"] * (n - dresses)
    total = rng.randint(max(lo, len(items)), hi)
    spare = total - len(items)
    unmatched = rng.randint(0, min(spare, 2))  # lone shirts or lone pants never complete an outfit
    items += [rng.choice(("shirt", "pants"))] * unmatched
    items += [rng.choice(("hat", "shoe")) for _ in range(spare - unmatched)]
    rng.shuffle(items)
    return items


def count_outfits(names: list[str]) -> int:
    return names.count("dress") + min(names.count("shirt"), names.count("pants"))


def count_across(ctx: SampleContext) -> Sample:
    """How many outfits do the garments of all pictures make (DEMON Fashion200K counting, choices 0-6)."""
    check_images(ctx, "count_across", 3, 10)
    rng, size, k = ctx.rng, ctx.image_size, ctx.n_images
    choices = [str(i) for i in range(7)]
    n = ctx.slot(len(choices))
    names = _outfit_items(rng, n, k, 2 * k)
    doubles = set(rng.sample(range(k), max(0, len(names) - k)))
    images, it = [], iter(names)
    for i in range(k):
        boxes = [jitter_box(rng, size, b, 0.02) for b in _PAIR_BOXES] if i in doubles else [jitter_box(rng, size)]
        images.append(garment_image(size, [(random_garment(rng, next(it)), b) for b in boxes]))
    answer = str(count_outfits(names))
    assert answer == choices[n], "outfit construction is wrong"
    word = NUM_WORDS[k]
    prompt = (
        f"a dress or a shirt with pants makes one suit. how many suits can the following {word} pictures make? "
        f"you must choose your answer from the choice list. {IMAGE_TOKEN * k}"
        f"Choice List:[{','.join(repr(c) for c in choices)}] Your answer is:\n{choice_list(choices)}"
    )
    return Sample(images, prompt, answer, choices, {"garments": names})


# ------------------------------------------------------------------------------------------- statements
# "all" is the statement the tiny zoo learns in the calibration budget (92% alone, "one" 50% and "none" 52%:
# benchmarks/learnability_probes.py), so "one" and "none" are the hard part: 3 statements in 5 are "all"
_TEMPLATES = ("all", "all", "all", "one", "none")


def multi_statement(ctx: SampleContext, attribute: str = "color", subject: str = "garment",
                    templates: tuple[str, ...] = _TEMPLATES) -> Sample:
    """T/F statement about the colour or texture of the garments in N pictures.

    Every template checks the named value against the pictures. A "same texture in image i and image j"
    template was dropped with the hard negatives of "one" (the value shown in another picture): the tiny zoo
    learns no comparison between two pictures in the calibration budget.
    """
    check_param("multi_statement", "attribute", attribute, ("color", "texture"))
    check_param("multi_statement", "subject", subject, ("garment",))
    for t in templates:
        check_param("multi_statement", "templates", t, ("all", "one", "none"))
    check_images(ctx, "multi_statement", 2, 8)
    rng, n, truth = ctx.rng, ctx.n_images, ctx.slot(2) == 0
    values = COLOR_NAMES if attribute == "color" else TEXTURES
    template = rng.choice(list(templates))
    v = rng.choice(values)
    k = rng.randrange(n)
    # a texture needs area to show at 32 px: hats and shoes are only asked about for their colour
    garments = [rng.choice(GARMENTS if attribute == "color" else LARGE_GARMENTS) for _ in range(n)]
    others = [x for x in values if x != v]
    vals = [rng.choice(values) for _ in range(n)]
    if template == "one":  # only picture k decides; v may be shown elsewhere, whatever the answer
        vals[k] = v if truth else rng.choice(others)
        text = f"the {garments[k]} in image {k + 1} is {v}"
    elif template == "all":
        vals = [v] * n
        if not truth:
            for i in rng.sample(range(n), rng.randint(1, n - 1)):
                vals[i] = rng.choice(others)
        text = f"all the garments are {v}"
    else:
        vals = [rng.choice(others) for _ in range(n)]
        if not truth:
            vals[k] = v
        text = f"none of the garments is {v}"
    items = [
        random_garment(rng, g, color=x) if attribute == "color" else random_garment(rng, g, texture=x)
        for g, x in zip(garments, vals)
    ]
    images = [garment_image(ctx.image_size, [(item, jitter_box(rng, ctx.image_size))]) for item in items]
    prompt = (f"is the statement true for the {NUM_WORDS[n]} images? {IMAGE_TOKEN * n}"
              f"Statement: {text}.\n{choice_list(TF)}")
    return Sample(images, prompt, TF[0] if truth else TF[1], TF, {"template": template, "items": items})
