"""drake audit: every real task passes at a small scale; biased, leaking, overlapping and nondeterministic toy
generators (registered here as module-level functions, so the fresh interpreter of the determinism check can
import them) fail the check they break, and only that one.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import random

import pytest
from PIL import Image

from drake.cli import main
from drake.data.audit import (
    CHECKS,
    audit_tasks,
    check_balance,
    check_determinism,
    check_disjoint,
    check_leakage,
    input_hash,
    split_prompt,
)
from drake.data.synth.base import FAMILIES, IMAGE_TOKEN, Sample, choice_list, letter_options, place
from drake.data.synth.public import public_context, public_sample
from drake.spec import SourceSpec, TaskSpec, load_tasks

os.environ.setdefault("HF_HUB_OFFLINE", "1")
COLORS = ["red", "green", "blue", "yellow"]
SMALL = 0.1  # 30 train / 10 test rows per task


def _image(ctx, salt: str = ""):
    rng = random.Random(f"{ctx.split}|{ctx.index}|{ctx.seed}|{salt}")
    return Image.new("RGB", (ctx.image_size,) * 2, tuple(rng.randrange(256) for _ in range(3)))


def _sample(ctx, answer: str, choices: list[str], text: str = "What colour is the square?") -> Sample:
    prompt = f"{IMAGE_TOKEN}\n{text}\n{choice_list(choices)}"
    return Sample([_image(ctx)], prompt, answer, choices)


def toy_fair(ctx) -> Sample:
    """Balanced by slot, no leak: the control every check passes."""
    return _sample(ctx, COLORS[ctx.slot(4)], COLORS)


def toy_first(ctx) -> Sample:
    """The gold answer is always listed first."""
    answer = COLORS[ctx.slot(4)]
    return _sample(ctx, answer, [answer, *[c for c in COLORS if c != answer]])


def toy_yes(ctx) -> Sample:
    """Yes/no whose answer is always "yes" (its position is balanced, so only the label check sees it)."""
    return _sample(ctx, "yes", place("yes", ["no"], ctx.slot(2)), "Is the square red?")


def toy_leak(ctx) -> Sample:
    """Balanced, but the stem names the answer."""
    answer = COLORS[ctx.slot(4)]
    return _sample(ctx, answer, COLORS, f"The {answer} one. What colour is the square?")


def toy_template_true(ctx) -> Sample:
    """Every stem says "true" (a template word, no leak) and True/False is balanced."""
    answer = ["True", "False"][ctx.slot(2)]
    return _sample(ctx, answer, ["True", "False"], "Is the caption true for the image?")


def toy_letter_leak(ctx) -> Sample:
    """Lettered options (the answer is a letter) whose stem names the option text of the answer."""
    slot = ctx.slot(4)
    prompt = (
        f"{IMAGE_TOKEN}\nHint: it is {COLORS[slot]}. What colour is it?\n{letter_options(COLORS)}\nAnswer:"
    )
    return Sample([_image(ctx)], prompt, "ABCD"[slot], list("ABCD"))


def toy_relabel(ctx) -> Sample:
    """Train and test draw the same inputs with different labels: the build's exact-row dedup misses them."""
    rng = random.Random(ctx.index)
    img = Image.new("RGB", (ctx.image_size,) * 2, tuple(rng.randrange(256) for _ in range(3)))
    train_label = dataclasses.replace(ctx, split="train").slot(4)
    answer = COLORS[(train_label + (ctx.split == "test")) % 4]  # never the train label of the same input
    return Sample([img], f"{IMAGE_TOKEN}\nWhat colour is it?\n{choice_list(COLORS)}", answer, list(COLORS))


def toy_public(ctx) -> Sample:
    """Test rows copied from the public pre-training split (its one-image rows; train rows are fine)."""
    if ctx.split != "test":
        return toy_fair(ctx)
    j = ctx.index
    while True:
        sample = public_sample(public_context("train", j, ctx.seed, ctx.image_size))
        four = len(sample.images) == 1 and len(sample.choices or ()) == 4
        if four and sample.choices.index(sample.answer) == ctx.slot(4):  # balanced: only disjoint fails
            return sample
        j += 1000


_WORDS = [f"w{i}" for i in range(24)]


def toy_set_order(ctx) -> Sample:
    """Depends on a set's iteration order: same within one interpreter, different under another hash seed."""
    word = list(set(_WORDS))[ctx.index % len(_WORDS)]
    return _sample(ctx, COLORS[ctx.slot(4)], COLORS, f"Word {word}: what colour is the square?")


def toy_global_random(ctx) -> Sample:
    """Draws from the unseeded global RNG: every process sees other prompts."""
    return _sample(ctx, COLORS[ctx.slot(4)], COLORS, f"Item {random.randrange(10**9)}: what colour is it?")


TOYS = {
    "audit_toy_fair": toy_fair,
    "audit_toy_first": toy_first,
    "audit_toy_yes": toy_yes,
    "audit_toy_leak": toy_leak,
    "audit_toy_template_true": toy_template_true,
    "audit_toy_letter_leak": toy_letter_leak,
    "audit_toy_relabel": toy_relabel,
    "audit_toy_public": toy_public,
    "audit_toy_set_order": toy_set_order,
    "audit_toy_global_random": toy_global_random,
}
for _name, _fn in TOYS.items():
    if _name not in FAMILIES:
        FAMILIES.register(_name, _fn)


def _spec(family: str) -> TaskSpec:
    """A one-image choice task named like its family."""
    return TaskSpec(
        name=family.removeprefix("audit_"),
        title=family,
        images=1,
        answer="choice",
        metric="choice_accuracy",
        sources={"synth": SourceSpec("synth", family=family)},
    )


@pytest.fixture(scope="module")
def real_report():
    return audit_tasks(list(load_tasks().values()), scale=SMALL)


@pytest.fixture(scope="module")
def toy_report():
    return audit_tasks([_spec(n) for n in TOYS], scale=0.3)


def _verdicts(report) -> dict[str, dict[str, bool]]:
    return {t.task: {c: f.ok for c, f in t.findings.items()} for t in report.tasks}


def test_all_real_tasks_pass_at_small_scale(real_report):
    assert len(real_report.tasks) == 47
    failures = [f"{task} {f.check}: {f.detail}" for task, f in real_report.failures()]
    assert real_report.ok, failures
    for t in real_report.tasks:
        assert set(t.findings) == set(CHECKS)
        assert t.sizes == {"train": 30, "test": 10}
        assert "fresh interpreter" in t.findings["determinism"].detail  # really generated twice, elsewhere
    disjoint = {t.task: t.findings["disjoint"].data for t in real_report.tasks}
    assert all(d["test_in_public"] == 0 for d in disjoint.values())  # the public split was checked
    balance = {t.task: t.findings["balance"].data for t in real_report.tasks}
    assert not balance["iconqa_2"]["test"]["applies"] and balance["vsr_0"]["test"]["applies"]


def test_each_toy_fails_exactly_its_check(toy_report):
    got = _verdicts(toy_report)
    fail = {task: sorted(c for c, ok in v.items() if not ok) for task, v in got.items()}
    assert fail == {
        "toy_fair": [],
        "toy_first": ["balance"],
        "toy_yes": ["balance"],
        "toy_leak": ["leakage"],
        "toy_template_true": [],
        "toy_letter_leak": ["leakage"],
        "toy_relabel": ["disjoint"],
        "toy_public": ["disjoint"],
        "toy_set_order": ["determinism"],
        "toy_global_random": ["determinism"],
    }
    f = {t.task: t.findings for t in toy_report.tasks}
    assert "index 0 in 100%" in f["toy_first"]["balance"].detail
    assert "answer 'yes' in 100%" in f["toy_yes"]["balance"].detail
    assert "stem names the gold answer" in f["toy_leak"]["leakage"].detail
    assert "public pre-training split" in f["toy_public"]["disjoint"].detail
    assert "also train inputs" in f["toy_relabel"]["disjoint"].detail
    assert not toy_report.ok and len(toy_report.failures()) == 8


def test_balance_catches_a_seeded_coin_but_not_a_slot():
    rng = random.Random(0)
    coin = [{"id": f"t-train-{i:05d}", "choices": ["True", "False"], "answer": rng.choice(["True", "False"])}
            for i in range(300)]  # fmt: skip
    finding = check_balance(coin)
    assert not finding.ok
    assert "luck" in finding.detail or "uniform" in finding.detail
    slot = [{"id": f"t-train-{i:05d}", "choices": ["True", "False"], "answer": ["True", "False"][(i // 2 + i) % 2]}
            for i in range(300)]  # fmt: skip
    assert check_balance(slot).ok
    # small splits: one row of slack for n/k not being whole
    tiny = [{"id": f"t-test-{i}", "choices": list("abc"), "answer": "abca"[i]} for i in range(4)]
    assert check_balance(tiny).ok
    assert check_balance([{"choices": None, "answer": "3"}]).data == {"applies": False}


def test_split_prompt_cuts_choice_lists_and_option_lines():
    lettered = f"{IMAGE_TOKEN}\nWhich one?\nA. red\nB. blue\nC) not a choice label\nAnswer with the letter."
    stem, texts = split_prompt(lettered, ["A", "B"])
    assert texts == {"A": "red", "B": "blue"}
    assert "red" not in stem and "C) not a choice label" in stem and IMAGE_TOKEN not in stem
    listed = "Which? Choice List:['x','y'] tail. Choice list:[A: hello world| B: bye]. Your answer is:"
    stem, texts = split_prompt(listed, ["A", "B"])
    assert texts == {"A": "hello world", "B": "bye"}
    assert "Choice" not in stem and "hello" not in stem and "tail." in stem


def test_leakage_counts_whole_words_above_the_template():
    def row(i, answer, text):
        return {
            "id": f"t-{i}",
            "prompt": f"{text}\n{choice_list(COLORS)}",
            "choices": COLORS,
            "answer": answer,
        }

    clean = [
        row(i, COLORS[i % 4], "Reddish? no: colour words inside other words do not count") for i in range(40)
    ]
    assert check_leakage(clean).ok
    leaky = [row(i, COLORS[i % 4], f"it is {COLORS[i % 4]}") for i in range(40)]
    bad = check_leakage(leaky)
    assert not bad.ok and bad.data["rows_singling_out_gold"] == 40
    # a stem naming one choice matches the gold 1 time in 4 by chance: one such row is no evidence, five are
    one = [*clean[:39], row(39, COLORS[39 % 4], f"it is {COLORS[39 % 4]}")]
    assert check_leakage(one).ok and check_leakage(one).data["rows_singling_out_gold"] == 1
    five = clean[:35] + [row(i, COLORS[i % 4], f"it is {COLORS[i % 4]}") for i in range(35, 40)]
    assert not check_leakage(five).ok
    hint = [
        row(i, COLORS[i % 4], f"my friend says {COLORS[(i // 4) % 4]}") for i in range(40)
    ]  # uninformative
    assert check_leakage(hint).ok
    open_rows = [{"id": f"o-{i}", "prompt": f"how many? {i % 3 + 1}", "choices": None, "answer": str(i % 3 + 1)}
                 for i in range(30)]  # fmt: skip
    assert not check_leakage(open_rows).ok
    assert check_leakage([{**r, "prompt": "how many?"} for r in open_rows]).ok


def test_disjoint_and_determinism_on_rows():
    img = {"bytes": b"\x89PNG-a"}
    a = {"id": "t-train-0", "prompt": "p", "images": [img], "choices": ["x", "y"], "answer": "x"}
    b = {**a, "id": "t-test-0", "answer": "y"}  # same input, other label: still the same example
    c = {**a, "id": "t-test-1", "images": [{"bytes": b"\x89PNG-b"}]}
    assert input_hash(a) == input_hash(b) != input_hash(c)
    assert not check_disjoint([a], [b, c]).ok
    assert check_disjoint([a], [c]).ok
    assert not check_disjoint([c], [a], public=[b]).ok
    assert check_determinism({"train": ["1", "2"]}, {"train": ["1", "2"]}).ok
    diff = check_determinism({"train": ["1", "2"]}, {"train": ["1", "3"]})
    assert not diff.ok and diff.data["row"] == 1
    assert not check_determinism({"train": ["1"]}, "ValueError: boom").ok


def test_unimportable_family_is_regenerated_in_process():
    calls = itertools.count()

    def closure(ctx) -> Sample:  # defined in a function: a fresh interpreter could not import it
        return _sample(ctx, COLORS[ctx.slot(4)], COLORS, f"call {next(calls)}")

    FAMILIES.register("audit_toy_closure", closure)
    report = audit_tasks([_spec("audit_toy_closure")], scale=0.05, public=False)
    finding = report.tasks[0].findings["determinism"]
    assert not finding.ok and "same process" in finding.detail


def test_cli_table_json_and_exit_code(tmp_path, capsys):
    assert main(["audit", "--tasks", "vsr_0", "--scale", "0.05", "--no-determinism", "--no-public"]) == 0
    out = capsys.readouterr().out
    assert "vsr_0" in out and "pass" in out and "1/1 tasks pass" in out
    tasks_yaml = tmp_path / "tasks.yaml"
    tasks_yaml.write_text(
        "schema_version: 1\ntasks:\n"
        "  - {name: biased, title: B, images: 1, answer: choice, metric: choice_accuracy,"
        " sources: {synth: {family: audit_toy_first}}}\n"
    )
    argv = ["audit", "--tasks-file", str(tasks_yaml), "--scale", "0.05", "--no-determinism", "--no-public"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "FAIL biased balance" in out
    assert main([*argv, "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and data["tasks"]["biased"]["findings"]["balance"]["ok"] is False
    assert main(["audit", "--scale", "0"]) == 2
