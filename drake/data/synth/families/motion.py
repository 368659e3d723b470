"""SEED-Bench-2 temporal analogue: which way does a named object move over four frames, or which colour
does it turn into?

A second, static object is always present, so the model has to find the named object and compare its
position (or colour) across frames. Two questions in three ask for the colour: the tiny zoo reads no
position (direction alone: 25% after calibration, measured), and a task must be learnable to be calibrated.
The options are the four directions (or colours) in one fixed order, so the letter of the right option is a
balanced slot and names the answer.
"""

from __future__ import annotations

from drake.data.synth.base import IMAGE_TOKEN, Sample, SampleContext, letter_options, pool_ordered_options
from drake.data.synth.families.compare import COLOR_NAMES
from drake.data.synth.families.fashion import check_images
from drake.data.synth.world import SHAPES, canvas, centered_box, draw_shape

MOTIONS = ("left", "right", "up", "down")
_VEC = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
LETTERS = ["A", "B", "C", "D"]
TURN_COLORS = ("red", "green", "blue", "yellow")


def motion_direction(ctx: SampleContext) -> Sample:
    """Four frames of one object moving in a straight line next to a static one; lettered options."""
    check_images(ctx, "motion_direction", 3, 8)
    rng, size, n = ctx.rng, ctx.image_size, ctx.n_images
    about = rng.choice(("direction", "colour", "colour"))
    options, slot = pool_ordered_options(ctx, rng, MOTIONS if about == "direction" else TURN_COLORS, 4)
    direction = options[slot] if about == "direction" else rng.choice(MOTIONS)
    (shape, still_shape), (color, still_color) = rng.sample(SHAPES, 2), rng.sample(COLOR_NAMES, 2)
    colors = [color] * n
    if about == "colour":  # the moving object turns into the answer colour at one frame and stays so;
        # it starts white or black and the still object is purple or orange, so no option colour but the
        # answer is ever drawn
        color, still_color = rng.choice(("white", "black")), rng.choice(("purple", "orange"))
        change = rng.randint(1, n - 1)
        colors = [color if t < change else options[slot] for t in range(n)]
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
        draw_shape(img, shape, colors[t], centered_box(x * size, y * size, side))
        images.append(img)
    question = (f"which way does the {color} {shape} move?" if about == "direction"
                else f"What colour does the {color} {shape} turn into?")
    prompt = (f"Answer the following question.\n{IMAGE_TOKEN * n}\n{question}\n{letter_options(options)}\n"
              f"Answer with the option's letter from the given choices directly.")
    return Sample(images, prompt, LETTERS[slot], list(LETTERS), {"direction": direction, "about": about})
