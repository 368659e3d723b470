"""drake.metrics: option parsing (incl. the official parser's failure modes), token F1, Self/Others, A_last/A_AUC."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from drake.errors import DataError, UnknownNameError
from drake.metrics import (
    METRICS,
    a_auc,
    a_last,
    choice_accuracy,
    parse_choice,
    score_task,
    self_others,
    summarize,
    summarize_run,
    summarize_seeds,
    token_f1,
)

DIGITS7 = [str(i) for i in range(7)]
LETTERS = ["A", "B", "C", "D"]


@pytest.mark.parametrize(
    ("prediction", "choices", "expected"),
    [
        # exact text: case, whitespace, '_' and punctuation ignored
        ("True", ["True", "False"], "True"),
        ("  false. ", ["True", "False"], "False"),
        ("sit on", ["hold", "ride", "sit_on", "wash"], "sit_on"),
        ("A to B", ["A to B", "B to A"], "A to B"),
        # letters: bare, parenthesised, leading, "answer is"
        ("B", LETTERS, "B"),
        ("(c)", LETTERS, "C"),
        ("B. a dog on a mat", LETTERS, "B"),
        ("The answer is D.", LETTERS, "D"),
        # lettered options: letter or body
        ("b", ["A. cat", "B. dog"], "B. dog"),
        ("dog", ["A. cat", "B. dog"], "B. dog"),
        ("(A) because it purrs", ["A. cat", "B. dog"], "A. cat"),
        # Image labels
        ("Image B", ["Image A", "Image B", "Image C"], "Image B"),
        ("c", ["Image A", "Image B", "Image C"], "Image C"),
        ("I would pick image a here.", ["Image A", "Image B", "Image C"], "Image A"),
        ("2", ["Image 1", "Image 2"], "Image 2"),
        # containment prefers the longest option, whatever the list order
        ("it is dark red", ["red", "dark red"], "dark red"),
        ("The answer is 14.", [str(i) for i in range(20)], "14"),
        ("Second image", ["First image", "Second image", "None of the images", "Both images"], "Second image"),
        # prediction inside exactly one option
        ("sit", ["hold", "sit on", "ride"], "sit on"),
        # Positive / Negative from yes / no
        ("Yes, it matches.", ["Positive", "Negative"], "Positive"),
        ("no", ["Positive", "Negative"], "Negative"),
    ],
)
def test_parse_choice_picks(prediction: str, choices: list[str], expected: str) -> None:
    assert parse_choice(prediction, choices) == expected


@pytest.mark.parametrize(
    ("prediction", "choices"),
    [
        ("14", DIGITS7),  # official can_infer: "1" (first option that is a substring)
        ("a dog", LETTERS),  # official: the article "a" reads as option A
        ("BECAUSE", ["A", "B"]),  # official: any letter anywhere in the upper-cased text ("B")
        ("None of them", ["Positive", "Negative"]),  # official: "no" substring of "none" -> Negative
        ("cat or dog", ["cat", "dog"]),  # two options match equally
        ("True, not False", ["True", "False"]),
        ("", ["True", "False"]),
        ("   ", ["True", "False"]),
        ("purple", ["red", "blue"]),
        ("True", []),
        ("A or B", ["A", "B"]),
    ],
)
def test_parse_choice_refuses(prediction: str, choices: list[str]) -> None:
    assert parse_choice(prediction, choices) is None


def test_parse_choice_returns_an_element_of_choices_and_merges_duplicates() -> None:
    choices = ["Red", "red ", "blue"]
    assert parse_choice("RED", choices) == "Red"


def test_choice_accuracy() -> None:
    assert choice_accuracy("B", "B. dog", ["A. cat", "B. dog"]) == 1.0
    assert choice_accuracy("dog", "B", ["A. cat", "B. dog"]) == 1.0  # letter gold answer
    assert choice_accuracy("cat", "B", ["A. cat", "B. dog"]) == 0.0
    assert choice_accuracy("14", "1", DIGITS7) == 0.0  # official scorer would call this correct
    assert choice_accuracy("no idea", "True", ["True", "False"]) == 0.0
    assert choice_accuracy("Sit_On", "sit on", None) == 1.0  # no options: exact normalised match


def test_token_f1_values() -> None:
    assert token_f1("a red cat", "the red cat") == pytest.approx(2 / 3)  # p = r = 2/3
    assert token_f1("red", "the red cat") == pytest.approx(0.5)  # p = 1, r = 1/3
    assert token_f1("Red, red CAT!", "cat red") == 1.0  # sets, case and punctuation ignored
    assert token_f1("dog", "cat") == 0.0
    assert token_f1("", "") == 1.0
    assert token_f1("", "cat") == 0.0
    assert token_f1("cat", "") == 0.0


def test_registry_and_score_task() -> None:
    assert METRICS.names() == ["choice_accuracy", "token_f1"]
    assert all(METRICS.get(n).higher_is_better for n in METRICS.names())
    out = score_task("choice_accuracy", ["B", "14", "yes"], ["B", "14", "False"],
                     [LETTERS, [str(i) for i in range(20)], ["True", "False"]])
    assert out == {"metric": "choice_accuracy", "score": pytest.approx(2 / 3), "n": 3}
    assert score_task("token_f1", ["red", "cat"], ["the red cat", "cat"])["score"] == pytest.approx(0.75)
    with pytest.raises(UnknownNameError, match="did you mean 'token_f1'"):
        score_task("token-f1", ["a"], ["a"])
    with pytest.raises(DataError, match="no examples"):
        score_task("token_f1", [], [])
    with pytest.raises(DataError, match="equal lengths"):
        score_task("token_f1", ["a"], ["a", "b"])


# ----------------------------------------------------------------------------------------- aggregation
# Hand-computed: own tasks {0: a, b; 1: c}.
#   round 1: client 0 Self (0.5+1.0)/2 = 0.75, Others c = 0.2;  client 1 Self 0.8, Others (0.4+0.6)/2 = 0.5
#   round 2: client 0 Self 1.0, Others 0.4;                     client 1 Self 0.9, Others 0.7
OWN = {0: ["a", "b"], 1: ["c"]}
PER_ROUND = {
    1: {0: {"a": 0.5, "b": 1.0, "c": 0.2}, 1: {"a": 0.4, "b": 0.6, "c": 0.8}},
    2: {0: {"a": 1.0, "b": 1.0, "c": 0.4, "unseen_x": 0.0}, 1: {"a": 0.6, "b": 0.8, "c": 0.9}},
}


def test_self_others() -> None:
    assert self_others(PER_ROUND[1], OWN) == {"self": {0: 0.75, 1: 0.8}, "others": {0: 0.2, 1: 0.5}}
    # unseen tasks count for neither; missing tasks are skipped; a client with nothing is left out
    partial = {0: {"a": 1.0, "unseen_x": 0.0}, 1: {"c": 0.5, "b": 1.0}}
    assert self_others(partial, OWN) == {"self": {0: 1.0, 1: 0.5}, "others": {1: 1.0}}


def test_a_last_a_auc() -> None:
    curve = {"10": 0.9, "2": 0.1, "5": 0.5}
    assert a_last(curve) == 0.9  # last round by number, not by string order or insertion order
    assert a_auc(curve) == pytest.approx(0.5)
    with pytest.raises(DataError):
        a_last({})
    with pytest.raises(DataError):
        a_auc({})


def test_summarize_population_std() -> None:
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert s == {"mean": 2.5, "std": pytest.approx(math.sqrt(1.25)), "worst": 1.0, "n": 4}  # ddof=0, not 1.29
    assert summarize({"0": 0.2, "1": 0.6}, higher_is_better=False)["worst"] == 0.6
    assert summarize([]) == {"mean": None, "std": None, "worst": None, "n": 0}
    with pytest.raises(DataError, match="non-finite"):
        summarize([0.5, float("nan")])


def test_summarize_run_hand_example() -> None:
    out = summarize_run(PER_ROUND, OWN, eval_rounds=[1, 2])
    assert out["self"]["a_last"] == {"mean": pytest.approx(0.95), "std": pytest.approx(0.05), "worst": 0.9, "n": 2}
    assert out["self"]["a_auc"] == {"mean": pytest.approx(0.8625), "std": pytest.approx(0.0125),
                                    "worst": pytest.approx(0.85), "n": 2}
    assert out["others"]["a_last"] == {"mean": pytest.approx(0.55), "std": pytest.approx(0.15), "worst": 0.4, "n": 2}
    assert out["others"]["a_auc"]["mean"] == pytest.approx(0.45)
    assert out["per_client"]["0"]["self"] == {"a_last": 1.0, "a_auc": 0.875, "curve": {"1": 0.75, "2": 1.0}}
    # only eval rounds count
    only_last = summarize_run(PER_ROUND, OWN, eval_rounds=[2])
    assert only_last["self"]["a_auc"]["mean"] == pytest.approx(0.95)


def test_summarize_run_errors_and_single_client() -> None:
    with pytest.raises(DataError, match=r"eval rounds \[3\]"):
        summarize_run(PER_ROUND, OWN, eval_rounds=[1, 2, 3])
    gap = {1: PER_ROUND[1], 2: {1: PER_ROUND[2][1]}}  # client 0 not evaluated at the last round
    with pytest.raises(DataError, match="client 0 has no self score at the last eval round 2"):
        summarize_run(gap, OWN)
    solo = summarize_run({1: {0: {"a": 0.5}}}, {0: ["a"]})
    assert solo["others"]["a_last"]["n"] == 0 and solo["per_client"]["0"]["others"] is None


def test_summarize_seeds() -> None:
    s1 = summarize_run(PER_ROUND, OWN)
    shifted = {r: {c: {t: v / 2 for t, v in ts.items()} for c, ts in cs.items()} for r, cs in PER_ROUND.items()}
    s2 = summarize_run(shifted, OWN)
    out = summarize_seeds([s1, s2])
    assert out["n_seeds"] == 2
    cell = out["self"]["a_last"]
    assert cell["mean"] == pytest.approx((0.95 + 0.475) / 2)
    assert cell["std"] == pytest.approx((0.95 - 0.475) / 2)
    assert cell["worst_client"] == pytest.approx((0.9 + 0.45) / 2)
    assert cell["n"] == 2
    empty = summarize_seeds([])
    assert empty["n_seeds"] == 0 and empty["others"]["a_auc"] == {"mean": None, "std": None, "n": 0,
                                                                   "worst_client": None}


# ---------------------------------------------------------------------------------- evaluate modules

MODULES = Path(__file__).resolve().parent.parent / "drake" / "metrics_modules"


def test_evaluate_modules_match_drake_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    import evaluate  # the dev extra
    monkeypatch.setattr(evaluate.config, "HF_MODULES_CACHE", tmp_path / "modules")
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)

    acc = evaluate.load(str(MODULES / "drake_choice_accuracy"), cache_dir=str(tmp_path / "cache"))
    preds, refs = ["14", "B", "Image C", "a dog", "yes"], ["1", "B", "Image C", "A", "True"]
    choices = [DIGITS7, LETTERS, ["Image A", "Image B", "Image C"], LETTERS, ["True", "False"]]
    got = acc.compute(predictions=preds, references=refs, choices=choices)
    expected = score_task("choice_accuracy", preds, refs, choices)["score"]
    assert got == {"choice_accuracy": pytest.approx(expected)} and expected == pytest.approx(2 / 5)

    f1 = evaluate.load(str(MODULES / "drake_token_f1"), cache_dir=str(tmp_path / "cache"))
    preds, refs = ["a red cat", "dog", ""], ["the red cat", "dog", "cat"]
    got = f1.compute(predictions=preds, references=refs)
    assert got == {"token_f1": pytest.approx(score_task("token_f1", preds, refs)["score"])}
    assert got["token_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)
