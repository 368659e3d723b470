"""Editing analogues: FashionIQ / CIRR relative captions, MagicBrush direction, HQ-Edit instruction choice.

One edit model serves CIRR, MagicBrush and HQ-Edit: a 2x2 scene of distinct shapes and colours and four edit
kinds (recolour, reshape, add, remove), each with an exact reverse. Texts are drawn before the label, and the
reverse of an edit is as likely as the edit itself, so the wording alone never tells the answer; FashionIQ uses
the garments and attributes of the fashion tasks.
"""

from __future__ import annotations

import random

from drake.data.synth.base import IMAGE_TOKEN, Sample, SampleContext, choice_list, image_tokens, place
from drake.data.synth.families.compare import COLOR_NAMES, Obj, an, random_objs, scene_image
from drake.data.synth.families.fashion import (
    TF,
    check_images,
    check_param,
    garment_image,
    jitter_box,
)
from drake.data.synth.world import GARMENTS, SHAPES

Edit = tuple[str, Obj, str]  # (kind, object it acts on, new colour/shape; "" for add/remove)
KINDS = ("color", "shape", "add", "remove")


def edit_text(e: Edit) -> str:
    kind, (shape, color, _), new = e
    if kind == "color":
        return f"make the {shape} {new}"
    if kind == "shape":
        return f"turn the {color} {shape} into {an(new)} {new}"
    if kind == "add":
        return f"add {an(color)} {color} {shape}"
    return f"remove the {color} {shape}"


def apply_edit(scene: list[Obj], e: Edit) -> list[Obj]:
    kind, obj, new = e
    out = [o for o in scene if o != obj]
    if kind == "add":
        out.append(obj)
    if kind == "color":
        out.append((obj[0], new, obj[2]))
    elif kind == "shape":
        out.append((new, obj[1], obj[2]))
    return sorted(out, key=lambda o: o[2])


def reverse_edit(e: Edit) -> Edit:
    kind, (shape, color, cell), new = e
    if kind == "color":
        return ("color", (shape, new, cell), color)
    if kind == "shape":
        return ("shape", (new, color, cell), shape)
    return ("remove" if kind == "add" else "add", (shape, color, cell), "")


def kinds_for(scene: list[Obj]) -> tuple[str, ...]:
    """Edits allowed on a scene; add needs at most 2 objects and remove at least 2, so both stay symmetric."""
    return tuple(k for k in KINDS if (k != "add" or len(scene) <= 2) and (k != "remove" or len(scene) >= 2))


def random_edit(rng: random.Random, scene: list[Obj], kind: str) -> Edit:
    shapes, colors = {o[0] for o in scene}, {o[1] for o in scene}
    if kind == "add":
        cell = rng.choice([c for c in range(4) if c not in {o[2] for o in scene}])
        shape = rng.choice([s for s in SHAPES if s not in shapes])
        return ("add", (shape, rng.choice([c for c in COLOR_NAMES if c not in colors]), cell), "")
    obj = rng.choice(scene)
    if kind == "color":
        return ("color", obj, rng.choice([c for c in COLOR_NAMES if c not in colors]))
    if kind == "shape":
        return ("shape", obj, rng.choice([s for s in SHAPES if s not in shapes]))
    return ("remove", obj, "")


def edit_pair(rng: random.Random) -> tuple[list[Obj], Edit]:
    """A scene and an edit on it; add starts from 1-2 objects and remove from 2-3, mirroring each other."""
    kind = rng.choice(KINDS)
    n = rng.choice({"add": (1, 2), "remove": (2, 3)}.get(kind, (1, 2, 3)))
    scene = sorted(random_objs(rng, n), key=lambda o: o[2])
    return scene, random_edit(rng, scene, kind)


def other_edit(rng: random.Random, scene: list[Obj], taken: set[str]) -> Edit:
    """Another edit on the same scene whose text and whose reverse's text are not in ``taken``."""
    while True:
        f = random_edit(rng, scene, rng.choice(kinds_for(scene)))
        if edit_text(f) not in taken and edit_text(reverse_edit(f)) not in taken:
            return f


# ------------------------------------------------------------------------------------------- FashionIQ / CIRR
def _fashion_caption(ctx: SampleContext, rng: random.Random, truth: bool) -> Sample:
    """The description says how the query garment's colour differs from the reference one's.

    Seven false pairs in ten show no change at all, the others a wrong new colour; garments are plain (the
    colour is the whole fill). Calibrated over 3 seeds: 53 with textured garments and half the false pairs
    unchanged, 58 plain, 67 plain with 7 in 10. Texture pairs and pairs showing both named colours in the wrong
    roles (reversed, wrong old colour) were dropped earlier: with them the task stayed at chance.
    """
    old, new = rng.sample(COLOR_NAMES, 2)
    text = f"is {new} instead of {old}"
    case = "true" if truth else "unchanged" if rng.random() < 0.7 else "wrong_new"
    third = rng.choice([v for v in COLOR_NAMES if v not in (old, new)])
    ref, query = {"true": (old, new), "wrong_new": (old, third), "unchanged": (old, old)}[case]
    garment = rng.choice(GARMENTS)
    items = [(garment, query, "plain"), (garment, ref, "plain")]
    size = ctx.image_size
    images = [garment_image(size, [(item, jitter_box(rng, size))]) for item in items]
    prompt = (f"Query Image:{IMAGE_TOKEN} Reference Image:{IMAGE_TOKEN} Description: {text}\n"
              f"does the description say how the query garment differs from the reference garment?\n"
              f"{choice_list(TF)}")
    return Sample(images, prompt, TF[0] if truth else TF[1], TF, {"case": case, "items": items})


def _scene_caption(ctx: SampleContext, rng: random.Random, truth: bool) -> Sample:
    """The caption says how image 1 was changed into image 2: one object, recoloured.

    As for FashionIQ, half the false pairs show no change and the others another colour. Scenes of 1-3
    objects with recolour/reshape/add/remove captions and reversed pairs stayed at chance after calibration
    (measured), whatever mix of them was tried.
    """
    scene = random_objs(rng, 1)
    e = random_edit(rng, scene, "color")
    text = edit_text(e)
    case = "true" if truth else rng.choice(("unchanged", "other"))
    if case == "true":
        first, second = scene, apply_edit(scene, e)
    elif case == "unchanged":
        first = second = scene
    else:
        first, second = scene, apply_edit(scene, other_edit(rng, scene, {text}))
    size = ctx.image_size
    prompt = (f"{image_tokens(2, ['Image 1', 'Image 2'])}\nCaption: {text}\n"
              f"does the caption describe the change from image 1 to image 2?\n{choice_list(TF)}")
    return Sample([scene_image(first, size), scene_image(second, size)], prompt, TF[0] if truth else TF[1], TF,
                  {"case": case, "edit": e})


def edit_caption(ctx: SampleContext, subject: str = "shape") -> Sample:
    """T/F: does a relative caption describe the change between the two images (garments or shape scenes)?"""
    check_param("edit_caption", "subject", subject, ("garment", "shape"))
    check_images(ctx, "edit_caption", 2)
    rng, truth = ctx.rng, ctx.slot(2) == 0
    return (_fashion_caption if subject == "garment" else _scene_caption)(ctx, rng, truth)


# ------------------------------------------------------------------------------------------- MagicBrush / HQ-Edit
DIRECTIONS = ["A to B", "B to A"]


def edit_direction(ctx: SampleContext) -> Sample:
    """MagicBrush: does the instruction turn image A into B, or B into A?"""
    check_images(ctx, "edit_direction", 2)
    rng, slot = ctx.rng, ctx.slot(2)
    scene, e = edit_pair(rng)
    pair = [scene, apply_edit(scene, e)]
    if slot == 1:
        pair.reverse()
    size = ctx.image_size
    prompt = (f"{image_tokens(2, ['Image A', 'Image B'])}\nInstruction: {edit_text(e)}\n"
              f"does the instruction change A to B or B to A?\nChoice list:[{', '.join(DIRECTIONS)}].")
    return Sample([scene_image(s, size) for s in pair], prompt, DIRECTIONS[slot], list(DIRECTIONS), {"edit": e})


def edit_instruction(ctx: SampleContext) -> Sample:
    """HQ-Edit: which of four instructions turns image 1 into image 2?

    The options are the edit, its reverse, and another edit on the same scene with its reverse, so every
    option has a look-alike and the text alone gives 1 in 4.
    """
    check_images(ctx, "edit_instruction", 2)
    rng, slot = ctx.rng, ctx.slot(4)
    scene, e = edit_pair(rng)
    rev = reverse_edit(e)
    f = other_edit(rng, scene, {edit_text(e), edit_text(rev)})
    distractors = [edit_text(x) for x in (rev, f, reverse_edit(f))]
    rng.shuffle(distractors)
    options = place(edit_text(e), distractors, slot)
    size = ctx.image_size
    prompt = (f"{image_tokens(2, ['Image 1', 'Image 2'])}\nwhich instruction turns image 1 into image 2?\n"
              f"{choice_list(options)}")
    return Sample([scene_image(scene, size), scene_image(apply_edit(scene, e), size)], prompt, edit_text(e),
                  options, {"edit": e})
