"""What can a tiny zoo model learn in the calibration budget? Minimal probe tasks, one skill each (issue [K].3).

DRAKE-synth's tasks were redesigned from these numbers: a task is in the calibration band only if its
answer rests on a skill the zoo learns in 100 steps x 8 (``calibrate_tasks.py``'s budget and code). Each
probe is a generator like a task family (same world, same prompt formats, balanced answers); it is fine-tuned
and scored exactly as a task is calibrated. Writes ``benchmarks/results/learnability_probes.json``.

    python benchmarks/learnability_probes.py --jobs 2          # every probe, ~8 min on 2 cores
    python benchmarks/learnability_probes.py --probes tf_color pointer4_fixed
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from calibrate_tasks import (  # noqa: E402
    TRAIN_MODES,
    full_marker,
    in_parallel,
    seed_count,
    seed_list,
    seeded_models,
    tune_over_seeds,
)

from drake.data.generation import sample_to_row  # noqa: E402
from drake.data.rows import LazyRows  # noqa: E402
from drake.data.synth import world  # noqa: E402
from drake.data.synth.base import IMAGE_TOKEN, Sample, SampleContext, choice_list, image_tokens, place  # noqa: E402
from drake.data.synth.families import compare, fashion  # noqa: E402
from drake.data.synth.families.dishes import WC_TAIL  # noqa: E402
from drake.data.synth.families.scene import LETTERS, seed_prompt  # noqa: E402
from drake.fl.assemble import set_threads  # noqa: E402
from drake.fl.client import TaskRows  # noqa: E402
from drake.fl.method import MethodConfig  # noqa: E402
from drake.io import atomic_write_json  # noqa: E402

C4 = ("red", "green", "blue", "yellow")
TF = ["True", "False"]
LABELS4 = ["Image A", "Image B", "Image C", "Image D"]


def _object(rng, size: int, color: str, scale: float = 0.6, shape: str | None = None):
    img = world.canvas(size, rng.choice(("gray", "beige")))
    world.draw_shape(img, shape or rng.choice(world.SHAPES), color, world.position_box("center", size, scale))
    return img


def _tf(images: list, statement: str, truth: bool) -> Sample:
    prompt = f"{image_tokens(len(images))}\nStatement: {statement}.\n{choice_list(TF)}"
    return Sample(images, prompt, TF[0] if truth else TF[1], TF)


# ---------------------------------------------------------------------------------- labelled options
def letter_fixed(ctx: SampleContext) -> Sample:
    """Colour of one object; options A-D always red, green, blue, yellow."""
    c = C4[ctx.slot(4)]
    return Sample([_object(ctx.rng, ctx.image_size, c)], seed_prompt("What is the colour of the object?", list(C4)),
                  LETTERS[C4.index(c)], list(LETTERS))  # fmt: skip


def letter_shuffled(ctx: SampleContext) -> Sample:
    """The same, with the four colours in a random order (the letter is a second lookup)."""
    rng, k = ctx.rng, ctx.slot(4)
    c = rng.choice(C4)
    options = place(c, rng.sample([x for x in C4 if x != c], 3), k)
    return Sample([_object(rng, ctx.image_size, c)], seed_prompt("What is the colour of the object?", options),
                  LETTERS[k], list(LETTERS))  # fmt: skip


def number_fixed(ctx: SampleContext) -> Sample:
    """WCVQA-style numbered options in a fixed order."""
    names = ("red", "green", "blue", "yellow", "purple")
    k = ctx.slot(5)
    body = "\n".join(f"{i + 1}. {n}" for i, n in enumerate(names))
    prompt = f"{IMAGE_TOKEN}\nWhat is the colour of the object?\n{body}\n{WC_TAIL}"
    return Sample([_object(ctx.rng, ctx.image_size, names[k])], prompt, str(k + 1), ["1", "2", "3", "4", "5"])


# ---------------------------------------------------------------------------------- true / false
def tf_color(ctx: SampleContext) -> Sample:
    """'the object is <colour>' about one object."""
    rng, truth = ctx.rng, ctx.slot(2) == 0
    c = rng.choice(C4)
    said = c if truth else rng.choice([x for x in C4 if x != c])
    return _tf([_object(rng, ctx.image_size, c)], f"the object is {said}", truth)


def tf_shape(ctx: SampleContext) -> Sample:
    """'the object is a <shape>' about one large object."""
    rng, truth = ctx.rng, ctx.slot(2) == 0
    shapes = ("circle", "square", "triangle", "star")
    s = rng.choice(shapes)
    said = s if truth else rng.choice([x for x in shapes if x != s])
    return _tf([_object(rng, ctx.image_size, rng.choice(C4), 0.8, s)], f"the object is a {said}", truth)


def _two(rng, size: int, sides: tuple[str, str]):
    a, b = rng.sample(list(world.COLORS), 2)
    img = world.canvas(size)
    for side, color in zip(sides, (a, b)):
        world.draw_shape(img, rng.choice(world.SHAPES), color, world.position_box(side, size, 0.45))
    return img, a, b


def tf_present(ctx: SampleContext) -> Sample:
    """'there is a <colour> object' about two objects."""
    rng, truth = ctx.rng, ctx.slot(2) == 0
    img, a, b = _two(rng, ctx.image_size, ("left", "right"))
    said = rng.choice((a, b)) if truth else rng.choice([x for x in world.COLORS if x not in (a, b)])
    return _tf([img], f"there is a {said} object", truth)


def _position_probe(sides: tuple[str, str]) -> Callable[[SampleContext], Sample]:
    def probe(ctx: SampleContext) -> Sample:
        rng, truth = ctx.rng, ctx.slot(2) == 0
        img, a, b = _two(rng, ctx.image_size, sides)
        named, side = rng.choice(((a, sides[0]), (b, sides[1])))
        said = side if truth else sides[1 - sides.index(side)]
        return _tf([img], f"the {named} object is {'on' if said in ('left', 'right') else 'at'} the {said}", truth)

    probe.__doc__ = f"'the <colour> object is at the {sides[0]} / {sides[1]}' about two objects."
    return probe


def tf_ordinal(ctx: SampleContext) -> Sample:
    """'the object in the <first/second> image is <colour>' over two images."""
    rng, truth = ctx.rng, ctx.slot(2) == 0
    k, cols = rng.randrange(2), [rng.choice(C4) for _ in range(2)]
    said = cols[k] if truth else rng.choice([x for x in C4 if x != cols[k]])
    images = [_object(rng, ctx.image_size, c) for c in cols]
    return _tf(images, f"the object in the {('first', 'second')[k]} image is {said}", truth)


def _garment_statement(template: str) -> Callable[[SampleContext], Sample]:
    def probe(ctx: SampleContext) -> Sample:
        return fashion.multi_statement(ctx, attribute="color", templates=(template,))

    probe.__doc__ = f"fashion200k_2's '{template}' statement alone (four garment images, eight colours)."
    return probe


def _pair_relation(relation: str) -> Callable[[SampleContext], Sample]:
    def probe(ctx: SampleContext) -> Sample:
        truth = ctx.slot(2) == 0
        a, b, _, text = compare._pair_build(ctx.rng, relation, truth)
        images = [compare.scene_image(a, ctx.image_size), compare.scene_image(b, ctx.image_size)]
        return _tf(images, text, truth)

    probe.__doc__ = f"nlvr2's '{relation}' relation alone."
    return probe


def defects_none(ctx: SampleContext) -> Sample:
    """VISION's 'no part has a <defect>' alone over two parts (a false pair shows that defect once)."""
    rng, truth = ctx.rng, ctx.slot(2) == 0
    d = rng.choice(compare.DEFECTS)
    defects: list[str | None] = [None, None]
    if not truth:
        defects[rng.randrange(2)] = d
    shape, color = rng.choice(compare.PARTS), rng.choice(compare.PART_COLORS)
    images = [compare.part_image(rng, ctx.image_size, shape, color, x) for x in defects]
    return _tf(images, f"no part has {compare.an(d)} {d}", truth)


# ---------------------------------------------------------------------------------- pointing at an image
def _pointer(n: int, targets: tuple[str, ...]) -> Callable[[SampleContext], Sample]:
    labels = LABELS4[:n] if n > 2 else ["First image", "Second image"]

    def probe(ctx: SampleContext) -> Sample:
        rng, k = ctx.rng, ctx.slot(n)
        target = rng.choice(targets)
        others = [x for x in world.COLORS if x not in targets]
        images = [_object(rng, ctx.image_size, target if i == k else rng.choice(others)) for i in range(n)]
        head = image_tokens(n, labels) if n > 2 else image_tokens(n)
        prompt = f"{head}\nWhich image shows a {target} object?\n{choice_list(labels)}"
        return Sample(images, prompt, labels[k], labels)

    probe.__doc__ = f"which of {n} images shows the one object of a colour asked among {len(targets)}."
    return probe


def odd_one_out(ctx: SampleContext) -> Sample:
    """Which of four images differs (three share one colour)?"""
    rng, k = ctx.rng, ctx.slot(4)
    a, b = rng.sample(list(world.COLORS), 2)
    images = [_object(rng, ctx.image_size, b if i == k else a) for i in range(4)]
    prompt = (f"{image_tokens(4, LABELS4)}\nWhich image does not share the concept of the other three images?\n"
              f"{choice_list(LABELS4)}")  # fmt: skip
    return Sample(images, prompt, LABELS4[k], LABELS4)


def count_images(ctx: SampleContext) -> Sample:
    """How many of four images show a red object?"""
    rng, n = ctx.rng, 1 + ctx.slot(4)
    cols = ["red"] * n + [rng.choice([x for x in world.COLORS if x != "red"]) for _ in range(4 - n)]
    rng.shuffle(cols)
    choices = ["1", "2", "3", "4"]
    prompt = f"{image_tokens(4)}\nHow many images show a red object?\n{choice_list(choices)}"
    return Sample([_object(rng, ctx.image_size, c) for c in cols], prompt, str(n), choices)


PROBES: dict[str, tuple[Callable[[SampleContext], Sample], int]] = {
    "letter_fixed": (letter_fixed, 1),
    "letter_shuffled": (letter_shuffled, 1),
    "number_fixed": (number_fixed, 1),
    "tf_color": (tf_color, 1),
    "tf_shape": (tf_shape, 1),
    "tf_present": (tf_present, 1),
    "tf_left_right": (_position_probe(("left", "right")), 1),
    "tf_top_bottom": (_position_probe(("top", "bottom")), 1),
    "tf_ordinal": (tf_ordinal, 2),
    "statement_all": (_garment_statement("all"), 4),
    "statement_none": (_garment_statement("none"), 4),
    "statement_one": (_garment_statement("one"), 4),
    "pair_same_color": (_pair_relation("same_color"), 2),
    "pair_both_contain": (_pair_relation("both_contain"), 2),
    "defects_none": (defects_none, 2),
    "pointer2_fixed": (_pointer(2, ("red",)), 2),
    "pointer2_varied": (_pointer(2, C4), 2),
    "pointer4_fixed": (_pointer(4, ("red",)), 4),
    "pointer4_two": (_pointer(4, ("red", "blue")), 4),
    "pointer4_varied": (_pointer(4, C4), 4),
    "odd_one_out": (odd_one_out, 4),
    "count_images": (count_images, 4),
}


def probe_rows(name: str, n_train: int = 300, n_test: int = 100) -> TaskRows:
    """A probe's train and test splits as a task's rows (the sizes of a task at scale 1)."""
    fn, n_images = PROBES[name]
    splits = {
        split: LazyRows([sample_to_row(fn(SampleContext(name, split, i, 0, 32, n_images)), name, split, i)
                         for i in range(n)])
        for split, n in (("train", n_train), ("test", n_test))
    }  # fmt: skip
    return TaskRows(name, "choice", "choice_accuracy", splits)


def run(args: argparse.Namespace) -> dict:
    seeded = seeded_models(args)
    out = {}
    for name in args.tasks:
        out[name] = r = tune_over_seeds(name, {name: probe_rows(name)}, seeded)
        print(f"{name:18s} chance {100 * r['chance']:5.1f}  tuned {100 * r['accuracy']:5.1f} +-{100 * r['sd']:4.1f}  "
              f"({PROBES[name][0].__doc__})", flush=True)  # fmt: skip
    return out


def _worker(args: argparse.Namespace) -> dict:
    set_threads(1)
    return run(args)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny-llama-m", help="zoo member, local folder or hub id")
    p.add_argument("--probes", nargs="*", default=None, choices=list(PROBES), metavar="PROBE",
                   help=f"probes to run (default: all): {', '.join(PROBES)}")
    p.add_argument("--steps", type=int, default=100, help="AdamW steps (the calibration budget)")
    p.add_argument("--batch", type=int, default=8, help="examples per step")
    p.add_argument("--lr", type=float, default=MethodConfig.lr, help="AdamW learning rate")
    p.add_argument("--lora-r", type=int, default=MethodConfig.lora_r, help="LoRA rank")
    p.add_argument("--train", choices=TRAIN_MODES, default="adapter", help="what moves: the adapter, or also the "
                   "projector and text model")
    p.add_argument("--seed", type=int, default=0, help="first training seed")
    p.add_argument("--seeds", type=seed_count, default=3, help="training seeds per probe (seed, seed+1, ...); the table "
                   "gives their mean and standard deviation")
    p.add_argument("--jobs", type=int, default=1, help="probes side by side, one process and thread each")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/learnability_probes.json"), help="the table (JSON)")
    args = p.parse_args(argv)
    args.tasks, args.limit, args.zero_shot = args.probes or list(PROBES), None, False
    set_threads(1)
    results = in_parallel(_worker, args, args.tasks) if args.jobs > 1 else run(args)
    record = {
        "command": shlex.join(["python", "benchmarks/learnability_probes.py", *(argv if argv is not None else sys.argv[1:])]),
        "model": args.model,
        "budget": {"steps": args.steps, "batch": args.batch, "lr": args.lr, "lora_r": args.lora_r,
                   "seeds": seed_list(args), **full_marker(args)},
        "probes": {n: {**r, "what": PROBES[n][0].__doc__} for n, r in results.items()},
    }
    if args.out:
        atomic_write_json(Path(args.out), record)


if __name__ == "__main__":
    main()
