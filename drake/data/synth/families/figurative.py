"""Figurative language (IRFL analogue): fixed idiom and metaphor lexicons over the bongard object concepts.

Each phrase stands for one concept of ``bongard.OBJECT_CONCEPTS`` ("seeing red" -> everything is red), so
clients 3-5 share visual concepts; idioms and metaphors name the same 14 concepts with different words.
"""

from __future__ import annotations

import random

from PIL import Image

from drake.data.synth.base import Sample, SampleContext, choice_list, image_tokens
from drake.data.synth.families.bongard import CONCEPTS, IMAGE_LABELS, Scene, draw_scene, sample_scene
from drake.data.synth.world import COLORS, GARMENTS, TEXTURES, canvas, draw_garment
from drake.errors import SpecError

IDIOMS: dict[str, str] = {
    "seeing red": "color:red",
    "green with envy": "color:green",
    "once in a blue moon": "color:blue",
    "mellow yellow": "color:yellow",
    "a star is born": "shape:star",
    "going in circles": "shape:circle",
    "back to square one": "shape:square",
    "a love triangle": "shape:triangle",
    "a diamond in the rough": "shape:diamond",
    "earn your stripes": "texture:striped",
    "a checkered past": "texture:checked",
    "a lone wolf": "count:1",
    "two peas in a pod": "count:2",
    "the third wheel": "count:3",
}
METAPHORS: dict[str, str] = {
    "anger is a fire": "color:red",
    "envy is a sea of grass": "color:green",
    "sadness is the deep sea": "color:blue",
    "joy is the morning sun": "color:yellow",
    "hope is a light in the night sky": "shape:star",
    "time is a wheel": "shape:circle",
    "rules are a box": "shape:square",
    "the mountain is an arrow": "shape:triangle",
    "her smile is a jewel": "shape:diamond",
    "the road is a zebra": "texture:striped",
    "the town square is a chess board": "texture:checked",
    "he is an island": "count:1",
    "they are a pair of shoes": "count:2",
    "the family is a crowd of three": "count:3",
}
LEXICONS = {"idiom": IDIOMS, "metaphor": METAPHORS}
_COUNTS = {"verify": 1, "select_image": 4, "select_phrase": 1}
_MAX_TRIES = 30
#: share of select_image items whose three distractors are unrelated black-and-white pictures (IRFL's
#: "none" distractors), the rest show other phrases' concepts. Picking the image a phrase names among four
#: is a pointer that depends on the question, which the zoo does not learn (probe pointer4_varied: 25 at
#: two seeds of three, and irfl_1 stayed at 25); it does learn a pointer to a fixed colour feature
#: (pointer4_fixed: 100), so most items ask it to find the one colour picture and the rest stay hard.
#: Calibrated (irfl_1, chance 25): with every item unrelated, garments on beige 26 (the tower ignores the
#: ground) and the same in black and white 58 (seed 0); at 0.7, 40 and irfl_2 39 (3 seeds).
UNRELATED_SHARE = 0.7


def _unrelated_picture(rng: random.Random, size: int) -> Image.Image:
    """A picture that depicts no phrase: one garment on a beige ground, in black and white."""
    img = canvas(size, "beige")
    side = rng.uniform(0.55, 0.8)
    x0, y0 = rng.uniform(0.05, 0.95 - side), rng.uniform(0.05, 0.95 - side)
    box = (round(x0 * size), round(y0 * size), round((x0 + side) * size), round((y0 + side) * size))
    draw_garment(img, rng.choice(GARMENTS), rng.choice(tuple(COLORS)), box, rng.choice(TEXTURES))
    return img.convert("L").convert("RGB")


def _failing_scene(rng: random.Random, source: str, target: str) -> Scene:
    """A positive of concept ``source`` on which concept ``target`` is false."""
    scene = sample_scene(rng, CONCEPTS[source], True)
    for _ in range(_MAX_TRIES):
        if not CONCEPTS[target].holds(scene):
            break
        scene = sample_scene(rng, CONCEPTS[source], True)
    else:
        scene = sample_scene(rng, CONCEPTS[target], False)
    return scene


def figurative(ctx: SampleContext, mode: str = "verify", kind: str = "idiom") -> Sample:
    """Phrase <-> visual concept: ``verify`` (T/F), ``select_image`` (Image A-D), ``select_phrase``."""
    if kind not in LEXICONS:
        raise SpecError(f"{ctx.task}: figurative kind {kind!r} unknown; use one of {', '.join(LEXICONS)}")
    if mode not in _COUNTS:
        raise SpecError(f"{ctx.task}: figurative mode {mode!r} unknown; use one of {', '.join(_COUNTS)}")
    if ctx.n_images != _COUNTS[mode]:
        raise SpecError(
            f"{ctx.task}: figurative mode {mode!r} makes {_COUNTS[mode]} images, tasks.yaml says {ctx.n_images}"
        )
    rng, lexicon = ctx.rng, LEXICONS[kind]
    unrelated = False
    phrases = list(lexicon)
    phrase = rng.choice(phrases)
    if mode == "verify" and rng.random() < 0.7:
        # seven statements in ten name a colour or texture phrase: the concepts the zoo sees (a task of
        # uniform phrases stayed at chance after calibration; half of them gave 58 +- 4 over 3 seeds, 68 with 7 in 10)
        phrase = rng.choice([p for p in phrases if lexicon[p].split(":")[0] in ("color", "texture")])
    target = CONCEPTS[lexicon[phrase]]
    if mode == "verify":  # a false pair shows another phrase's concept (a near miss is beyond the zoo)
        label = ctx.slot(2)
        other = rng.choice([p for p in phrases if lexicon[p] != target.key])
        scenes = [sample_scene(rng, target, True) if label == 0 else _failing_scene(rng, lexicon[other], target.key)]
        choices = ["True", "False"]
        prompt = (
            f'{image_tokens(1)}\nStatement: the image depicts the {kind} "{phrase}".\n{choice_list(choices)}'
        )
        answer = choices[label]
    elif mode == "select_image":
        slot = ctx.slot(4)
        others = rng.sample([p for p in phrases if lexicon[p] != target.key], 3)
        scenes = [_failing_scene(rng, lexicon[p], target.key) for p in others]
        scenes.insert(slot, sample_scene(rng, target, True))
        unrelated = rng.random() < UNRELATED_SHARE
        choices = list(IMAGE_LABELS)
        prompt = f'{image_tokens(4, IMAGE_LABELS)}\nWhich image depicts the {kind} "{phrase}"?\n{choice_list(choices)}'
        answer = choices[slot]
    else:
        choices = rng.sample([p for p in phrases if p != phrase], 3)  # drawn before the image: no text cue
        rivals = [CONCEPTS[lexicon[p]] for p in choices]
        for _ in range(_MAX_TRIES):
            scene = sample_scene(rng, target, True)
            if not any(c.holds(scene) for c in rivals):
                break
        scenes = [scene]
        choices.insert(ctx.slot(4), phrase)
        prompt = (
            f"{image_tokens(1)}\nWhich {kind} does the image depict?\n"
            f"Choice list:[{','.join(choices)}]. Your answer is:"
        )
        answer = phrase
    if unrelated:  # the other phrases' scenes were sampled above all the same (one random stream), not drawn
        scenes = [s if k == slot else None for k, s in enumerate(scenes)]  # None: an unrelated picture
    images = [draw_scene(s, ctx.image_size) if s is not None else _unrelated_picture(rng, ctx.image_size) for s in scenes]
    return Sample(images, prompt, answer, choices, meta={"concept": target.key, "scenes": tuple(scenes)})
