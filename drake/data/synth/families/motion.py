"""SEED-Bench-2 temporal analogue: which way does a named object move over four frames?

A second, static object is always present, so the model has to find the named object and compare its
position across frames. The direction and the letter of the right option are both balanced slots.
"""

from __future__ import annotations

from drake.data.synth.base import IMAGE_TOKEN, Sample, SampleContext, letter_options, place
from drake.data.synth.families.compare import COLOR_NAMES
from drake.data.synth.families.fashion import check_images
from drake.data.synth.world import SHAPES, canvas, centered_box, draw_shape

MOTIONS = ("left", "right", "up", "down")
_VEC = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
LETTERS = ["A", "B", "C", "D"]


def motion_direction(ctx: SampleContext) -> Sample:
    """Four frames of one object moving in a straight line next to a static one; lettered options."""
    check_images(ctx, "motion_direction", 3, 8)
    rng, size, n = ctx.rng, ctx.image_size, ctx.n_images
    direction, slot = MOTIONS[ctx.slot(4, "direction")], ctx.slot(4)
    options = place(direction, rng.sample([m for m in MOTIONS if m != direction], 3), slot)
    (shape, still_shape), (color, still_color) = rng.sample(SHAPES, 2), rng.sample(COLOR_NAMES, 2)
    ux, uy = _VEC[direction]
    travel = rng.uniform(0.55, 0.64)  # start-to-end distance as a fraction of the image
    start = 0.5 - (ux + uy) * travel / 2
    lanes = [0.25, 0.75]
    rng.shuffle(lanes)
    lane = lanes[0] + rng.uniform(-0.04, 0.04)
    still_along, still_lane = rng.uniform(0.2, 0.8), lanes[1] + rng.uniform(-0.04, 0.04)
    side = 0.3 * size
    images = []
    for t in range(n):
        along = start + (ux + uy) * travel * t / (n - 1)
        img = canvas(size)
        sx, sy = (still_along, still_lane) if ux else (still_lane, still_along)
        draw_shape(img, still_shape, still_color, centered_box(sx * size, sy * size, side))
        x, y = (along, lane) if ux else (lane, along)
        draw_shape(img, shape, color, centered_box(x * size, y * size, side))
        images.append(img)
    prompt = (f"Answer the following question.\n{IMAGE_TOKEN * n}\n"
              f"which way does the {color} {shape} move?\n{letter_options(options)}\n"
              f"Answer with the option's letter from the given choices directly.")
    return Sample(images, prompt, LETTERS[slot], list(LETTERS), {"direction": direction})
