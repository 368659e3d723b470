"""Audit DRAKE-synth for the shortcuts a benchmark must not have (issue [K].2).

Four checks per task, each a pure function of canonical rows that returns a ``Finding``:

* ``balance``: the gold answer's index among the choices is uniform within ``tolerance`` (5 points), and so is
  each answer's share when every row offers the same label set (True/False, Image A-D, ids 1-5). Balance must
  come from construction (``SampleContext.slot``), not from luck, so the running count is checked as well:
  over every prefix of the rows, in generation order, no index drifts more than ``RUN_SLACK`` rows from its
  expected count. A slot never drifts a full row; a seeded coin passes the final share often but wanders
  ~sqrt(n)/2 rows on the way.
* ``leakage``: the prompt must not give the answer away outside the listed choices. The choices block
  (``Choice list:[...]`` lists and ``A. text`` option lines) is cut out first; what remains is the *stem*.
  Each choice (for a letter or id label, the option text it stands for) is counted in the stem as a whole
  word, case-insensitively, above its floor (its fewest mentions in any row offering it, so a template word
  in every stem, "is the caption true?", cancels out). The text-only rule "answer the choice the stem names
  most often" must not beat its no-information baseline (the same picks scored against the task's own gold
  shares) by more than ``leak_tolerance`` *and* ``LEAK_Z`` standard errors: a stem that names the gold
  answer fails, a hint that names a random option does not, and neither does one stray row (a stem naming
  one of k options matches the gold 1 time in k by chance). Open tasks use their distinct answers as the
  choices.
* ``disjoint``: no test input (prompt + image bytes; the answer is left out, since one input under two labels
  is still one example) is also a train input, or an input of the public pre-training split.
* ``determinism``: a second generation, in a fresh interpreter with another PYTHONHASHSEED (set order is the
  usual culprit), yields byte-identical rows.

``audit_tasks`` generates the rows (as ``drake build`` does: train first, test skipping rows identical to a
train row) and runs every check; ``drake audit`` prints its report.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import re
import subprocess
import sys
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from drake.spec import TaskSpec

CHECKS = ("balance", "leakage", "disjoint", "determinism")
TOLERANCE = 0.05  # largest share (fraction) an answer index or label may stray from uniform
LEAK_TOLERANCE = 0.0  # accuracy gain of the mention rule over its baseline that is a leak, if significant
LEAK_Z = 3.0  # significant: above this many standard errors of the baseline
RUN_SLACK = 3.0  # rows an index's running count may drift from expected (a slot stays below 1)
_EXAMPLES = 3  # ids quoted per finding

_LIST = re.compile(r"choice\s*list\s*:\s*\[([^\]]*)\]", re.IGNORECASE)
_OPTION_LINE = re.compile(r"^[ \t]*([A-Za-z]|\d{1,2})[.:)][ \t]+(\S.*?)[ \t]*$", re.MULTILINE)
_LABELLED_ITEM = re.compile(r"^\s*([A-Za-z]|\d{1,2})\s*[.:)]\s*(\S.*?)\s*$")
_INDEX = re.compile(r"-(\d+)$")


@dataclass(frozen=True)
class Finding:
    """One check's verdict on one task: ``detail`` is a one-line reason (or summary); ``data`` the numbers."""

    check: str
    ok: bool
    detail: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskAudit:
    task: str
    sizes: Mapping[str, int]
    findings: Mapping[str, Finding]

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings.values())


@dataclass(frozen=True)
class AuditReport:
    """Every task's findings plus the generation params (``to_dict`` is the ``--json`` output)."""

    params: Mapping[str, Any]
    tasks: Sequence[TaskAudit]

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tasks)

    def failures(self) -> list[tuple[str, Finding]]:
        return [(t.task, f) for t in self.tasks for f in t.findings.values() if not f.ok]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "params": dict(self.params),
            "tasks": {
                t.task: {
                    "ok": t.ok,
                    "sizes": dict(t.sizes),
                    "findings": {name: _jsonable(asdict(f)) for name, f in t.findings.items()},
                }
                for t in self.tasks
            },
        }


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


# ------------------------------------------------------------------------------------------------ hashes


def input_hash(row: Mapping[str, Any]) -> str:
    """sha256 of a row's input: prompt and image bytes (no answer, no id)."""
    h = hashlib.sha256(row["prompt"].encode())
    for im in row["images"]:
        h.update(b"\0img\0" + _image_bytes(im))
    return h.hexdigest()


def _image_bytes(im: Any) -> bytes:
    return bytes(im["bytes"]) if isinstance(im, Mapping) else bytes(im)


def _row_digest(row: Mapping[str, Any]) -> str:
    """Everything a row holds (id, input, choices, answer): two generations must agree on it byte for byte."""
    h = hashlib.sha256(input_hash(row).encode())
    h.update(json.dumps([row["id"], row["task"], row["choices"], row["answer"]]).encode())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------ balance


def _allowed(n: int, tolerance: float) -> float:
    """Rows a count may stray from n/k: ``tolerance`` of n, but at least one row (n/k is rarely whole)."""
    return max(tolerance * n, 1.0)


def _gold_index(row: Mapping[str, Any]) -> int:
    return list(row["choices"]).index(row["answer"])


def _skipped(rows: Sequence[Mapping[str, Any]]) -> int:
    """Generator indices skipped in these rows (ids end in their index; test rows equal to a train row are
    skipped by the build), 0 when the ids carry no index."""
    idx = [_INDEX.search(str(r.get("id", ""))) for r in rows]
    if not rows or not all(idx):
        return 0
    values = [int(m.group(1)) for m in idx if m]
    return max(0, max(values) + 1 - len(values))


def _running_drift(labels: Sequence[Any], values: Sequence[Any]) -> float:
    """Largest |count_v(prefix) - len(prefix)/k| over every prefix and value."""
    k, counts, worst = len(values), dict.fromkeys(values, 0), 0.0
    for m, label in enumerate(labels, 1):
        counts[label] = counts.get(label, 0) + 1
        worst = max(worst, max(abs(c - m / k) for c in counts.values()))
    return worst


def _spread(labels: Sequence[Any], values: Sequence[Any]) -> tuple[dict[str, float], float]:
    """Each value's share and the largest distance (in rows) of a count from uniform."""
    n, counts = len(labels), Counter(labels)
    shares = {str(v): counts.get(v, 0) / n for v in values}
    return shares, max(abs(counts.get(v, 0) - n / len(values)) for v in values)


def check_balance(
    rows: Sequence[Mapping[str, Any]], tolerance: float = TOLERANCE, run_slack: float = RUN_SLACK
) -> Finding:
    """Gold index (and, for a fixed label set, gold label) uniform within ``tolerance``, by construction."""
    rows = [r for r in rows if r.get("choices")]
    if not rows:
        return Finding("balance", True, "n/a (open answers)", {"applies": False})
    problems: list[str] = []
    data: dict[str, Any] = {"applies": True, "rows": len(rows), "skipped": _skipped(rows)}
    slack = run_slack + data["skipped"]
    by_k: dict[int, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_k.setdefault(len(r["choices"]), []).append(r)
    for k, group in sorted(by_k.items()):
        labels = [_gold_index(r) for r in group]
        shares, off = _spread(labels, range(k))
        drift = _running_drift(labels, range(k))
        data[f"index_{k}"] = {"shares": shares, "max_rows_off": off, "running_drift": drift}
        worst = max(shares, key=lambda i: shares[i])  # the favoured index names the bias best
        if off > _allowed(len(group), tolerance):
            problems.append(
                f"gold at index {worst} in {100 * shares[worst]:.0f}% of {len(group)} rows with {k} choices "
                f"(uniform {100 / k:.0f}%)"
            )
        elif drift > slack:
            problems.append(
                f"gold index drifts {drift:.1f} rows from uniform over the rows with {k} choices: balanced by "
                f"luck, not by ctx.slot"
            )
    label_sets = {frozenset(r["choices"]) for r in rows}
    if len(label_sets) == 1:
        values = sorted(next(iter(label_sets)))
        labels = [r["answer"] for r in rows]
        shares, off = _spread(labels, values)
        data["labels"] = {"shares": shares, "max_rows_off": off}
        worst = max(shares, key=lambda v: shares[v])
        if off > _allowed(len(rows), tolerance) and not problems:
            problems.append(
                f"answer {worst!r} in {100 * shares[worst]:.0f}% of rows (uniform {100 / len(values):.0f}%)"
            )
    if problems:
        return Finding("balance", False, "; ".join(problems), data)
    summary = ", ".join(
        f"k={k}: max {100 * max(abs(s - 1 / k) for s in data[f'index_{k}']['shares'].values()):.1f} pts off"
        for k in sorted(by_k)
    )
    return Finding("balance", True, summary, data)


# ------------------------------------------------------------------------------------------------ leakage


def split_prompt(prompt: str, choices: Sequence[str]) -> tuple[str, dict[str, str]]:
    """(stem, option text per label): the prompt without its choices block, and what each label stands for.

    The block is every ``Choice list:[...]`` (any case, items split on ``|`` or ``,``) and every option line
    ``A. text`` / ``1. text`` / ``A: text`` whose label is one of ``choices``.
    """
    labels, texts = set(choices), {}
    for m in _LIST.finditer(prompt):
        inner = m.group(1)
        for item in inner.split("|") if "|" in inner else inner.split(","):
            lm = _LABELLED_ITEM.match(item.strip().strip("'\""))
            if lm and lm.group(1) in labels:
                texts[lm.group(1)] = lm.group(2)
    stem = _LIST.sub(" ", prompt)

    def option_line(m: re.Match[str]) -> str:
        if m.group(1) not in labels:
            return m.group(0)
        texts[m.group(1)] = m.group(2)
        return ""

    stem = _OPTION_LINE.sub(option_line, stem)
    from drake.data.synth.base import IMAGE_TOKEN

    return stem.replace(IMAGE_TOKEN, " "), texts


def _mentions(stem: str, text: str) -> int:
    if not text.strip():
        return 0
    return len(re.findall(rf"(?<!\w){re.escape(text.strip())}(?!\w)", stem, flags=re.IGNORECASE))


def check_leakage(
    rows: Sequence[Mapping[str, Any]], tolerance: float = LEAK_TOLERANCE, z: float = LEAK_Z
) -> Finding:
    """The stem (prompt minus choices block) must not single out the gold answer; see the module doc.

    Counts are taken above each choice text's floor (its fewest mentions in any row offering it), so a
    template word in every stem cancels out. The rule's gain over its baseline fails when it exceeds both
    ``tolerance`` and ``z`` standard errors of that baseline (a chance surplus on a few rows is no leak).
    """
    if not rows:
        return Finding("leakage", True, "no rows", {})
    open_task = not rows[0].get("choices")
    vocab = sorted({r["answer"] for r in rows}) if open_task else []
    parsed = []
    floor: dict[str, int] = {}
    for r in rows:
        choices = vocab if open_task else list(r["choices"])
        stem, texts = split_prompt(r["prompt"], choices)
        keys = [t.strip().lower() for t in (texts.get(c, c) for c in choices)]
        counts = [_mentions(stem, t) for t in keys]
        for key, m in zip(keys, counts):
            floor[key] = min(floor.get(key, m), m)
        parsed.append((r, choices, keys, counts))
    # the baseline: gold keys (index, or answer for open tasks) drawn from the task's own gold shares
    shares: dict[int, Counter[Any]] = {}
    for r, choices, _, _ in parsed:
        shares.setdefault(len(choices), Counter())[r["answer"] if open_task else _gold_index(r)] += 1
    acc = base = var = 0.0
    singled: list[str] = []
    for r, choices, keys, counts in parsed:
        above = [m - floor[key] for key, m in zip(keys, counts)]
        top = max(above)
        picks = {i for i, m in enumerate(above) if m == top}
        gold = choices.index(r["answer"])
        acc += (gold in picks) / len(picks)
        q = shares[len(choices)]
        total = sum(q.values())
        dist = [(q[c if open_task else i] / total, (i in picks) / len(picks)) for i, c in enumerate(choices)]
        b = sum(p * x for p, x in dist)
        base += b
        var += sum(p * (x - b) ** 2 for p, x in dist)
        if top > 0 and picks == {gold}:
            singled.append(str(r.get("id", "?")))
    n = len(rows)
    gain, se = (acc - base) / n, var**0.5 / n
    data = {
        "rule_accuracy": acc / n,
        "baseline": base / n,
        "gain": gain,
        "stderr": se,
        "rows_singling_out_gold": len(singled),
        "examples": singled[:_EXAMPLES],
        "open": open_task,
    }
    if gain > max(tolerance, z * se) + 1e-9:
        return Finding(
            "leakage",
            False,
            f"the stem names the gold answer: answering the most-mentioned choice scores {100 * acc / n:.0f}% vs "
            f"{100 * base / n:.0f}% without information ({len(singled)} rows single it out, e.g. "
            f"{', '.join(singled[:_EXAMPLES]) or '-'})",
            data,
        )
    return Finding("leakage", True, f"mention rule {100 * gain:+.1f} pts (se {100 * se:.1f})", data)


# ------------------------------------------------------------------------------------------------ disjoint


def check_disjoint(
    train: Sequence[Mapping[str, Any]],
    test: Sequence[Mapping[str, Any]],
    public: Iterable[Mapping[str, Any]] | None = None,
) -> Finding:
    """No test input is a train input, nor (when given) an input of the public pre-training split."""
    train_h = {input_hash(r) for r in train}
    test_h = [(str(r.get("id", "?")), input_hash(r)) for r in test]
    in_train = [i for i, h in test_h if h in train_h]
    in_public: list[str] = []
    if public is not None:
        public_h = {input_hash(r) for r in public}
        in_public = [i for i, h in test_h if h in public_h]
    dup_test = len(test_h) - len({h for _, h in test_h})
    train_images = {_image_bytes(im) for r in train for im in r["images"]}
    data = {
        # information only: a plain part or a lone red circle is drawn pixel-identically in both splits
        "test_rows_sharing_an_image_with_train": sum(
            any(_image_bytes(im) in train_images for im in r["images"]) for r in test
        ),
        "test_in_train": len(in_train),
        "test_in_public": len(in_public) if public is not None else None,
        "duplicate_test_inputs": dup_test,
        "examples": (in_train + in_public)[:_EXAMPLES],
    }
    problems = []
    if in_train:
        problems.append(
            f"{len(in_train)} test inputs are also train inputs (e.g. {', '.join(in_train[:_EXAMPLES])})"
        )
    if in_public:
        problems.append(
            f"{len(in_public)} test inputs are in the public pre-training split (e.g. {', '.join(in_public[:_EXAMPLES])})"
        )
    if problems:
        return Finding("disjoint", False, "; ".join(problems), data)
    against = "train and public" if public is not None else "train"
    return Finding("disjoint", True, f"0 of {len(test_h)} test inputs in {against}", data)


# ------------------------------------------------------------------------------------------------ determinism


def check_determinism(
    first: Mapping[str, Sequence[str]], second: Mapping[str, Sequence[str]] | None, mode: str = ""
) -> Finding:
    """Two generations' per-split row digests must be equal; ``second`` None (or a str error) means none ran."""
    if not isinstance(second, Mapping):
        why = second if isinstance(second, str) else "no second generation"
        return Finding("determinism", False, f"second generation failed: {why}", {"mode": mode})
    for split in sorted(set(first) | set(second)):
        a, b = list(first.get(split, ())), list(second.get(split, ()))
        if a != b:
            i = next((j for j, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            detail = f"{split} differs from row {i} on ({len(a)} vs {len(b)} rows) when generated again"
            return Finding(
                "determinism", False, f"{detail} [{mode}]", {"mode": mode, "split": split, "row": i}
            )
    rows = sum(len(v) for v in first.values())
    return Finding("determinism", True, f"{rows} rows identical [{mode}]", {"mode": mode})


# ------------------------------------------------------------------------------------------------ driver


def generate_splits(
    spec: TaskSpec, sizes: Mapping[str, int], seed: int = 0, image_size: int = 32
) -> dict[str, list[dict[str, Any]]]:
    """A task's rows as ``drake build`` makes them: train, then test skipping rows identical to a train row."""
    from drake.data.generation import row_hash, synth_rows

    train = synth_rows(spec, "train", sizes["train"], seed, image_size)
    test = synth_rows(
        spec, "test", sizes["test"], seed, image_size, exclude_hashes={row_hash(r) for r in train}
    )
    return {"train": train, "test": test}


def generate_public(sizes: Mapping[str, int], seed: int = 0, image_size: int = 32) -> list[dict[str, Any]]:
    """Every row of the public pre-training split (all its splits) at these sizes."""
    from drake.data.generation import extra_rows

    return [r for split, n in sizes.items() for r in extra_rows("public", split, n, seed, image_size)]


def _digests(splits: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, list[str]]:
    return {split: [_row_digest(r) for r in rows] for split, rows in splits.items()}


def _job(args: tuple[Any, ...]) -> tuple[str, Any]:
    """One unit of work for the pool: a task's splits (or its error), or the public rows."""
    from drake.errors import DrakeError

    kind, payload, sizes, seed, image_size = args
    try:
        if kind == "public":
            return "public", generate_public(sizes, seed, image_size)
        return payload.name, generate_splits(payload, sizes, seed, image_size)
    except DrakeError as exc:
        return (payload.name if kind == "task" else "public"), exc


def _importable(spec: TaskSpec) -> str | None:
    """``module:qualname`` of the task's family when a fresh interpreter can import it, else None."""
    from drake.data.generation import task_family

    fn = task_family(spec)
    module, qual = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or module == "__main__" or "<" in qual:
        return None
    return f"{module}:{qual}"


def _second_generation(
    specs: Sequence[TaskSpec], sizes: Mapping[str, int], seed: int, image_size: int
) -> tuple[dict[str, Any], dict[str, str]]:
    """Row digests from a fresh interpreter with another PYTHONHASHSEED (in-process for unimportable families).

    Returns ({task: {split: [digest]} or an error string}, {task: how it was regenerated}).
    """
    fresh = [(s, t) for s in specs if (t := _importable(s))]
    local = [s for s in specs if not _importable(s)]
    out: dict[str, Any] = {}
    for spec in local:  # a family defined in a closure or __main__: regenerate here
        out[spec.name] = _digests(generate_splits(spec, sizes, seed, image_size))
    if fresh:
        payload = {
            "tasks": [
                {
                    "name": s.name,
                    "family": s.sources["synth"].family,
                    "target": target,
                    "params": dict(s.sources["synth"].params),
                    "images": s.images,
                    "answer": s.answer,
                }
                for s, target in fresh
            ],
            "sizes": dict(sizes),
            "seed": seed,
            "image_size": image_size,
        }
        env = dict(os.environ)
        current = env.get("PYTHONHASHSEED", "")
        env["PYTHONHASHSEED"] = str(((int(current) if current.isdigit() else 0) + 12345) % 4294967296)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
        proc = subprocess.run(
            [sys.executable, "-c", "from drake.data.audit import _child; _child()"],
            input=json.dumps(payload),
            capture_output=True,
            text=True,
            env=env,
        )
        if proc.returncode != 0:
            why = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
            out.update({s.name: why for s, _ in fresh})
        else:
            out.update(json.loads(proc.stdout))
    modes = {s.name: "same process: family not importable" for s in local}
    modes.update({s.name: "fresh interpreter, other PYTHONHASHSEED" for s, _ in fresh})
    return out, modes


def _child() -> None:
    """Entry of the second generation: read the job from stdin, print {task: {split: [digest]}} as JSON."""
    import drake.data.synth.families  # noqa: F401  (registers the real families)
    from drake.data.synth.base import FAMILIES
    from drake.errors import DrakeError
    from drake.spec import SourceSpec

    job = json.load(sys.stdin)
    out: dict[str, Any] = {}
    for t in job["tasks"]:
        if t["family"] not in FAMILIES:
            FAMILIES.register(t["family"], t["target"])
        spec = TaskSpec(
            name=t["name"],
            title=t["name"],
            images=t["images"],
            answer=t["answer"],
            metric="",
            sources={"synth": SourceSpec("synth", family=t["family"], params=t["params"])},
        )
        try:
            out[t["name"]] = _digests(generate_splits(spec, job["sizes"], job["seed"], job["image_size"]))
        except DrakeError as exc:
            out[t["name"]] = f"{type(exc).__name__}: {exc}"
    json.dump(out, sys.stdout)


def audit_tasks(
    specs: Sequence[TaskSpec],
    *,
    scale: float = 1.0,
    seed: int = 0,
    image_size: int = 32,
    public: bool = True,
    determinism: bool = True,
    tolerance: float = TOLERANCE,
    leak_tolerance: float = LEAK_TOLERANCE,
    workers: int | None = None,
) -> AuditReport:
    """Generate ``specs`` (and the public split) at ``scale`` and run every check on each task.

    A task whose generator fails gets failing findings naming the error instead of stopping the audit.
    """
    from drake.data.generation import PUBLIC_SIZES, split_sizes

    sizes = split_sizes(scale)
    specs = list({s.name: s for s in specs}.values())
    jobs: list[tuple[Any, ...]] = [("task", s, sizes, seed, image_size) for s in specs]
    if public:
        jobs.append(("public", None, split_sizes(scale, PUBLIC_SIZES), seed, image_size))
    if workers is None:
        workers = max(1, min(len(jobs), os.cpu_count() or 1))
    second: dict[str, Any] = {}
    modes: dict[str, str] = {}
    pool = None
    if workers > 1 and len(jobs) > 1 and "fork" in mp.get_all_start_methods():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            pool = mp.get_context("fork").Pool(min(workers, len(jobs)))
    try:
        results = pool.imap_unordered(_job, jobs) if pool else map(_job, jobs)
        generated = dict(results)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    ok_specs = [s for s in specs if isinstance(generated.get(s.name), dict)]
    if determinism and ok_specs:
        second, modes = _second_generation(ok_specs, sizes, seed, image_size)
    public_rows = generated.get("public") if public else None
    audits = []
    for spec in specs:
        got = generated[spec.name]
        if not isinstance(got, dict):
            audits.append(
                TaskAudit(spec.name, {}, {c: Finding(c, False, f"generation failed: {got}") for c in CHECKS})
            )
            continue
        findings = {
            "balance": _per_split(check_balance, got, tolerance),
            "leakage": _per_split(check_leakage, got, leak_tolerance),
            "disjoint": check_disjoint(
                got["train"], got["test"], public_rows if isinstance(public_rows, list) else None
            ),
        }
        if isinstance(public_rows, Exception):
            findings["disjoint"] = Finding("disjoint", False, f"public split failed: {public_rows}", {})
        if determinism:
            findings["determinism"] = check_determinism(
                _digests(got), second.get(spec.name), modes.get(spec.name, "")
            )
        audits.append(TaskAudit(spec.name, {k: len(v) for k, v in got.items()}, findings))
    params = {"scale": scale, "seed": seed, "image_size": image_size, "sizes": sizes, "tolerance": tolerance,
              "leak_tolerance": leak_tolerance, "public": public, "determinism": determinism}  # fmt: skip
    return AuditReport(params, audits)


def _per_split(check: Any, splits: Mapping[str, Sequence[Mapping[str, Any]]], tolerance: float) -> Finding:
    """``check`` on every split: the first failure (its detail prefixed by the split), else the test verdict."""
    found = {split: check(rows, tolerance) for split, rows in splits.items()}
    data = {split: f.data for split, f in found.items()}
    bad = [(split, f) for split, f in found.items() if not f.ok]
    if bad:
        split, f = bad[0]
        return Finding(f.check, False, f"{split}: {f.detail}", data)
    last = found.get("test") or list(found.values())[-1]
    return Finding(last.check, True, last.detail, data)
