"""Per-example scorers (choice accuracy, token F1) and the Self/Others, A_last, A_AUC aggregation.

This module is the single source of truth for DRAKE numbers: the engine scores with it, the results file
stores its outputs, and the leaderboard recomputes every summary with these same pure functions.

Scoring differs from the official FedMosaic code on purpose (see ``reference/drake_format.md`` §5):

* ``parse_choice`` matches whole words and prefers the longest option, so "14" never reads as "1", and an
  article "a" never reads as option A; the official ``can_infer`` returns the first option in list order
  that occurs as a substring.
* ``token_f1`` is a per-example token-set F1 on normalised words, averaged over examples. The official
  code micro-sums token-id overlaps over the whole test file with the evaluated model's own tokenizer and
  starts the counts at 1; that makes scores depend on the tokenizer, so models with different tokenizers
  (the heterogeneous pools) would not be comparable.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from drake.errors import DataError
from drake.registry import Registry

Scorer = Callable[[str, str, "Sequence[str] | None"], float]


@dataclass(frozen=True)
class MetricSpec:
    """A per-example scorer ``(prediction, answer, choices) -> float in [0, 1]`` and its direction."""

    score: Scorer
    higher_is_better: bool = True


METRICS: Registry[MetricSpec] = Registry("metric")

# ------------------------------------------------------------------------------------------- normalising

_PUNCT = re.compile(r"[^\w\s]")


def normalize_text(text: str) -> str:
    """Lower-case, NFKC, ``_`` and punctuation to spaces, whitespace collapsed: the one text normaliser."""
    text = unicodedata.normalize("NFKC", str(text)).lower().replace("_", " ")
    return " ".join(_PUNCT.sub(" ", text).split())


# ------------------------------------------------------------------------------------------ parse_choice

_LETTERED = re.compile(r"^\s*\(?([A-Z])\s*[.):\]]\s*(.*)$", re.S)  # "A. cat", "(A) cat", "A: cat", "A) cat"
_IMAGE_LABEL = re.compile(r"^image ([a-z]|\d+)$")  # normalised "Image B" / "Image 2"
_BARE = re.compile(r"^[\s(\[]*([A-Za-z]|\d+)[\s)\].:]*$")  # the whole prediction is a label
_LEADING = re.compile(r"^[\s(\[]*([A-Z])\s*[).:\]]")  # "B. dog", "(B) because"
_ANSWER_IS = re.compile(r"(?i:answer|option|choice)(?:\s+is)?\s*[:\-]?\s*[(\[]?([A-Z]|\d+)[)\]]?(?![\w'])")
_ANYWHERE = re.compile(r"(?<![\w'])[(\[]?([A-Z])[)\]]?(?![\w'])")  # a standalone capital letter


def _labels(choices: Sequence[str]) -> list[str] | None:
    """Per-choice labels when the options are labelled: letters, "A. text" options, or "Image B"."""
    if all(len(c.strip()) == 1 and c.strip().isalpha() for c in choices):
        return [c.strip().upper() for c in choices]
    lettered = [_LETTERED.match(c) for c in choices]
    if all(lettered) and [m.group(1) for m in lettered] == [chr(65 + i) for i in range(len(choices))]:  # type: ignore[union-attr]
        return [m.group(1) for m in lettered]  # type: ignore[union-attr]
    images = [_IMAGE_LABEL.match(normalize_text(c)) for c in choices]
    if all(images):
        return [m.group(1).upper() for m in images]  # type: ignore[union-attr]
    return None


def _texts(choice: str, labels: list[str] | None) -> list[str]:
    """Normalised texts a choice may be written as (full text, plus the body of an "A. text" option)."""
    if labels is not None and len(choice.strip()) == 1:
        return []  # bare letters are matched by label only: lower-cased "a" is also an article
    texts = [normalize_text(choice)]
    m = _LETTERED.match(choice)
    if labels is not None and m and m.group(2).strip():
        texts.append(normalize_text(m.group(2)))
    return [t for t in texts if t]


def _unique(candidates: Iterable[int], keys: Sequence[str]) -> int | None:
    """The one candidate index, treating choices with the same normalised text as one; else None."""
    found: dict[str, int] = {}
    for i in candidates:
        found.setdefault(keys[i], i)
    return next(iter(found.values())) if len(found) == 1 else None


def _by_label(found: Iterable[str], labels: list[str], keys: Sequence[str]) -> int | None:
    hits = {lab.upper() for lab in found} & set(labels)
    return _unique([i for i, lab in enumerate(labels) if lab in hits], keys) if hits else None


def _contained(pred: str, texts: list[list[str]], keys: Sequence[str]) -> int | None:
    """Options occurring as whole words in ``pred``; an occurrence inside a longer option's occurrence
    does not count (longest match wins, independent of list order)."""
    padded = f" {pred} "
    spans: list[tuple[int, int, int]] = []
    for i, options in enumerate(texts):
        for t in options:
            start = padded.find(f" {t} ")
            while start != -1:
                spans.append((start + 1, start + 1 + len(t), i))
                start = padded.find(f" {t} ", start + 1)
    alive = [
        i
        for s, e, i in spans
        if not any(s2 <= s and e <= e2 and e2 - s2 > e - s and keys[j] != keys[i] for s2, e2, j in spans)
    ]
    return _unique(alive, keys)


def parse_choice(prediction: str, choices: Sequence[str]) -> str | None:
    """The option ``prediction`` picks, or None when it picks none or several equally.

    Stages, first decisive one wins: (1) exact normalised text (case, whitespace, ``_`` and punctuation
    ignored); (2) the whole prediction is a label ("B", "(B)", "b.") of lettered/letter/"Image X" options;
    (3) yes/no for Positive/Negative options; (4) a leading "B." / "(B)" or "answer is B"; (5) options
    contained as whole words, longest match winning; (6) one standalone capital letter label anywhere;
    (7) the prediction contained in exactly one option. Case-sensitive letter stages keep the article "a"
    and the letters of words ("BECAUSE") from being read as options, unlike the official ``can_infer``.
    """
    choices = [str(c) for c in choices or []]
    pred_raw = str(prediction or "").strip()
    pred = normalize_text(pred_raw)
    if not choices or not pred:
        return None
    keys = [normalize_text(c) for c in choices]
    labels = _labels(choices)
    texts = [_texts(c, labels) for c in choices]

    exact = _unique([i for i, ts in enumerate(texts) if pred in ts], keys)
    if exact is not None:
        return choices[exact]
    bare = _BARE.match(pred_raw) if labels is not None else None
    if bare and labels is not None and (i := _by_label([bare.group(1)], labels, keys)) is not None:
        return choices[i]
    if set(keys) == {"positive", "negative"} and len(choices) == 2:
        words = set(pred.split())
        if ("yes" in words) != ("no" in words):
            return choices[keys.index("positive" if "yes" in words else "negative")]
    if labels is not None:
        lead = [m.group(1)] if (m := _LEADING.match(pred_raw)) else []
        for found in (lead, _ANSWER_IS.findall(pred_raw)):
            if found and (i := _by_label(found, labels, keys)) is not None:
                return choices[i]
    if (i := _contained(pred, texts, keys)) is not None:
        return choices[i]
    if labels is not None and all(lab.isalpha() for lab in labels):
        found = [lab for lab in _ANYWHERE.findall(pred_raw) if lab in labels]
        if len(set(found)) == 1 and (i := _by_label(found, labels, keys)) is not None:
            return choices[i]
    inside = _unique([i for i, ts in enumerate(texts) if any(f" {pred} " in f" {t} " for t in ts)], keys)
    return None if inside is None else choices[inside]


# --------------------------------------------------------------------------------------------- scorers


def choice_accuracy(prediction: str, answer: str, choices: Sequence[str] | None = None) -> float:
    """1.0 when the parsed option is the gold option, else 0.0 (unparseable counts as wrong).

    The gold answer is itself parsed against the options, so a letter answer ("B") matches a lettered
    option ("B. dog"). Without options, the normalised prediction must equal the normalised answer.
    """
    if not choices:
        return float(normalize_text(prediction) == normalize_text(answer))
    picked = parse_choice(prediction, choices)
    if picked is None:
        return 0.0
    gold = parse_choice(answer, choices) or answer
    return float(normalize_text(picked) == normalize_text(gold))


def token_f1(prediction: str, answer: str, choices: Sequence[str] | None = None) -> float:
    """Token-set F1 between normalised words of prediction and answer (``choices`` is ignored).

    Per example, tokenizer-independent (whitespace words after ``normalize_text``), so models with
    different tokenizers get comparable scores; the official code micro-sums overlaps of the evaluated
    model's token ids with +1 initial counts instead. Both empty scores 1.0, one empty scores 0.0.
    """
    p, g = set(normalize_text(prediction).split()), set(normalize_text(answer).split())
    if not p or not g:
        return float(p == g)
    overlap = len(p & g)
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(p), overlap / len(g)
    return 2 * precision * recall / (precision + recall)


METRICS.register("choice_accuracy", MetricSpec(choice_accuracy), summary="option parsed from the answer == gold")
METRICS.register("token_f1", MetricSpec(token_f1), summary="per-example token-set F1 on normalised words")


def score_task(
    metric: str,
    predictions: Sequence[str],
    answers: Sequence[str],
    choices: Sequence[Sequence[str] | None] | None = None,
) -> dict[str, Any]:
    """Mean per-example score of one task: ``{"metric", "score", "n"}`` (the results file's shape)."""
    spec = METRICS.get(metric)
    if len(predictions) != len(answers) or (choices is not None and len(choices) != len(answers)):
        raise DataError(f"score_task({metric}): predictions, answers and choices must have equal lengths")
    if not answers:
        raise DataError(f"score_task({metric}): no examples to score; check the task's eval split")
    per_choice = choices if choices is not None else [None] * len(answers)
    scores = [spec.score(p, a, c) for p, a, c in zip(predictions, answers, per_choice)]
    return {"metric": metric, "score": math.fsum(scores) / len(scores), "n": len(scores)}


# ----------------------------------------------------------------------------------------- aggregation


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def self_others(
    per_client_task_scores: Mapping[Any, Mapping[str, float]],
    own_tasks: Mapping[Any, Sequence[str]],
) -> dict[str, dict[Any, float]]:
    """Self = a client's mean over its own tasks; Others = its mean over other clients' tasks.

    Means are over tasks (a task shared by two other clients counts once). Tasks that were not evaluated
    are skipped, so an engine may evaluate only the tasks seen so far; tasks of no client (unseen tasks)
    count for neither. A client with nothing to average is left out rather than given a NaN. Client keys
    keep the type they have in ``per_client_task_scores``.
    """
    own = {int(c): set(ts) for c, ts in own_tasks.items()}
    out: dict[str, dict[Any, float]] = {"self": {}, "others": {}}
    for client, scores in per_client_task_scores.items():
        mine = own.get(int(client), set())
        theirs = set().union(*(ts for c, ts in own.items() if c != int(client))) - mine
        for target, tasks in (("self", mine), ("others", theirs)):
            values = [float(scores[t]) for t in sorted(tasks) if t in scores]
            if values:
                out[target][client] = _mean(values)
    return out


def summarize(values: Mapping[Any, float] | Sequence[float], *, higher_is_better: bool = True) -> dict[str, Any]:
    """``{"mean", "std", "worst", "n"}`` of the values (e.g. over clients).

    ``std`` is the population standard deviation (ddof=0): the clients of a scenario are the whole
    population, not a sample. ``worst`` is the minimum (maximum when lower is better). No values gives
    ``n = 0`` and None elsewhere, so a one-client scenario still has an (empty) Others summary.
    """
    vals = [float(v) for v in (values.values() if isinstance(values, Mapping) else values)]
    if not vals:
        return {"mean": None, "std": None, "worst": None, "n": 0}
    if not all(math.isfinite(v) for v in vals):
        raise DataError(f"summarize: non-finite value in {vals}; a NaN score means a broken evaluation")
    mean = _mean(vals)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / len(vals))
    return {"mean": mean, "std": std, "worst": min(vals) if higher_is_better else max(vals), "n": len(vals)}


def a_last(curve: Mapping[Any, float]) -> float:
    """A_last: the score at the last evaluation round of ``{round: score}``."""
    if not curve:
        raise DataError("a_last: empty curve (no evaluation rounds)")
    return float(curve[max(curve, key=int)])


def a_auc(curve: Mapping[Any, float]) -> float:
    """A_AUC: the mean score over the evaluation rounds of ``{round: score}`` (FedMosaic §2.5)."""
    if not curve:
        raise DataError("a_auc: empty curve (no evaluation rounds)")
    return _mean([float(v) for v in curve.values()])


def summarize_run(
    per_round: Mapping[Any, Mapping[Any, Mapping[str, float]]],
    own_tasks: Mapping[Any, Sequence[str]],
    eval_rounds: Sequence[int] | None = None,
    others_rounds: Sequence[int] | None = None,
) -> dict[str, Any]:
    """One seed's summary from ``{round: {client: {task: score}}}``.

    Returns ``{"self"|"others": {"a_last"|"a_auc": summarize(over clients)}, "per_client": {client:
    {"self"|"others": {"a_last", "a_auc", "curve": {round: score}} | None}}}``. Self counts ``eval_rounds``
    (default: every round present), Others ``others_rounds`` (default: the same as Self; the official
    protocol scores Others at fewer rounds); each must be present. A client's A_last must come from the
    final round of its curve's schedule. Client and round keys are strings so the summary equals itself
    after a JSON trip.
    """
    rounds = {int(r): v for r, v in per_round.items()}
    wanted = sorted(int(r) for r in eval_rounds) if eval_rounds is not None else sorted(rounds)
    schedule = {"self": wanted, "others": sorted(int(r) for r in others_rounds) if others_rounds is not None else wanted}
    for target, sched in schedule.items():
        if not sched:
            raise DataError(f"summarize_run: no {target} evaluation rounds")
        missing = [r for r in sched if r not in rounds]
        if missing:
            raise DataError(f"summarize_run: eval rounds {missing} have no scores; rounds present: {sorted(rounds)}")
    curves: dict[str, dict[str, dict[str, float]]] = {"self": {}, "others": {}}
    for target, sched in schedule.items():
        for r in sched:
            for client, value in self_others(rounds[r], own_tasks)[target].items():
                curves[target].setdefault(str(client), {})[str(r)] = value
    clients = sorted({str(c) for c in own_tasks} | set(curves["self"]) | set(curves["others"]), key=int)
    per_client: dict[str, dict[str, Any]] = {c: {} for c in clients}
    out: dict[str, Any] = {}
    for target, by_client in curves.items():
        lasts, aucs = {}, {}
        for c in clients:
            curve = by_client.get(c)
            if not curve:
                per_client[c][target] = None
                continue
            if int(max(curve, key=int)) != schedule[target][-1]:
                raise DataError(
                    f"summarize_run: client {c} has no {target} score at the last eval round {schedule[target][-1]}"
                )
            lasts[c], aucs[c] = a_last(curve), a_auc(curve)
            per_client[c][target] = {"a_last": lasts[c], "a_auc": aucs[c], "curve": curve}
        out[target] = {"a_last": summarize(lasts), "a_auc": summarize(aucs)}
    out["per_client"] = per_client
    return out


def summarize_seeds(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean/std across seeds of the per-seed client means (``summarize_run`` outputs).

    Each cell is ``{"mean", "std", "n", "worst_client"}``: ``std`` is ddof=0 like ``summarize``, ``n``
    the seeds that had a value, ``worst_client`` the mean over seeds of each seed's worst client.
    """
    out: dict[str, Any] = {"n_seeds": len(summaries)}
    for target in ("self", "others"):
        out[target] = {}
        for stat in ("a_last", "a_auc"):
            cells = [s[target][stat] for s in summaries if s[target][stat]["n"]]
            agg = summarize([c["mean"] for c in cells])
            worst = [c["worst"] for c in cells]
            out[target][stat] = {
                "mean": agg["mean"],
                "std": agg["std"],
                "n": agg["n"],
                "worst_client": _mean(worst) if worst else None,
            }
    return out
