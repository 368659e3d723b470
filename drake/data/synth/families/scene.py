"""SEED-Bench-2 analogues: instance questions about a shape scene, and knowledge questions about an icon.

The knowledge base is a fixed table over the shared icon library: every kind has two icons with different
places and every place two icons with different kinds, so a fact can only be recalled by recognising the
icon itself. Options are listed in their pool's order (``pool_ordered_options``).
"""

from __future__ import annotations

import random

from drake.data.synth import world
from drake.data.synth.base import IMAGE_TOKEN, Sample, SampleContext, letter_options, pool_ordered_options
from drake.data.synth.families.icons import bad_param, big_canvas, draw_icon, expect_images, sbox, shrink

# icon -> (kind, place)
KNOWLEDGE: dict[str, tuple[str, str]] = {
    "apple": ("food", "tree"), "egg": ("food", "house"),
    "fish": ("animal", "water"), "bird": ("animal", "tree"),
    "flower": ("plant", "garden"), "cactus": ("plant", "house"),
    "ball": ("toy", "garden"), "boat": ("toy", "water"),
}  # fmt: skip
KINDS = ("food", "animal", "plant", "toy")
PLACES = ("tree", "water", "garden", "house")
QUADRANTS = ("top left", "top right", "bottom left", "bottom right")
# four values per instance question, always listed in this order: the letter names the value
INSTANCE_OPTIONS = {
    "color": ("red", "green", "blue", "yellow"),
    "shape": ("circle", "square", "triangle", "star"),
    "position": QUADRANTS,
}
SEED_HEAD = "Answer the following question.\n"
SEED_TAIL = "\nAnswer with the option's letter from the given choices directly."
LETTERS = ("A", "B", "C", "D")


def seed_prompt(question: str, options: list[str], n_images: int = 1) -> str:
    """SEED-Bench-2 / Co-Instruct lettered prompt (real spelling)."""
    return f"{SEED_HEAD}{IMAGE_TOKEN * n_images}\n{question}\n{letter_options(options)}{SEED_TAIL}"


def _instance(ctx: SampleContext, rng: random.Random) -> Sample:
    qtype = rng.choice(("color", "shape", "position"))
    options, pos = pool_ordered_options(ctx, rng, INSTANCE_OPTIONS[qtype], 4)
    correct = options[pos]
    k = 1 if qtype == "color" else rng.randint(1, 3)  # the zoo finds a named shape poorly: colour asks of one
    shapes = rng.sample(world.SHAPES, k)
    colors = rng.sample(list(world.COLORS), k)
    quads = rng.sample(range(4), k)
    if qtype == "color":  # the asked object takes the answer; the others any other value
        colors = [correct, *rng.sample([c for c in world.COLORS if c != correct], k - 1)]
    elif qtype == "shape":
        shapes = [correct, *rng.sample([x for x in world.SHAPES if x != correct], k - 1)]
    else:
        quads = [QUADRANTS.index(correct), *rng.sample([q for q in range(4) if QUADRANTS[q] != correct], k - 1)]
    size = ctx.image_size
    img, _ = big_canvas(size, world.BACKGROUNDS[rng.choice(("gray", "beige"))])
    half, s = size / 2, size * 0.38
    for shp, col, q in zip(shapes, colors, quads):
        cx = (q % 2 + 0.5) * half + rng.uniform(-1.5, 1.5)
        cy = (q // 2 + 0.5) * half + rng.uniform(-1.5, 1.5)
        world.draw_shape(img, shp, col, sbox((cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2)))
    img = shrink(img)
    question = {
        "color": f"What is the colour of the {shapes[0]}?",
        "shape": f"What is the shape of the {colors[0]} object?",
        "position": f"Where is the {colors[0]} {shapes[0]}?",
    }[qtype]
    return _lettered(img, question, options, correct, {"label": f"{qtype}:{correct}"})


def _lettered(img, question: str, options: list[str], correct: str, meta: dict) -> Sample:
    answer = LETTERS[options.index(correct)]
    return Sample([img], seed_prompt(question, options), answer, list(LETTERS[: len(options)]), meta)


def _knowledge(ctx: SampleContext, rng: random.Random) -> Sample:
    attr = ctx.slot(2, "attr")
    options, pos = pool_ordered_options(ctx, rng, (KINDS, PLACES)[attr], 4)  # all four: the letter names the value
    value = options[pos]
    icon = rng.choice(sorted(i for i, f in KNOWLEDGE.items() if f[attr] == value))
    size = ctx.image_size
    img, d = big_canvas(size, world.BACKGROUNDS[rng.choice(("gray", "beige"))])
    s = size * rng.uniform(0.55, 0.8)
    x, y = rng.uniform(1, size - 1 - s), rng.uniform(1, size - 1 - s)
    draw_icon(d, icon, sbox((x, y, x + s, y + s)))
    img = shrink(img)
    question = ("What kind of thing is shown in the image?", "Where is the object in the image usually found?")[attr]
    return _lettered(img, question, options, value, {"label": f"{attr}:{value}", "icon": icon})


def scene_qa(ctx: SampleContext, mode: str = "instance") -> Sample:
    """SEED-Bench-2 analogue: ``instance`` (colour/shape/position of one object) or ``knowledge`` (recall a
    fact about the shown icon from the fixed knowledge base); four lettered options, letter answer."""
    expect_images(ctx, "scene_qa")
    rng = ctx.rng
    if mode == "instance":
        return _instance(ctx, rng)
    if mode == "knowledge":
        return _knowledge(ctx, rng)
    raise bad_param(ctx, "scene_qa", "mode", mode, ("instance", "knowledge"))
