"""The public split: captions and generic multiple-choice QA about the shared visual world.

This is what the tiny zoo models are pre-trained on (``drake pretrain``), the analogue of LLaVA's public
instruction data. It describes the same world as the tasks (world.py, and the icon library) but never
draws from a task: no task family's sample generator is called here and the generator keys (task
``"public"``) differ from every task's. Version 2 added the generic skills that version 1 lacked and
without which no task could be learned by a LoRA on top (measured: every binary task stayed at 50%):
true/false statements, relations between two objects and icon naming (a lettered-options format was tried
and dropped: it diluted the 900-step budget, held-out accuracy of tiny-llama-s fell from 0.61 to 0.47).
Question kinds are balanced by ``ctx.slot`` and the correct option's position by another slot, so a
held-out slice of any multiple of ``len(SCHEDULE)`` samples has every kind equally often.
"""

from __future__ import annotations

import random

from PIL import Image

from drake.data.synth.base import IMAGE_TOKEN, Sample, SampleContext, choice_list, place
from drake.data.synth.families.icons import ICONS, icon_scene
from drake.data.synth.world import (
    BACKGROUNDS,
    COLORS,
    GARMENTS,
    SHAPES,
    TEXTURES,
    canvas,
    degrade,
    draw_garment,
    draw_shape,
    grid_boxes,
    pick_distinct,
    position_box,
)

PUBLIC_TASK = "public"
# Bump when the text or images of the public split change: it is part of every zoo cache key.
PUBLIC_VERSION = 2

QTYPES = ("color", "shape", "texture", "garment", "position", "count", "is_there", "same_color", "quality",
          "statement", "relation", "icon")
# Captions are a quarter of the mix: dense supervision that names every attribute at once.
SCHEDULE = ("caption", "caption", "caption", *QTYPES)
QUALITY_WORDS = {"clean": "clear", "blur": "blurry", "noise": "noisy", "dark": "dark", "bright": "bright"}
POSITIONS4 = ("left", "right", "top", "bottom")
RELATIONS = ("left", "right", "above", "below")
_REL_STEP = {"left": (-1, 0), "right": (1, 0), "above": (0, -1), "below": (0, 1)}
TF = ("True", "False")
ORDINALS = ("first", "second")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _bg(rng: random.Random) -> str:
    return rng.choice(sorted(BACKGROUNDS))


def _color(rng: random.Random, exclude: tuple[str, ...] = ()) -> str:
    return rng.choice([c for c in COLORS if c not in exclude])


def _mc(
    question: str,
    correct: str,
    pool: tuple[str, ...] | list[str],
    ctx: SampleContext,
    rng: random.Random,
    images: list[Image.Image],
    qtype: str,
    k: int = 4,
) -> Sample:
    """A multiple-choice sample with ``k`` options, the correct one at a balanced position."""
    k = min(k, len(pool))
    distractors = pick_distinct(rng, pool, k - 1, exclude=(correct,))
    options = place(correct, distractors, ctx.slot(k, salt=f"answer-{qtype}"))
    head = _image_head(len(images))
    prompt = f"{head}\n{question}\n{choice_list(options)}"
    return Sample(images, prompt, correct, options, meta={"qtype": qtype})


def _image_head(n: int) -> str:
    if n == 1:
        return IMAGE_TOKEN
    return " ".join(f"Image {i + 1}: {IMAGE_TOKEN}" for i in range(n))


def _single(
    rng: random.Random,
    size: int,
    *,
    shape: str | None = None,
    color: str | None = None,
    texture: str = "plain",
    scale: float = 0.6,
    position: str = "center",
) -> tuple[Image.Image, str, str]:
    img = canvas(size, _bg(rng))
    shape = shape or rng.choice(SHAPES)
    color = color or _color(rng)
    draw_shape(img, shape, color, position_box(position, size, scale), texture)
    return img, shape, color


def _maybe_two(ctx: SampleContext, rng: random.Random, make) -> tuple[list[Image.Image], str, object]:
    """One image, or (a third of the time) two images with the question about one of them."""
    if rng.random() < 1 / 3:
        which = rng.randrange(2)
        pair = [make(), make()]
        return [p[0] for p in pair], f" in the {ORDINALS[which]} image", pair[which]
    only = make()
    return [only[0]], "", only


def _caption(ctx: SampleContext, rng: random.Random) -> Sample:
    size = ctx.image_size
    img = canvas(size, _bg(rng))
    n = rng.choice((1, 1, 2))
    positions = (
        rng.sample(("left", "right"), 2)
        if n == 2
        else [rng.choice(("left", "right", "top", "bottom", "center"))]
    )
    parts = []
    for pos in positions:
        shape, color, texture = rng.choice(SHAPES), _color(rng), rng.choice(TEXTURES)
        draw_shape(img, shape, color, position_box(pos, size, 0.45 if n == 2 else 0.6), texture)
        words = [color] if texture == "plain" else [color, texture]
        phrase = f"{_article(words[0])} {' '.join(words)} {shape}"
        parts.append(f"{phrase} on the {pos}" if pos != "center" else phrase)
    answer = " and ".join(parts) + "."
    return Sample([img], f"{IMAGE_TOKEN}\nDescribe the image.", answer, None, meta={"qtype": "caption"})


def _color_q(ctx: SampleContext, rng: random.Random) -> Sample:
    images, where, (_, shape, color) = _maybe_two(ctx, rng, lambda: _single(rng, ctx.image_size))
    return _mc(f"What color is the {shape}{where}?", color, list(COLORS), ctx, rng, images, "color")


def _shape_q(ctx: SampleContext, rng: random.Random) -> Sample:
    images, where, (_, shape, _c) = _maybe_two(ctx, rng, lambda: _single(rng, ctx.image_size, scale=0.7))
    return _mc(f"What shape is shown{where}?", shape, SHAPES, ctx, rng, images, "shape")


def _texture_q(ctx: SampleContext, rng: random.Random) -> Sample:
    texture = rng.choice(TEXTURES)
    img, shape, _ = _single(
        rng, ctx.image_size, shape=rng.choice(("circle", "square", "diamond")), texture=texture, scale=0.8
    )
    return _mc(f"What texture does the {shape} have?", texture, TEXTURES, ctx, rng, [img], "texture")


def _garment_q(ctx: SampleContext, rng: random.Random) -> Sample:
    img = canvas(ctx.image_size, _bg(rng))
    garment = rng.choice(GARMENTS)
    draw_garment(img, garment, _color(rng), position_box("center", ctx.image_size, 0.75))
    return _mc("Which garment is shown?", garment, GARMENTS, ctx, rng, [img], "garment")


def _position_q(ctx: SampleContext, rng: random.Random) -> Sample:
    size = ctx.image_size
    img = canvas(size, _bg(rng))
    pos = rng.choice(POSITIONS4)
    shape, color = rng.choice(SHAPES), _color(rng)
    draw_shape(img, shape, color, position_box(pos, size, 0.42))
    if rng.random() < 0.5:  # a distractor of another colour on the opposite side
        other = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}[pos]
        draw_shape(img, rng.choice(SHAPES), _color(rng, exclude=(color,)), position_box(other, size, 0.42))
    return _mc(f"Where is the {color} {shape}?", pos, POSITIONS4, ctx, rng, [img], "position")


def _count_q(ctx: SampleContext, rng: random.Random) -> Sample:
    size = ctx.image_size
    img = canvas(size, _bg(rng))
    n = 1 + ctx.slot(4, salt="count")
    color = _color(rng)
    for box in grid_boxes(n, size, rng):
        draw_shape(img, rng.choice(SHAPES), color, box)
    return _mc("How many shapes are there?", str(n), ("1", "2", "3", "4"), ctx, rng, [img], "count")


def _is_there_q(ctx: SampleContext, rng: random.Random) -> Sample:
    size = ctx.image_size
    img = canvas(size, _bg(rng))
    objs = []
    for pos in rng.sample(("left", "right"), 2):
        obj = (rng.choice(SHAPES), _color(rng, exclude=tuple(c for _, c in objs)))
        draw_shape(img, obj[0], obj[1], position_box(pos, size, 0.42))
        objs.append(obj)
    present = ctx.slot(2, salt="present") == 0
    if present:
        shape, color = rng.choice(objs)
    else:  # absent: a colour that is not in the image, so the answer needs the colour of each object
        shape, color = rng.choice(objs)[0], _color(rng, exclude=tuple(c for _, c in objs))
    return _mc(
        f"Is there {_article(color)} {color} {shape}?",
        "yes" if present else "no",
        ("yes", "no"),
        ctx,
        rng,
        [img],
        "is_there",
        k=2,
    )


def _same_color_q(ctx: SampleContext, rng: random.Random) -> Sample:
    same = ctx.slot(2, salt="same") == 0
    first = _color(rng)
    second = first if same else _color(rng, exclude=(first,))
    images = [_single(rng, ctx.image_size, color=c)[0] for c in (first, second)]
    return _mc(
        "Do the shapes in the two images have the same color?",
        "yes" if same else "no",
        ("yes", "no"),
        ctx,
        rng,
        images,
        "same_color",
        k=2,
    )


def _quality_q(ctx: SampleContext, rng: random.Random) -> Sample:
    kind = sorted(QUALITY_WORDS)[ctx.slot(len(QUALITY_WORDS), salt="quality")]
    img, _, _ = _single(rng, ctx.image_size, texture=rng.choice(TEXTURES), scale=0.7)
    img = degrade(img, kind, rng)
    return _mc(
        "How is the quality of the image?",
        QUALITY_WORDS[kind],
        tuple(QUALITY_WORDS.values()),
        ctx,
        rng,
        [img],
        "quality",
    )


def _two_objects(rng: random.Random, size: int, relation: str) -> tuple[Image.Image, tuple[str, str], tuple[str, str]]:
    """Two objects, the first ``relation`` (left/right/above/below) of the second."""
    img = canvas(size, _bg(rng))
    (sa, sb), (ca, cb) = rng.sample(SHAPES, 2), rng.sample(list(COLORS), 2)
    ux, uy = _REL_STEP[relation]
    gap, cross = rng.uniform(0.4, 0.5), rng.uniform(0.3, 0.7)
    a, b = 0.5 + gap / 2 * (ux + uy), 0.5 - gap / 2 * (ux + uy)
    (pa, pb) = ((a, cross), (b, cross)) if ux else ((cross, a), (cross, b))
    side = 0.34 * size
    for (px, py), shape, color in ((pa, sa, ca), (pb, sb, cb)):
        draw_shape(img, shape, color, (px * size - side / 2, py * size - side / 2, px * size + side / 2, py * size + side / 2))
    return img, (sa, ca), (sb, cb)


def _statement_q(ctx: SampleContext, rng: random.Random) -> Sample:
    """A true/false statement about one image's object (colour, shape or position)."""
    truth = ctx.slot(2, salt="truth") == 0
    about = ("color", "shape", "position")[ctx.slot(3, salt="statement-about")]
    pos = rng.choice(POSITIONS4)
    img, shape, color = _single(rng, ctx.image_size, scale=0.45, position=pos)
    if about == "color":
        said = color if truth else _color(rng, exclude=(color,))
        text = f"the {shape} is {said}"
    elif about == "shape":
        said = shape if truth else rng.choice([s for s in SHAPES if s != shape])
        text = f"the shape is {_article(said)} {said}"
    else:
        said = pos if truth else rng.choice([p for p in POSITIONS4 if p != pos])
        text = f"the {color} {shape} is on the {said}"
    prompt = f"{IMAGE_TOKEN}\nIs the statement true for the image?\nStatement: {text}.\n{choice_list(TF)}"
    return Sample([img], prompt, TF[0] if truth else TF[1], list(TF), meta={"qtype": "statement"})


def _relation_q(ctx: SampleContext, rng: random.Random) -> Sample:
    relation = RELATIONS[ctx.slot(4, salt="relation")]
    img, (sa, ca), (sb, cb) = _two_objects(rng, ctx.image_size, relation)
    question = f"Where is the {ca} {sa} relative to the {cb} {sb}?"
    return _mc(question, relation, RELATIONS, ctx, rng, [img], "relation")


def _icon_q(ctx: SampleContext, rng: random.Random) -> Sample:
    names = sorted(ICONS)
    name = names[ctx.slot(len(names), salt="icon")]
    img = icon_scene(ctx.image_size, [name], rng)
    return _mc("Which object is shown?", name, names, ctx, rng, [img], "icon")


_MAKERS = {
    "caption": _caption,
    "color": _color_q,
    "shape": _shape_q,
    "texture": _texture_q,
    "garment": _garment_q,
    "position": _position_q,
    "count": _count_q,
    "is_there": _is_there_q,
    "same_color": _same_color_q,
    "quality": _quality_q,
    "statement": _statement_q,
    "relation": _relation_q,
    "icon": _icon_q,
}


def public_sample(ctx: SampleContext) -> Sample:
    """One public sample; ``meta["qtype"]`` names its kind (``caption`` or one of QTYPES)."""
    qtype = SCHEDULE[ctx.slot(len(SCHEDULE), salt="qtype")]
    return _MAKERS[qtype](ctx, ctx.rng)


#: the "language" part of pre-training: every vocabulary word is a target at least a few times, so no
#: word's (tied, later frozen) embedding collapses onto the others. Version-1 models had 470 of 546 output
#: embeddings within cosine 0.9 of each other (every word never seen as a target), which made "True" and
#: "False" indistinguishable to any adapter trained later.
WORD_PROMPT = f"{IMAGE_TOKEN}\nRepeat the word: "


def word_sample(ctx: SampleContext, word: str) -> Sample:
    """Copy ``word`` (drawn from the tokenizer's vocabulary by the pre-training loop) next to a plain image."""
    return Sample([canvas(ctx.image_size, _bg(ctx.rng))], WORD_PROMPT + word, word, None, meta={"qtype": "word"})


def public_context(split: str, index: int, seed: int = 0, image_size: int = 32) -> SampleContext:
    """The context of public sample ``index`` (splits: ``train`` for pre-training, ``test`` held out)."""
    return SampleContext(PUBLIC_TASK, split, index, seed, image_size, 2)
