"""The dataset card (README.md) of a built DRAKE-synth directory, and its per-task sample grids (issue [K].4).

``write_card`` is called by the build after every config, so it must stay cheap: per-file statistics are read
once per sha256 (from the ``choices``/``images`` columns only), tasks.yaml once per mtime, and the YAML header
is written by hand (every scalar JSON-quoted, which is valid YAML). ``save_grids`` draws a PNG of a few test
samples per task under ``<out>/grids/``, only where the PNG is missing or older than the task's test file.
The calibration table is an argument: the caller reads it (``drake.data.calibration``), not this module.
"""

from __future__ import annotations

import functools
import json
import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from drake.data.manifest import Manifest, split_order
from drake.errors import DrakeError
from drake.io import atomic_write_text
from drake.spec import TASKS_PATH, TaskSpec, load_tasks

CALIBRATE_COMMAND = "python benchmarks/calibrate_tasks.py"
GRIDS = "grids"
GRID_SAMPLES = 4
THUMB = 96  # px per image in a grid (32 px images, scaled x3 without smoothing)
LICENSES = ("apache-2.0", "mit")  # the generator code; easy-VQA images (easy_vqa, mantis_cc_0)
TASK_CATEGORIES = ("visual-question-answering", "multiple-choice", "image-text-to-text")
TAGS = ("synthetic", "multimodal", "federated-learning", "personalization", "continual-learning", "benchmark")
DASH = "—"


# ------------------------------------------------------------------------------------------------ inputs


@functools.lru_cache(maxsize=8)
def _tasks_at(path: str, _mtime_ns: int) -> dict[str, TaskSpec]:
    return dict(load_tasks(path))


def default_specs(path: str | Path | None = None) -> dict[str, TaskSpec]:
    """tasks.yaml's specs by name (cached until the file changes); empty when it cannot be read."""
    p = Path(path) if path else TASKS_PATH
    try:
        return _tasks_at(str(p), p.stat().st_mtime_ns)
    except (OSError, DrakeError):  # a broken tasks.yaml must not fail a build: the table shows dashes
        return {}


@functools.lru_cache(maxsize=1024)
def _file_stats(path: str, _sha256: str, images: bool = True) -> dict[str, Any]:
    """Choices per row (min, max; None if open), chance and, if ``images``, images per row (min, max) of one
    split file. The image column holds the image bytes: left unread when the spec gives the count."""
    # not pq.read_table: it imports pandas (via pyarrow.dataset) into every run
    with pq.ParquetFile(path) as f:
        table = f.read(columns=["images", "choices"] if images else ["choices"], use_threads=False)
    n_choice = pc.list_value_length(table["choices"])  # null where choices is None (open)
    valid = [k for k in n_choice.to_pylist() if k]
    out = {
        "rows": table.num_rows,
        "images": None,
        "choices": (min(valid), max(valid)) if valid else None,
        "chance": sum(1.0 / k for k in valid) / len(valid) if valid else None,
    }
    if images:
        n_img = pc.list_value_length(table["images"])
        out["images"] = (pc.min(n_img).as_py(), pc.max(n_img).as_py())
    return out


def split_stats(
    root: str | Path, entry: Mapping[str, Any], split: str = "test", spec: TaskSpec | None = None
) -> dict[str, Any] | None:
    """``_file_stats`` of one split of a manifest entry (images per row from ``spec`` when it is the spec the
    entry was built from), or None when its file is missing."""
    f = entry.get("files", {}).get(split)
    path = Path(root) / f["path"] if f else None
    if path is None or not path.is_file():
        return None
    known = spec is not None and spec.fingerprint() == entry.get("spec_fingerprint")
    stats = _file_stats(str(path), f.get("sha256", ""), not known)
    return {**stats, "images": (spec.images, spec.images)} if known else stats


def chance_level(choices: Sequence[Sequence[str] | None]) -> float | None:
    """Mean of 1/len(choices) over the rows (a uniform guess's accuracy); None when every row is open."""
    ks = [len(c) for c in choices if c]
    return sum(1.0 / k for k in ks) / len(ks) if ks else None


# ------------------------------------------------------------------------------------------------ card


def _size_category(n: int) -> str:
    for bound, name in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
    ):
        if n < bound:
            return name
    return "1M<n<10M"


def _format(stats: Mapping[str, Any] | None) -> str:
    if not stats:
        return DASH
    lo, hi = stats["images"]
    images = f"{lo} image{'s' if lo != 1 else ''}" if lo == hi else f"{lo}-{hi} images"
    if stats["choices"] is None:
        return f"{images}, open"
    clo, chi = stats["choices"]
    return f"{images}, {clo if clo == chi else f'{clo}-{chi}'}-way choice"


def _pct(x: float | None) -> str:
    return DASH if x is None else f"{100 * x:.1f}%"


def _counterpart(spec: TaskSpec | None) -> str:
    if spec is None:
        return DASH
    real = spec.sources.get("drake")
    where = f" ({real.dataset}, subset {real.subset})" if real and real.dataset else ""
    unseen = " *unseen*" if spec.unseen else ""
    return f"{spec.title}{where}{unseen}".replace("|", "/")


def _yaml_header(manifest: Manifest, total_rows: int, synth: bool) -> list[str]:
    q = json.dumps
    name, licenses = ("DRAKE-synth", LICENSES) if synth else ("DRAKE", ("other",))
    lines = [f"pretty_name: {q(name)}", "license:", *(f"- {q(x)}" for x in licenses), "language:", '- "en"']
    lines += ["task_categories:", *(f"- {q(x)}" for x in TASK_CATEGORIES)]
    lines += ["size_categories:", f"- {q(_size_category(total_rows))}", "tags:", *(f"- {q(x)}" for x in TAGS)]
    lines.append("configs:")
    for name, entry in manifest.configs().items():
        lines += [f"- config_name: {q(name)}", "  data_files:"]
        for split in split_order(entry["files"]):
            lines += [f"  - split: {q(split)}", f"    path: {q(f'{name}/{split}-*.parquet')}"]
    return lines


def render_card(
    manifest: Manifest | str | Path,
    *,
    specs: Mapping[str, TaskSpec] | None = None,
    calibration: Mapping[str, Any] | None = None,
) -> str:
    """README.md of a built directory: HF YAML header (configs, license, categories) and the task table.

    ``manifest``: a ``Manifest`` or a built directory. ``specs``: task specs by name (default tasks.yaml; a
    task not found there gets dashes). ``calibration``: the calibration table (``benchmarks/calibrate_tasks.py``'s
    output, read by the caller), or None for a card whose calibrated column shows dashes.
    """
    if not isinstance(manifest, Manifest):
        manifest = Manifest.read(manifest)
    root = Path(manifest.root)
    specs = default_specs() if specs is None else specs
    calib_tasks = (calibration or {}).get("tasks") or {}
    p = manifest.data.get("params", {})
    total = sum(
        f.get("rows", 0)
        for section in (manifest.tasks, manifest.extras)
        for entry in section.values()
        for f in entry["files"].values()
    )
    synth = p.get("source", "synth") == "synth"
    out = ["---", *_yaml_header(manifest, total, synth), "---", "# DRAKE-synth" if synth else "# DRAKE", ""]
    out += _INTRO if synth else _REAL_INTRO
    out += [
        "## This build",
        "",
        f"Built by `drake build` with {', '.join(f'{k}={v}' for k, v in p.items()) or 'default params'}; do not "
        "edit by hand (`manifest.json` holds every file's sha256, and this card is rewritten by every build).",
        "",
        "```python",
        "import datasets",
        'ds = datasets.load_dataset("<this dir>", "<task>", split="train")  # or split="test"',
        "```",
        "",
        "Every row: `{id, task, images: list[Image], prompt, choices: list[str] | None, answer}`, one `<image>` "
        "placeholder in the prompt per image; `choices` is None for open-ended tasks (scored by token F1).",
        "",
        "## Tasks",
        "",
        "Chance: the mean of 1/len(choices) over the test rows (a uniform guess). "
        + _calibration_note(calibration),
        "",
        "| task | real DRAKE counterpart | format | train | test | chance | calibrated acc. | samples |",
        "|---|---|---|---|---|---|---|---|",
    ]
    grids = []
    for name, entry in manifest.tasks.items():
        stats = split_stats(root, entry, "test", specs.get(name))
        files = entry["files"]
        grid = root / GRIDS / f"{name}.png"
        link = f"[grid]({GRIDS}/{name}.png)" if grid.is_file() else DASH
        if grid.is_file():
            grids.append(name)
        chance = DASH if not stats else ("open" if stats["choices"] is None else _pct(stats["chance"]))
        calibrated = calib_tasks.get(name)
        acc = _calibrated_cell(calibrated) if isinstance(calibrated, Mapping) else DASH
        out.append(
            f"| {name} | {_counterpart(specs.get(name))} | {_format(stats)} | "
            f"{files.get('train', {}).get('rows', DASH)} | {files.get('test', {}).get('rows', DASH)} | {chance} | "
            f"{acc} | {link} |"
        )
    others = {**manifest.extras, **manifest.scenarios}
    if others:
        out += ["", "## Other configs", "", "| config | kind | splits (rows) |", "|---|---|---|"]
        for name, entry in others.items():
            splits = ", ".join(f"{s} ({entry['files'][s]['rows']})" for s in split_order(entry["files"]))
            out.append(f"| {name} | {entry['kind']} | {splits} |")
    if grids:
        out += [
            "",
            "## Samples",
            "",
            f"The first test rows of each task (images enlarged to {THUMB} px, prompt, gold answer in green).",
            "",
        ]
        out += [f"### {name}\n\n![{name}]({GRIDS}/{name}.png)\n" for name in grids]
    out += _OUTRO if synth else []
    return "\n".join(out) + "\n"


def _calibrated_cell(r: Mapping[str, Any]) -> str:
    """Mean accuracy over the calibration's seeds, with their standard deviation when there were several."""
    cell = _pct(r.get("accuracy"))
    return f"{cell} ± {100 * r['sd']:.1f}" if len(r.get("accuracy_seeds") or ()) > 1 and "sd" in r else cell


# The calibration band: accuracy >= chance + BAND_LOW points and < BAND_HIGH percent.
BAND_LOW, BAND_HIGH = 10.0, 95.0


def band_verdict(r: Mapping[str, Any], low: float = BAND_LOW, high: float = BAND_HIGH) -> str:
    """ok, TOO HARD or TOO EASY for a calibration row; an open task's chance is 0 (F1 of a blind guess)."""
    acc, ch = 100 * r["accuracy"], 100 * (r.get("chance") or 0.0)
    if acc < ch + low:
        return "TOO HARD"
    return "TOO EASY" if acc >= high else "ok"


def _calibration_note(calib: Mapping[str, Any] | None) -> str:
    if not calib:
        return (
            f"Calibrated accuracy: {DASH} (no calibration table yet; produce it with `{CALIBRATE_COMMAND}`, "
            "which writes `benchmarks/results/calibration.json`, then run `drake build` again to refresh this card)."
        )
    budget = ", ".join(f"{k}={v}" for k, v in (calib.get("budget") or {}).items())
    note = (
        f"Calibrated accuracy: test accuracy of `{calib.get('model', '?')}` fine-tuned with a fresh LoRA adapter "
        f"on the task alone ({budget}), from `{calib.get('command', CALIBRATE_COMMAND)}`; with several seeds, "
        "the mean over them ± their standard deviation."
    )
    for update in calib.get("updated_by") or ():
        why = f" ({update['why']})" if update.get("why") else ""
        note += f" Re-run for {', '.join(update.get('tasks', ()))} with `{update.get('command', '?')}`{why}."
    band, tasks = calib.get("band") or {}, calib.get("tasks") or {}
    if band and tasks:
        low, high = band.get("min_points_above_chance", BAND_LOW), band.get("max_accuracy", BAND_HIGH)
        verdicts = {t: band_verdict(r, low, high) for t, r in tasks.items()}
        hard = sorted(t for t, v in verdicts.items() if v == "TOO HARD")
        solved = sorted(t for t, v in verdicts.items() if v == "TOO EASY")
        note += (
            f" {len(tasks) - len(hard) - len(solved)} of {len(tasks)} tasks are in the band the benchmark aims for: "
            f"at least {low:g} points above chance (learnable) and below {high:g}% (not solved)."
        )
        if hard:
            note += (
                f" Too hard for this model in this budget: {', '.join(hard)}. They need a step that this model does not "
                "learn in this budget (comparing pictures, pointing where the question says; where tried, most stayed "
                "at chance with ten times the steps, or with the whole text model trained); they score what a method "
                "or a larger model adds beyond it."
            )
        if solved:
            note += f" Solved: {', '.join(solved)}."
    return note


_INTRO = [
    "DRAKE-synth is the embedded, procedurally generated stand-in for **DRAKE**, the multi-modal personalized "
    "federated learning benchmark of the FedMosaic paper (40 tasks over 10 clients, plus 7 unseen tasks; the "
    "real data is SNUMPR/DRAKE, built from NLVR2, Fashion200K, IRFL, Bongard, Co-Instruct, WCVQA and more). "
    "Every task here keeps its real counterpart's interface: the same number of images per sample, the same "
    "answer kind and the real prompt formats (`Choice list:[...]`, lettered options, `Image A: <image>`, "
    "answer ids), so methods and the harness run unchanged on either. The pictures are 32 px scenes of one "
    "shared world (shapes, colours, textures, garments, icons, dishes, charts) drawn by 24 parametrised "
    "families, so tasks of nearby clients share concepts where the real benchmark has related tasks.",
    "",
    "Difficulty is calibrated against the tiny model zoo the harness ships: most answers rest on what such a "
    "model learns from 800 examples (colours, textures, icons, image quality, whether pictures look alike, "
    "options listed in a fixed order), mixed with items that need more (shapes, positions, relations between "
    "pictures), so a task is learnable but not solved. `benchmarks/learnability_probes.py` measures each of "
    "these skills on its own.",
    "",
    "It is a development benchmark: small enough to run every federated method on a CPU in minutes, "
    "deterministic in (task, split, index, seed), with answers balanced by construction and train/test "
    "disjoint by content (`drake audit` checks both, plus that no prompt gives its answer away). Its "
    "accuracies are not comparable with numbers on the real DRAKE.",
    "",
    "Build it (and a scenario's client streams) with:",
    "",
    "```bash",
    "drake build --scale 1.0 --scenario drake-dynamic   # -> .drake/data/drake-synth-s1-px32-seed0",
    "drake audit --scale 1.0                            # balance, leakage, disjointness, determinism",
    "```",
    "",
]
_REAL_INTRO = [
    "The real DRAKE benchmark (SNUMPR/DRAKE, from the FedMosaic paper) converted to DRAKE's canonical row "
    "schema by `drake build --source drake --from DIR`. Each task keeps the license of its source dataset "
    "(see `tasks.yaml`); the table's real counterpart column names it.",
    "",
]
_OUTRO = [
    "",
    "## License and sources",
    "",
    "The data is generated by the DRAKE code (Apache-2.0). The `easy_vqa` config and the images of "
    "`mantis_cc_0` come from the easy-VQA dataset (MIT, Victor Zhou). No image or text of the real DRAKE "
    "datasets is included; their own licenses (listed per task in `tasks.yaml`) apply only to the real data.",
]


# ------------------------------------------------------------------------------------------------ grids


def _wrap(text: str, font: Any, width: int, max_lines: int = 7) -> list[str]:
    char = max(1.0, font.getlength("abcdefghijklmnopqrstuvwxyz") / 26)
    cols = max(10, int(width / char))
    lines: list[str] = []
    for para in text.splitlines() or [""]:
        lines += textwrap.wrap(para, cols) or [""]
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + [lines[max_lines - 1][: cols - 3] + "..."]
    return lines


def render_grid(rows: Sequence[Mapping[str, Any]], title: str = "", thumb: int = THUMB) -> Any:
    """A PIL image: per row, its images side by side (scaled to ``thumb``), then its prompt and answer."""
    import io

    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=11)
    pad, line = 6, 14
    n_img = max([len(r["images"]) for r in rows] + [1])
    width = max(n_img * (thumb + pad) + pad, 520)
    blocks = []
    for r in rows:
        imgs = [Image.open(io.BytesIO(im["bytes"])).convert("RGB") for im in r["images"]]
        text = _wrap(r["prompt"], font, width - 2 * pad) + _wrap(
            f"answer: {r['answer']}", font, width - 2 * pad, 2
        )
        blocks.append((imgs, text))
    height = line + 2 * pad + sum((thumb + pad if b[0] else 0) + len(b[1]) * line + 2 * pad for b in blocks)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(canvas)
    y = pad
    d.text((pad, y), title, fill=(0, 0, 0), font=font)
    y += line + pad
    for imgs, text in blocks:
        d.line((0, y - pad // 2, width, y - pad // 2), fill=(200, 200, 200))
        for i, im in enumerate(imgs):
            canvas.paste(im.resize((thumb, thumb), Image.NEAREST), (pad + i * (thumb + pad), y))
        y += thumb + pad if imgs else 0
        for k, t in enumerate(text):
            color = (0, 110, 0) if t.startswith("answer:") and k >= len(text) - 2 else (30, 30, 30)
            d.text((pad, y), t, fill=color, font=font)
            y += line
        y += 2 * pad
    return canvas


def write_card(manifest: Manifest, *, calibration: Mapping[str, Any] | None = None) -> None:
    """Write the dataset card: the sample grids that are missing or stale, then README.md (atomically)."""
    save_grids(manifest)  # only grids missing or older than their task's test file
    atomic_write_text(Path(manifest.root) / "README.md", render_card(manifest, calibration=calibration))


def save_grids(
    manifest: Manifest | str | Path,
    tasks: Sequence[str] | None = None,
    *,
    samples: int = GRID_SAMPLES,
    force: bool = False,
) -> list[Path]:
    """Write ``<out>/grids/<task>.png`` for ``tasks`` (default: every built task) from the first test rows.

    Skips a grid newer than its test file unless ``force``; returns the paths written.
    """
    if not isinstance(manifest, Manifest):
        manifest = Manifest.read(manifest)
    root = Path(manifest.root)
    written = []
    for name in tasks if tasks is not None else list(manifest.tasks):
        entry = manifest.tasks.get(name)
        f = (entry or {}).get("files", {}).get("test")
        src = root / f["path"] if f else None
        if src is None or not src.is_file():
            continue
        dest = root / GRIDS / f"{name}.png"
        if not force and dest.is_file() and dest.stat().st_mtime_ns >= src.stat().st_mtime_ns:
            continue
        batches = pq.ParquetFile(src).iter_batches(batch_size=samples, columns=["prompt", "images", "answer"])
        rows = next(batches).to_pylist()[:samples]
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        render_grid(rows, title=name).save(tmp, format="PNG")
        os.replace(tmp, dest)
        written.append(dest)
    return written
