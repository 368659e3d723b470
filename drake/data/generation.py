"""Canonical rows from the generators: a task's synth family, or an extra config (public split, easy-VQA).

Everything here is a pure function of (config, split, index, seed, image size): the build, the audit and
``drake validate`` draw the same rows. A split's size at a given ``--scale`` is set here too.
"""

from __future__ import annotations

import importlib
import io
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image as PILImage

from drake.data.schema import COLUMNS, validate_row
from drake.errors import DataError
from drake.spec import TaskSpec

SIZES = {"train": 300, "test": 100}  # rows per split at scale 1
MIN_ROWS = 8
PUBLIC_SIZES = {"train": 4000, "test": 200}  # the pre-training split, at scale 1


@dataclass(frozen=True)
class ExtraSpec:
    """A non-task config: ``target`` is a lazy ``module:attr`` generator.

    kind "sample": ``fn(ctx) -> Sample`` like a family; kind "rows": ``fn(split, n, image_size, seed) -> rows``.
    """

    target: str
    kind: str
    sizes: Mapping[str, int]
    summary: str


EXTRAS: dict[str, ExtraSpec] = {
    "public": ExtraSpec(
        "drake.data.synth.public:public_sample",
        "sample",
        PUBLIC_SIZES,
        "public pre-training split (captions + QA)",
    ),
    "easy_vqa": ExtraSpec(
        "drake.data.sources.easy_vqa:easy_vqa_rows", "rows", SIZES, "easy-vqa (real 64px shapes VQA, MIT)"
    ),
}


def split_sizes(scale: float = 1.0, base: Mapping[str, int] = SIZES) -> dict[str, int]:
    """Rows per split at ``scale`` (each at least MIN_ROWS)."""
    if not (math.isfinite(scale) and scale > 0):
        raise DataError(f"--scale must be a finite number > 0, got {scale}")
    return {split: max(MIN_ROWS, round(n * scale)) for split, n in base.items()}


def encode_image(img: Any) -> dict[str, Any]:
    """A PIL image (or PNG bytes, or an HF image dict) as an embedded ``{"bytes", "path": None}`` dict."""
    if isinstance(img, PILImage.Image):
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return {"bytes": buf.getvalue(), "path": None}
    if isinstance(img, (bytes, bytearray)):
        return {"bytes": bytes(img), "path": None}
    if isinstance(img, Mapping) and img.get("bytes"):
        return {"bytes": bytes(img["bytes"]), "path": None}
    raise DataError(f"cannot embed image of type {type(img).__name__}; give a PIL image or PNG bytes")


def sample_to_row(sample: Any, task: str, split: str, index: int) -> dict[str, Any]:
    """A family's Sample as a canonical row (id ``<task>-<split>-<index:05d>``)."""
    return {
        "id": f"{task}-{split}-{index:05d}",
        "task": task,
        "images": [encode_image(im) for im in sample.images],
        "prompt": sample.prompt,
        "choices": None if sample.choices is None else [str(c) for c in sample.choices],
        "answer": sample.answer,
    }


def row_hash(row: Mapping[str, Any]) -> str:
    """Content hash of a row (prompt, image bytes, answer): equal hashes mean the same example."""
    import hashlib

    h = hashlib.sha256(row["prompt"].encode())
    for im in row["images"]:
        h.update(b"\0img\0" + im["bytes"])
    h.update(b"\0ans\0" + row["answer"].encode())
    return h.hexdigest()


def _generated_rows(
    make: Callable[[int], Any],
    task: str,
    split: str,
    n: int,
    *,
    n_images: int | None,
    answer: str | None,
    exclude_hashes: set[str] | None,
) -> list[dict[str, Any]]:
    """Rows from ``make(index) -> Sample``, skipping (deterministically) indices that collide with ``exclude``."""
    rows: list[dict[str, Any]] = []
    max_index = n + max(100, 10 * n)
    index = 0
    while len(rows) < n:
        if index >= max_index:
            raise DataError(
                f"task {task!r}: only {len(rows)} of {n} {split} rows differ from the excluded (train) rows after "
                f"{max_index} draws; the generator's sample space is too small for this size (lower --scale)"
            )
        try:
            sample = make(index)
        except DataError:
            raise
        except Exception as exc:  # a generator bug: name the task and index, keep it one line
            raise DataError(
                f"task {task!r}: generator failed on {split}[{index}]: {type(exc).__name__}: {exc}"
            ) from exc
        row = sample_to_row(sample, task, split, index)
        index += 1
        validate_row(row, n_images=n_images, answer=answer)
        if exclude_hashes and row_hash(row) in exclude_hashes:
            continue
        rows.append(row)
    return rows


def task_family(spec: TaskSpec) -> Callable[..., Any]:
    """The generator function of ``spec``'s synth family (every family is registered on first call)."""
    import drake.data.synth.families  # noqa: F401  (registers every family lazily)
    from drake.data.synth.base import FAMILIES

    return FAMILIES.get(spec.sources["synth"].family)


def synth_rows(
    spec: TaskSpec,
    split: str,
    n: int,
    seed: int,
    image_size: int = 32,
    exclude_hashes: set[str] | None = None,
) -> list[dict[str, Any]]:
    """``n`` validated canonical rows of ``spec``'s synth family; rows whose hash is excluded are skipped."""
    from drake.data.synth.base import SampleContext

    fn, params = task_family(spec), dict(spec.sources["synth"].params)

    def make(i: int) -> Any:
        return fn(SampleContext(spec.name, split, i, seed, image_size, spec.images), **params)

    return _generated_rows(
        make, spec.name, split, n, n_images=spec.images, answer=spec.answer, exclude_hashes=exclude_hashes
    )


def resolve_target(target: str) -> Any:
    """The object a ``module:attr`` target names (imports the module)."""
    module_name, attr = target.split(":", 1)
    return getattr(importlib.import_module(module_name), attr)


def unavailable(target: str) -> str | None:
    """Why ``target``'s module cannot be used yet (it does not exist), or None when it imports.

    Any other import failure (a missing dependency, a syntax error) is a DataError: that is a bug to see.
    """
    module_name = target.split(":", 1)[0]
    try:
        importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            return f"{module_name} not found"
        raise DataError(f"cannot import {module_name}: {exc}") from exc
    except Exception as exc:
        raise DataError(f"cannot import {module_name}: {type(exc).__name__}: {exc}") from exc
    return None


def extra_rows(
    name: str, split: str, n: int, seed: int, image_size: int = 32, exclude_hashes: set[str] | None = None
) -> list[dict[str, Any]]:
    """Rows of the extra config ``name`` (see EXTRAS); validated like task rows, with any image count.

    ``exclude_hashes`` applies to generated ("sample") extras; a "rows" source keeps its own split.
    """
    extra = EXTRAS[name]
    fn = resolve_target(extra.target)
    if extra.kind == "sample":
        from drake.data.synth.base import SampleContext

        module = importlib.import_module(extra.target.split(":", 1)[0])
        make_ctx = getattr(module, "public_context", None)

        def make(i: int) -> Any:
            ctx = (
                make_ctx(split, i, seed, image_size)
                if make_ctx
                else SampleContext(name, split, i, seed, image_size)
            )
            return fn(ctx)

        return _generated_rows(
            make, name, split, n, n_images=None, answer=None, exclude_hashes=exclude_hashes
        )
    rows = []
    for i, raw in enumerate(fn(split, n, image_size, seed)):
        if hasattr(raw, "images") and hasattr(raw, "prompt"):
            row = sample_to_row(raw, name, split, i)
        else:
            row = {"id": f"{name}-{split}-{i:05d}", "task": name, **dict(raw)}
            row["images"] = [encode_image(im) for im in row.get("images", [])]
            row.setdefault("choices", None)
        validate_row(row)
        rows.append({k: row[k] for k in COLUMNS})
    if len(rows) != n:
        raise DataError(f"extra config {name!r}: generator returned {len(rows)} {split} rows, expected {n}")
    return rows
