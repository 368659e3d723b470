"""The canonical row of every built config, its ``datasets`` schemas, and the names a config may take.

Every task, extra and converted real task is stored as ``{id, task, images, prompt, choices, answer}``, so
methods never special-case a task; a client stream adds ``round``, ``stage`` and ``source_id``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from drake.errors import DataError

if TYPE_CHECKING:
    from datasets import Features

    from drake.spec import ScenarioSpec, TaskSpec

FORMAT_VERSION = 1  # bump when the row schema or the file layout changes
COLUMNS = ("id", "task", "images", "prompt", "choices", "answer")  # a canonical row, in row_features()' order

_CONFIG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@functools.cache
def row_features() -> Features:
    """The ``datasets`` schema of a canonical row: built on first use, as importing ``datasets``
    costs ~50 MB of RSS that a run (which reads its rows with ``read_split``) never needs."""
    from datasets import Features, Image, List, Value

    return Features(
        {
            "id": Value("string"),
            "task": Value("string"),
            "images": List(Image()),
            "prompt": Value("string"),
            "choices": List(Value("string")),  # None for open-ended tasks
            "answer": Value("string"),
        }
    )


@functools.cache
def stream_features() -> Features:
    """The ``datasets`` schema of a client stream's rows: a canonical row plus when it arrives."""
    from datasets import Features, Value

    rows = row_features()
    return Features({**rows, "round": Value("int32"), "stage": Value("int32"), "source_id": Value("string")})


def validate_row(row: Mapping[str, Any], *, n_images: int | None = None, answer: str | None = None) -> None:
    """Raise DataError (naming the task and row) unless ``row`` is canonical and self-consistent."""
    from drake.data.synth.base import IMAGE_TOKEN

    where = f"task {row.get('task')!r} row {row.get('id')!r}"
    missing = set(COLUMNS) - set(row)
    if missing:
        raise DataError(f"{where}: missing columns {sorted(missing)}")
    if not isinstance(row["prompt"], str) or not isinstance(row["answer"], str) or not row["answer"].strip():
        raise DataError(f"{where}: prompt and answer must be strings and the answer non-empty")
    n_tokens, n_imgs = row["prompt"].count(IMAGE_TOKEN), len(row["images"])
    if n_tokens != n_imgs:
        raise DataError(f"{where}: prompt has {n_tokens} {IMAGE_TOKEN} placeholders for {n_imgs} images")
    if n_images is not None and n_imgs != n_images:
        raise DataError(f"{where}: {n_imgs} images, but tasks.yaml declares images: {n_images}")
    choices = row["choices"]
    if answer == "open" and choices is not None:
        raise DataError(f"{where}: an open task must have choices None, got {choices!r}")
    if answer == "choice" and not choices:
        raise DataError(f"{where}: a choice task needs a non-empty choices list")
    if choices is not None:
        if len(set(choices)) != len(choices):
            raise DataError(f"{where}: duplicate choices {choices!r}")
        if row["answer"] not in choices:
            raise DataError(f"{where}: answer {row['answer']!r} is not among choices {choices!r}")


def check_config_names(
    tasks: Sequence[TaskSpec], extras: Sequence[str], scenarios: Sequence[ScenarioSpec]
) -> None:
    """Raise DataError unless every config name is a valid directory name and no two kinds share one."""
    seen: dict[str, str] = {}
    for kind, names in (
        ("task", [t.name for t in tasks]),
        ("extra", extras),
        ("scenario", [s.name for s in scenarios]),
    ):
        for name in names:
            if not _CONFIG_NAME.match(name):
                raise DataError(
                    f"{kind} name {name!r} cannot be a config/directory name (letters, digits, '_' and '-')"
                )
            if name in seen and seen[name] != kind:
                raise DataError(f"config name {name!r} is both a {seen[name]} and a {kind}; rename one")
            seen[name] = kind
