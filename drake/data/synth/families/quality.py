"""Co-Instruct analogues: image quality (blur, noise, too dark, too bright) of shape-world scenes.

Scenes use textured shapes so that blur and noise are visible at 32 px; every distortion comes from
``world.degrade``. In the yes/no task a "no" image is clean or shows a different distortion, so a model must
name the distortion, not only notice that something is wrong. The comparison tasks point at one of several
images, which the tiny zoo learns only when the property pointed at does not depend on the question (100%
for "which image is red" over two images, 50% when the colour asked for varies: learnability_probes.py); so
there the other images are clean and finding the odd image out is the task. Both comparison tasks ask about
brightness only: with blur and noise too, the pair stayed at chance and the triple at 33 (chance 33; 69 with
brightness only, mean of 3 calibration seeds).
"""

from __future__ import annotations

import random

from PIL import Image

from drake.data.synth import world
from drake.data.synth.base import IMAGE_TOKEN, Sample, SampleContext, image_tokens, pool_ordered_options
from drake.data.synth.families.icons import bad_param, expect_images

KINDS = ("blur", "noise", "dark", "bright")
WHAT = {"blur": "blur", "noise": "noise", "dark": "too dark", "bright": "too bright"}
ADJ = {"blur": "blurry", "noise": "noisy", "dark": "too dark", "bright": "too bright"}
STRENGTH = {"blur": (1.0, 1.5), "noise": (0.8, 1.2), "dark": (0.9, 1.2), "bright": (0.8, 1.2)}
OPPOSITE = {"blur": "noise", "noise": "blur", "dark": "bright", "bright": "dark"}
LETTER_TAIL = "\nAnswer with the option's letter from the given choices directly."
LIST_TAIL = ". You must choose your answer from the Choice List. "
ORDINALS = ("First", "Second", "Third")
SUPERLATIVES = {"brightest": "bright", "darkest": "dark"}  # question -> the answer image's distortion


def base_scene(size: int, rng: random.Random) -> Image.Image:
    """Two large textured shapes on a plain background: the undistorted 'photo'."""
    img = world.canvas(size, rng.choice(("gray", "beige")))
    colors = rng.sample([c for c in world.COLORS if c not in ("white", "black")], 2)
    for pos, col in zip(rng.choice((("left", "right"), ("top", "bottom"))), colors):
        shape = rng.choice(world.SHAPES)
        world.draw_shape(img, shape, col, world.position_box(pos, size, 0.48), rng.choice(world.TEXTURES[1:]))
    return img


def distorted(size: int, kind: str, rng: random.Random) -> Image.Image:
    img = base_scene(size, rng)
    if kind == "clean":
        return img
    return world.degrade(img, kind, rng, rng.uniform(*STRENGTH[kind]))


def _not(kind: str, rng: random.Random) -> str:
    """What an image without ``kind`` shows: clean half the time, else the opposite distortion."""
    return rng.choice(("clean", OPPOSITE[kind]))


def _lettered(img: Image.Image, question: str, options: list[str], answer_index: int, label: str) -> Sample:
    letters = [chr(65 + i) for i in range(len(options))]
    body = "\n".join(f"{let}. {o}" for let, o in zip(letters, options))
    prompt = f"{IMAGE_TOKEN}\n{question}\n{body}{LETTER_TAIL}"
    return Sample([img], prompt, letters[answer_index], letters, {"label": label})


def quality(ctx: SampleContext, mode: str = "what") -> Sample:
    """``what``: the main distortion (4 lettered options); ``yesno``: "is this image X?" (A. Yes / B. No);
    ``compare``: 2 images -> which one is X (first/second/none/both), 3 images -> which is the X-est."""
    if mode not in ("what", "yesno", "compare"):
        raise bad_param(ctx, "quality", "mode", mode, ("what", "yesno", "compare"))
    expect_images(ctx, "quality", (2, 3) if mode == "compare" else (1,))
    rng = ctx.rng
    size = ctx.image_size
    if mode == "what":
        options, pos = pool_ordered_options(ctx, rng, [WHAT[k] for k in KINDS], 4, "value")
        kind = KINDS[pos]
        q = rng.choice(("What is the main quality problem of this image?",
                        "Which distortion is most obvious in this image?"))
        return _lettered(distorted(size, kind, rng), q, options, pos, kind)
    if mode == "yesno":
        kind = rng.choice(KINDS)
        yes = ctx.slot(2, "value") == 0
        img = distorted(size, kind if yes else _not(kind, rng), rng)
        return _lettered(img, f"Is this image {ADJ[kind]}?", ["Yes", "No"], 0 if yes else 1,
                         f"{kind}:{'yes' if yes else 'no'}")
    n = ctx.n_images
    if n == 2:  # brightness only: with blur and noise too the task stayed at chance (measured)
        kind = rng.choice(("dark", "bright"))
        outcome = ctx.slot(4, "value")  # 0 first, 1 second, 2 none, 3 both
        has = [outcome in (0, 3), outcome in (1, 3)]
        imgs = [distorted(size, kind if h else "clean", rng) for h in has]
        choices = ["First image", "Second image", "None of the images", "Both images"]
        q = f"Which of the two images is {ADJ[kind]}?"
    else:
        sup = rng.choice(sorted(SUPERLATIVES))
        outcome = ctx.slot(3, "value")
        imgs = [distorted(size, SUPERLATIVES[sup] if i == outcome else "clean", rng) for i in range(3)]
        choices = [f"{o} image" for o in ORDINALS]
        q = f"Which image is the {sup}?"
        kind = sup
    prompt = f"{image_tokens(n)}\n{q}\nChoice list:[{', '.join(choices)}]{LIST_TAIL}"
    return Sample(imgs, prompt, choices[outcome], choices, {"label": f"{kind}:{outcome}"})
