"""Convert the real SNUMPR/DRAKE release into the canonical parquet configs DRAKE-synth builds use.

The release ships one ``<Dataset>.tar`` per source dataset; untarred, ``<root>/<Dataset>/{train,test}/
dataset-<subset>.json`` hold LLaVA-style samples (``image`` a path or a list of paths starting with
``dataset/<Dataset>/``, ``conversations`` = [human prompt, gpt answer]). There is no structured choices
field: the options live in the prompt text, in a handful of spellings (drake_format.md §4), so they are
re-derived here in the official eval's precedence order and kept only when the gold answer is one of them.

Reading happens in two passes so a bad release never leaves anything half-written: pass 1 parses every
asked-for JSON and checks that every referenced image exists (nothing is written yet); pass 2 streams rows
with the image bytes into each config through ``write.write_config`` (temp dir, then rename).
Row ids carry the source position ``<Dataset>-<subset>-<split>-<index>`` because real ids are not unique.

Policies: open-ended tasks get ``choices: None`` like synth rows; a prompt without any ``<image>`` gets one per
image put in front (the LLaVA convention); a row whose placeholder count cannot be matched to its images is
dropped and counted in the manifest (the official LLaVA code raises on such rows); a task left with no rows,
a missing image, bad JSON or unrecoverable choices is a one-line DataError naming the file and row.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from drake.data.calibration import load_calibration
from drake.data.manifest import MANIFEST, Manifest
from drake.data.schema import FORMAT_VERSION, check_config_names, validate_row
from drake.data.stream_files import build_scenario
from drake.data.write import clean_tmp, write_config
from drake.errors import DataError, did_you_mean
from drake.io import sha256_file
from drake.paths import drake_home
from drake.spec import ScenarioSpec, TaskSpec, fingerprint

HUB_REPO = "SNUMPR/DRAKE"
SPLITS = ("train", "test")
IMAGE_TOKEN = "<image>"
# the release's dataset folders (= tar names), case-sensitive and irregular (drake_format.md §2, §6)
DATASETS = (
    "Bongard-HOI", "Bongard-OpenWorld", "CIRR", "COMICS_Dialogue", "Co-Instruct-DB", "DreamSim",
    "Fashion200K", "FashionIQ", "HQ_Edit", "IRFL", "MIT-States", "MagicBrush", "Mantis_contrastive_caption",
    "NLVR2", "RecipeQA_ImageCoherence", "RecipeQA_VisualCloze", "SEED-Bench-2", "TQA", "VISION", "VSR",
    "VizWiz", "WCVQA", "dvqa", "iconqa", "imagecode",
)  # fmt: skip
MAX_EXAMPLES = 3  # offending rows named per problem in the manifest report


# ------------------------------------------------------------------------------------------------ locating


def download_hint(dataset: str, root: Path | str = "DIR") -> str:
    """The two commands that fetch and unpack one dataset of the release into ``root``."""
    return (
        f"huggingface-cli download {HUB_REPO} {dataset}.tar --repo-type dataset --local-dir {root} "
        f"&& tar -xf {root}/{dataset}.tar -C {root}"
    )


def release_root(from_dir: str | Path) -> Path:
    """The folder holding the ``<Dataset>/`` folders: ``DIR/dataset`` (official repo layout) or ``DIR``."""
    base = Path(from_dir).expanduser()
    if not base.is_dir():
        raise DataError(
            f"--from {base}: no such directory; download the release there first: "
            f"{download_hint('<Dataset>', base)}"
        )
    return base / "dataset" if (base / "dataset").is_dir() else base


def default_release_dir() -> Path:
    """``$DRAKE_HOME/data/drake-real``: where a converted release goes without ``--out``."""
    return drake_home() / "data" / "drake-real"


def drake_source(spec: TaskSpec) -> tuple[str, int]:
    """``(dataset, subset)`` of a task's ``sources.drake`` entry in tasks.yaml."""
    src = spec.sources.get("drake")
    if src is None or src.dataset is None or src.subset is None:
        raise DataError(f"task {spec.name!r} has no 'drake: {{dataset, subset}}' source in tasks.yaml")
    return src.dataset, src.subset


def source_file(root: Path, dataset: str, subset: int, split: str, task: str = "") -> Path:
    """``<root>/<dataset>/<split>/dataset-<subset>.json``, or a DataError saying what to download or fix."""
    for_task = f" (task {task!r})" if task else ""
    folder = root / dataset
    if not folder.is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        same = [p for p in present if p.lower() == dataset.lower()]
        if same:
            raise DataError(
                f"{folder} not found{for_task}, but {same[0]!r} is (folder names are case-sensitive); "
                f"fix sources.drake.dataset in tasks.yaml"
            )
        tar = root / f"{dataset}.tar"
        if tar.is_file():
            raise DataError(f"{tar} is not extracted{for_task}; run: tar -xf {tar} -C {root}")
        if dataset not in DATASETS:
            raise DataError(
                f"unknown DRAKE dataset {dataset!r}{for_task}{did_you_mean(dataset, [*DATASETS, *present])}; "
                f"fix sources.drake.dataset in tasks.yaml (release folders: {', '.join(DATASETS)})"
            )
        raise DataError(f"{folder} not found{for_task}; download it: {download_hint(dataset, root)}")
    path = folder / split / f"dataset-{subset}.json"
    if path.is_file():
        return path
    available = sorted(
        int(m.group(1))
        for p in (folder / split).glob("dataset-*.json")
        if (m := re.fullmatch(r"dataset-(\d+)\.json", p.name))
    )
    if not available:
        raise DataError(
            f"{path} not found{for_task}: {folder / split} holds no dataset-*.json; re-extract {dataset}.tar "
            f"({download_hint(dataset, root)})"
        )
    raise DataError(
        f"unknown subset {subset} of {dataset}{for_task}: {path} not found; available subsets: "
        f"{', '.join(map(str, available))} (fix sources.drake.subset in tasks.yaml)"
    )


def locate_tasks(tasks: Sequence[TaskSpec], root: Path) -> dict[str, dict[str, Path]]:
    """Each task's train/test files; one DataError for all that are absent (the first in full, the rest named),
    so a partial download is diagnosed in one run."""
    located, problems = {}, []
    for spec in tasks:
        try:
            dataset, subset = drake_source(spec)
            located[spec.name] = {
                split: source_file(root, dataset, subset, split, spec.name) for split in SPLITS
            }
        except DataError as exc:
            problems.append((spec.name, str(exc)))
    if len(problems) > 1:
        rest = ", ".join(name for name, _ in problems[1:])
        raise DataError(
            f"{problems[0][1]}; {len(problems) - 1} more tasks cannot be located either ({rest}): download their "
            "tars, or pass --tasks with the ones you have"
        )
    if problems:
        raise DataError(problems[0][1])
    return located


def read_samples(path: Path, blob: bytes | None = None) -> list[dict[str, Any]]:
    """The JSON list of samples in ``path`` (``blob``: its bytes, if already read)."""
    dataset = path.parent.parent.name
    try:
        data = json.loads(path.read_bytes() if blob is None else blob)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: invalid JSON (line {exc.lineno} column {exc.colno}: {exc.msg}); "
            f"re-extract {dataset}.tar"
        ) from exc
    except ValueError as exc:  # undecodable bytes
        raise DataError(f"{path}: not UTF-8 JSON ({exc}); re-extract {dataset}.tar") from exc
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of samples, got a {type(data).__name__}")
    return data


# ------------------------------------------------------------------------------------------------ one sample


def image_paths(sample: dict[str, Any], root: Path, dataset: str, where: str) -> list[Path]:
    """The sample's image files under ``root``: ``image`` is a path or a list of paths from the repo root."""
    raw = sample.get("image")
    if raw is None:
        raise DataError(f"{where}: sample has no 'image' key (every DRAKE sample has images)")
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(p, str) and p.strip() for p in items):
        raise DataError(f"{where}: 'image' must be a path or a list of paths, got {raw!r:.80}")
    out = []
    for item in items:
        rel = PurePosixPath(item.strip().removeprefix("./").removeprefix("dataset/"))
        if not rel.parts or rel.is_absolute() or ".." in rel.parts:
            raise DataError(f"{where}: image path {item!r} points outside the download folder")
        first = root / rel
        # the release always writes 'dataset/<D>/...'; a path relative to the dataset folder is accepted too
        out.append(first if first.exists() or rel.parts[0] == dataset else root / dataset / rel)
    return out


def prompt_and_answer(sample: dict[str, Any], where: str) -> tuple[str, str]:
    """``conversations[0].value`` (kept byte for byte) and ``str(conversations[1].value)``, as the official
    loaders do (ints occur; a JSON ``true`` would read "True")."""
    conv = sample.get("conversations")
    if not isinstance(conv, list) or len(conv) < 2 or not all(isinstance(t, dict) for t in conv[:2]):
        raise DataError(f"{where}: 'conversations' must be a list of a human turn then a gpt turn")
    prompt, gold = conv[0].get("value"), conv[1].get("value")
    if not isinstance(prompt, str):
        raise DataError(f"{where}: the prompt (conversations[0].value) must be a string, got {prompt!r:.60}")
    if not isinstance(gold, (str, int, float)) or not str(gold).strip():
        raise DataError(f"{where}: the answer (conversations[1].value) must be a non-empty string or number")
    return prompt, str(gold)


def match_image_tags(prompt: str, n_images: int) -> tuple[str, str]:
    """The prompt to keep and its status: ``ok``; ``prepended`` (no placeholder at all, so one per image is
    put in front, the LLaVA convention); or ``mismatch`` (a count the images cannot be matched to)."""
    n = prompt.count(IMAGE_TOKEN)
    if n == n_images:
        return prompt, "ok"
    if n == 0:
        return IMAGE_TOKEN * n_images + "\n" + prompt, "prepended"
    return prompt, "mismatch"


# ------------------------------------------------------------------------------------------------ choices


class ChoiceError(ValueError):
    """The prompt's options could not be recovered (the caller names the file and row)."""


@dataclass(frozen=True)
class Choices:
    """Options recovered from a prompt, the answer spelled as its option, and how they were found."""

    items: list[str]
    answer: str
    style: str
    notes: frozenset[str] = frozenset()  # respelled | deduplicated | anchored | unquoted


# Bracketed lists in the official eval's order (drake_format.md §5): the DRAKE-appended lower-case list
# (with or without a space, also "Choice lists:"), then "Choice List: [..]", then a bare "\n[..]\n" line.
# DEMON prompts also hold their own quoted "Choice List:['a','b']"; the lower-case list wins over it.
_LISTS = (
    ("choice_list", re.compile(r"Choice lists?: ?\[(.*?)\]", re.S)),
    ("Choice_List", re.compile(r"Choice List: ?\[(.*?)\]", re.S)),
    ("bare_list", re.compile(r"\n\[(.*?)\]\n", re.S)),
)
_PIPE_LABEL = re.compile(r"\s*([A-Z])\s*[:.)]")  # COMICS: "A: x| B: y| C: z" -> letters
_LETTER_LINE = re.compile(r"^[ \t]*([A-Z])\.[ \t]", re.M)  # SEED-Bench-2, Co-Instruct 0/1: "\nA. x\nB. y"
_IMAGE_LABEL = re.compile(r"(?<![A-Za-z])Image ([A-Z]|\d+) ?:")  # "Image A: <image>, Image B: <image>"
_IMAGE_ITEM = re.compile(r"^(Image (?:[A-Z]|\d+))\b")
# "a, b" (most lists), then "a,b" (IRFL-3, Mantis), where an item may itself hold ", " ("easy come, easy go")
_SEPARATORS = (re.compile(", "), re.compile(",(?! )"))
_NUMBER_LINE = re.compile(r"^[ \t]*(\d+)[.):][ \t]", re.M)
WCVQA_MARKER = "Print only the answer with a single answer id"


def _respell(answer: str, items: Sequence[str]) -> str | None:
    """``answer`` as one of ``items``: exact, else stripped, else the one case-insensitive match (the
    official scorer compares lower-cased), else None."""
    if answer in items:
        return answer
    stripped = answer.strip()
    if stripped in items:
        return stripped
    same = [c for c in items if c.lower() == stripped.lower()]
    return same[0] if len(same) == 1 else None


def _unquote(items: list[str], answer: str) -> tuple[list[str], bool]:
    """Strip quotes from a quoted list (``'0','1'``) when the answer itself is unquoted (official step 2)."""
    quoted = [len(c) >= 2 and c[0] == c[-1] and c[0] in "'\"" for c in items]
    if any(quoted) and answer.strip()[:1] not in ("'", '"'):
        return [c[1:-1].strip() if q else c for c, q in zip(items, quoted)], True
    return items, False


def _split_list(content: str, answer: str) -> tuple[list[str], set[str]] | None:
    """The items of one bracketed list, or None when the answer is not among them however it is split."""
    parts = content.split("|")
    if len(parts) >= 2:
        labels = [_PIPE_LABEL.match(p) for p in parts]
        if all(labels):
            return [m.group(1) for m in labels if m], set()
        if len(parts) > 2:  # the official rule: more than two "|" parts are lettered options
            return [chr(65 + i) for i in range(len(parts))], set()
    for sep in _SEPARATORS:
        items, unquoted = _unquote([p.strip() for p in sep.split(content)], answer)
        if _respell(answer, items) is not None:
            return items, {"unquoted"} if unquoted else set()
    text, gold = content.strip(), answer.strip()
    at = (", " + text + ", ").find(", " + gold + ", ")
    if ", " in gold and at >= 0:  # the answer itself holds ", ": split the rest of the list around it
        before, after = text[: max(at - 2, 0)], text[at + len(gold) + 2 :]
        rest = [[p.strip() for p in part.split(", ") if p.strip()] for part in (before, after)]
        return [*rest[0], gold, *rest[1]], {"anchored"}
    items = [p.strip() for p in content.split(",")]
    if items and all(_IMAGE_ITEM.match(c) for c in items):  # "Image A: <image>" items -> "Image A"
        return [m.group(1) for c in items if (m := _IMAGE_ITEM.match(c))], set()
    return None


def _letter_options(prompt: str) -> list[str]:
    """Letters of line-initial ``A. x`` options, in order from A while consecutive."""
    letters: list[str] = []
    for m in _LETTER_LINE.finditer(prompt):
        if m.group(1) == chr(65 + len(letters)):
            letters.append(m.group(1))
    return letters


def _candidates(prompt: str, answer: str) -> Iterator[tuple[str, list[str] | None, set[str]]]:
    """Every option list the prompt offers, best first: ``(style, items or None if unusable, notes)``."""
    for style, pattern in _LISTS:
        for m in pattern.finditer(prompt):
            split = _split_list(m.group(1), answer)
            yield (style, *split) if split else (f"{style} [{m.group(1):.80}]", None, set())
    letters = _letter_options(prompt)
    if letters:
        yield "letters", letters, set()
    labels = list(dict.fromkeys(f"Image {m.group(1)}" for m in _IMAGE_LABEL.finditer(prompt)))
    if labels:
        yield "image_labels", labels, set()
    if WCVQA_MARKER in prompt:
        numbers = list(dict.fromkeys(m.group(1) for m in _NUMBER_LINE.finditer(prompt)))
        yield "answer_id", numbers if len(numbers) >= 2 else [str(i) for i in range(1, 6)], set()


def parse_choices(prompt: str, answer: str) -> Choices:
    """The options a multiple-choice prompt offers, in prompt order; the first option list (in the
    official eval's precedence) that holds the gold answer wins. Raises ChoiceError when none does."""
    seen: list[str] = []
    for style, items, notes in _candidates(prompt, answer):
        if items is None:
            seen.append(style)
            continue
        unique = list(dict.fromkeys(items))
        gold = _respell(answer, unique)
        if gold is None or len(unique) < 2:
            seen.append(f"{style} {unique!r:.80}")
            continue
        notes = set(notes)
        if len(unique) < len(items):
            notes.add("deduplicated")
        if gold != answer:
            notes.add("respelled")
        return Choices(unique, gold, style, frozenset(notes))
    if not seen:
        raise ChoiceError("no options in the prompt ('Choice list:[..]', 'A. ..' lines or 'Image A:' labels)")
    raise ChoiceError(f"answer {answer!r:.60} is not among the options found ({'; '.join(seen)})")


# ------------------------------------------------------------------------------------------------ one task


@dataclass(frozen=True)
class SourceRow:
    """One usable sample of a release file, before its images are read."""

    index: int
    prompt: str
    answer: str
    choices: list[str] | None
    images: tuple[Path, ...]


@dataclass
class SplitPlan:
    """A parsed ``dataset-<k>.json``: its usable rows and what was repaired or dropped (for the manifest)."""

    path: Path
    sha256: str
    rows: list[SourceRow] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskPlan:
    spec: TaskSpec
    dataset: str
    subset: int
    splits: dict[str, SplitPlan]
    warnings: list[str]


# what a split's report counts, as the warning line words it
REPORT_KINDS = {
    "dropped_image_tag_mismatch": "dropped: their <image> placeholders cannot be matched to their images",
    "image_tags_prepended": "had no <image> placeholder: one per image was put in front",
    "choices_respelled": "had the answer respelled as its option (stripped or case-folded)",
    "choices_deduplicated": "had duplicate options removed",
    "choices_anchored": "had options holding the separator: the list was split around the answer",
    "choices_unquoted": "had quoted options: quotes were stripped",
}


def _note(report: dict[str, Any], kind: str, example: str) -> None:
    counts = report.setdefault("counts", {})
    counts[kind] = counts.get(kind, 0) + 1
    examples = report.setdefault("examples", {}).setdefault(kind, [])
    if len(examples) < MAX_EXAMPLES:
        examples.append(example)


def parse_row(
    sample: Any, index: int, *, spec: TaskSpec, root: Path, path: Path, report: dict[str, Any]
) -> tuple[SourceRow | None, str]:
    """One sample as a SourceRow (None when dropped) and its choice style; repairs are noted in ``report``."""
    where, at = f"{path}[{index}]", f"{report['file']}[{index}]"
    if not isinstance(sample, dict):
        raise DataError(f"{where}: a sample must be a JSON object, got {type(sample).__name__}")
    prompt, gold = prompt_and_answer(sample, where)
    images = image_paths(sample, root, path.parent.parent.name, where)
    prompt, tags = match_image_tags(prompt, len(images))
    if tags == "mismatch":
        n_tags = prompt.count(IMAGE_TOKEN)
        _note(report, "dropped_image_tag_mismatch", f"{at}: {n_tags} {IMAGE_TOKEN} for {len(images)} images")
        return None, ""
    if tags == "prepended":
        _note(report, "image_tags_prepended", at)
    choices, style = None, ""
    if spec.answer == "choice":
        try:
            parsed = parse_choices(prompt, gold)
        except ChoiceError as exc:
            raise DataError(f"{where}: task {spec.name!r}: cannot recover the choices: {exc}") from None
        choices, gold, style = parsed.items, parsed.answer, parsed.style
        for note in sorted(parsed.notes):
            _note(report, f"choices_{note}", at)
    row = SourceRow(index, prompt, gold, choices, tuple(images))
    stub = {
        "id": at,
        "task": spec.name,
        "images": row.images,
        "prompt": prompt,
        "choices": choices,
        "answer": gold,
    }
    validate_row(stub, answer=spec.answer)  # the same invariants as synth rows
    return row, style


def parse_split(spec: TaskSpec, root: Path, path: Path, blob: bytes) -> SplitPlan:
    """Pass 1 for one file: parse every sample, recover choices, check that every image file exists."""
    plan = SplitPlan(path, hashlib.sha256(blob).hexdigest())
    report: dict[str, Any] = {"file": path.relative_to(root).as_posix()}
    images_per_row: Counter[int] = Counter()
    styles: Counter[str] = Counter()
    samples = read_samples(path, blob)
    for i, sample in enumerate(samples):
        row, style = parse_row(sample, i, spec=spec, root=root, path=path, report=report)
        if row is not None:
            plan.rows.append(row)
            images_per_row[len(row.images)] += 1
            styles[style] += bool(style)
    check_images_exist(plan, root)
    if not plan.rows:
        why = "it has no samples" if not samples else f"none of its {len(samples)} samples has usable images"
        raise DataError(f"{path}: task {spec.name!r} would be empty: {why} ({IMAGE_TOKEN} count vs 'image')")
    per_row = dict(sorted(images_per_row.items()))
    report.update(rows_in=len(samples), rows=len(plan.rows), images_per_row=per_row)
    if +styles:
        report["choice_styles"] = dict((+styles).most_common())
    plan.report = report
    return plan


def check_images_exist(plan: SplitPlan, root: Path) -> None:
    """A DataError naming the first missing image file (and how many more) of the split's kept rows."""
    missing = [(row.index, p) for row in plan.rows for p in row.images if not p.is_file()]
    if missing:
        (index, first), dataset = missing[0], plan.path.parent.parent.name
        more = f" (and {len(missing) - 1} more in this file)" if len(missing) > 1 else ""
        raise DataError(
            f"image {first} not found ({plan.path}[{index}]){more}; re-extract {dataset}.tar "
            f"({download_hint(dataset, root)})"
        )


def task_warnings(spec: TaskSpec, splits: dict[str, SplitPlan]) -> list[str]:
    """One line per thing a user should know: dropped or repaired rows, image counts unlike tasks.yaml."""
    out = []
    for split, plan in splits.items():
        for kind, n in plan.report.get("counts", {}).items():
            first = plan.report["examples"][kind][0]
            what = REPORT_KINDS.get(kind, kind)
            out.append(f"{spec.name} {split}: {n} of {plan.report['rows_in']} rows {what} (e.g. {first})")
    per_row: Counter[int] = Counter()
    for plan in splits.values():
        per_row.update(plan.report["images_per_row"])
    common = per_row.most_common(1)[0][0]
    if common != spec.images:
        dataset, subset = drake_source(spec)
        out.append(
            f"{spec.name}: most rows have {common} images but tasks.yaml declares images: {spec.images}; "
            f"check that {dataset} subset {subset} is this task (drake_format.md §6)"
        )
    return out


def plan_task(spec: TaskSpec, root: Path, files: dict[str, Path], blobs: dict[str, bytes]) -> TaskPlan:
    """Pass 1 for one task: both splits parsed and checked, nothing written."""
    dataset, subset = drake_source(spec)
    splits = {split: parse_split(spec, root, files[split], blobs[split]) for split in SPLITS}
    return TaskPlan(spec, dataset, subset, splits, task_warnings(spec, splits))


def load_image(path: Path, where: str) -> dict[str, Any]:
    """The file's bytes as an embedded HF image (the original encoding, checked to decode)."""
    from PIL import Image as PILImage

    data = path.read_bytes()
    try:
        with PILImage.open(io.BytesIO(data)) as img:
            img.verify()
    except Exception as exc:
        raise DataError(f"image {path} does not decode ({where}): {exc}; re-extract its tar") from None
    return {"bytes": data, "path": None}


def canonical_rows(plan: TaskPlan, split: str) -> Iterator[dict[str, Any]]:
    """Pass 2: the split's canonical rows with image bytes, read lazily (the writer streams them)."""
    sp = plan.splits[split]
    for row in sp.rows:
        where = f"{sp.path}[{row.index}]"
        yield {
            "id": f"{plan.dataset}-{plan.subset}-{split}-{row.index:05d}",
            "task": plan.spec.name,
            "images": [load_image(p, where) for p in row.images],
            "prompt": row.prompt,
            "choices": row.choices,
            "answer": row.answer,
        }


# -------------------------------------------------------------------------------------------- whole release


def _check_source(manifest: Manifest | None, out: Path) -> None:
    source = manifest.data.get("params", {}).get("source") if manifest else None
    if manifest and manifest.configs() and source != "drake":
        raise DataError(
            f"{out} holds a DRAKE-{source} build; convert the real release into another --out directory"
        )


def convert_release(
    tasks: Sequence[TaskSpec],
    from_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    scenarios: Sequence[ScenarioSpec] = (),
    seed: int = 0,
    force: bool = False,
    progress: bool = False,
) -> Manifest:
    """Convert ``tasks`` (each with a ``drake`` source) from the untarred release in ``from_dir``.

    Every file is checked before anything is written; a task whose source JSONs, tasks.yaml entry and
    converter code are unchanged (and whose parquet files match their sha256) is kept as it is. Repairs and
    dropped rows are counted per split in the manifest entry's ``report`` and listed in ``warnings``.
    ``scenarios`` adds client streams cut from the converted train rows, as for synth builds.
    """
    from filelock import FileLock
    from tqdm.auto import tqdm

    root = release_root(from_dir)
    out = Path(out_dir) if out_dir else default_release_dir()
    tasks = list({t.name: t for t in tasks}.values())
    check_config_names(tasks, [], scenarios)
    names = {t.name for t in tasks}
    for scenario in scenarios:
        missing = [t for t in scenario.tasks if t not in names]
        if missing:
            raise DataError(
                f"scenario {scenario.name!r} needs tasks that are not converted: {', '.join(missing)}; add them"
            )
    existing = Manifest.read(out) if (out / MANIFEST).is_file() else None
    _check_source(existing, out)
    code = sha256_file(Path(__file__))  # this file only: layout changes bump FORMAT_VERSION

    plans: list[TaskPlan] = []
    entries: dict[str, dict[str, Any]] = {}
    located = locate_tasks(tasks, root)
    for spec in tasks:  # pass 1: hash, parse; raises before anything is written
        dataset, subset = drake_source(spec)
        files = located[spec.name]
        blobs = {split: path.read_bytes() for split, path in files.items()}
        inputs = {
            split: {"path": path.relative_to(root).as_posix(), "sha256": hashlib.sha256(blob).hexdigest()}
            for (split, path), blob in zip(files.items(), blobs.values())
        }
        entry = {
            "kind": "task",
            "source": "drake",
            "dataset": dataset,
            "subset": subset,
            "spec_fingerprint": spec.fingerprint(),
            "code": code,
            "inputs": inputs,
        }
        entry["key"] = fingerprint([FORMAT_VERSION, entry])
        entries[spec.name] = entry
        if force or not existing or not existing.fresh(existing.tasks.get(spec.name), entry["key"]):
            plans.append(plan_task(spec, root, files, blobs))

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the data directory {out}: {exc.strerror}") from exc
    with FileLock(str(out / ".build.lock")):  # pass 2: write
        clean_tmp(out)
        manifest = Manifest.read(out)
        _check_source(manifest, out)
        manifest.data.update(format_version=FORMAT_VERSION, params={"source": "drake", "from": str(root)})
        planned = {p.spec.name for p in plans}
        for spec in tasks:
            if spec.name not in planned:
                manifest.status[spec.name] = "cached"
        bar = tqdm(total=len(plans) + len(scenarios), desc="drake convert", unit="config",
                   disable=not progress or not (plans or scenarios))  # fmt: skip
        try:
            for plan in plans:
                name = plan.spec.name
                written = write_config(out, name, {split: canonical_rows(plan, split) for split in SPLITS})
                manifest.tasks[name] = {
                    **entries[name],
                    "files": written,
                    "report": {split: sp.report for split, sp in plan.splits.items()},
                    "warnings": plan.warnings,
                }
                manifest.status[name] = "built"
                _save(manifest)
                bar.update(1)
            for scenario in scenarios:
                build_scenario(out, scenario, manifest, seed, force)
                _save(manifest)
                bar.update(1)
        finally:
            bar.close()
        _save(manifest)
    return manifest


def _save(manifest: Manifest) -> None:
    """manifest.json, then the dataset card with the calibration table of the checkout (when it has one)."""
    from drake.data.card import write_card  # imported when first written: pyarrow.compute is ~8 MB of RSS

    manifest.write()
    write_card(manifest, calibration=load_calibration())


def ensure_converted(tasks: Sequence[TaskSpec], out_dir: str | Path | None = None) -> Path:
    """The converted directory holding ``tasks`` (from their current drake sources), else a DataError
    saying how to convert them; used by the harness for scenarios with ``source: drake``."""
    out = Path(out_dir) if out_dir else default_release_dir()
    how = f"run `drake build --source drake --from DIR --out {out}`"
    if not (out / MANIFEST).is_file():
        raise DataError(f"{out}: no converted DRAKE release here; {how} first")
    manifest = Manifest.read(out)
    if manifest.data.get("params", {}).get("source") != "drake":
        raise DataError(f"{out} is not a converted DRAKE release (a synth build?); {how}")
    stale = []
    for spec in tasks:
        entry = manifest.tasks.get(spec.name) or {}
        ok = (entry.get("dataset"), entry.get("subset")) == drake_source(spec) and all(
            (out / f["path"]).is_file() for f in entry.get("files", {}).values()
        )
        if not ok or set(entry.get("files", {})) != set(SPLITS):
            stale.append(spec.name)
    if stale:
        names = " ".join(stale)
        raise DataError(f"{out}: tasks not converted (or stale): {names}; {how} --tasks {names}")
    return out
