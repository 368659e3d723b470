"""How many micro-batches a training step needs on each architecture (``engine.micro_batch``).

On a GPU the largest batch a method asks for may not fit; ``auto`` probes, per architecture, a forward +
backward pass on the costliest training rows of its clients and splits each step into as many micro-batches
as it takes (the gradient is the same, accumulated).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from drake.errors import DataError
from drake.fl.client import ArchModel, Row, TaskRows
from drake.fl.method import MethodConfig
from drake.spec import ScenarioSpec


def fit_micro_batches(
    archs: Mapping[str, ArchModel], data: Mapping[str, TaskRows], micro_batch: int | str, config: MethodConfig,
    scenario: ScenarioSpec,
) -> dict[str, int]:
    """Micro-batches per step for each architecture under ``micro_batch`` (empty: the method's own).

    ``auto`` probes, on CUDA only, a forward + backward pass on the largest training rows of the
    architecture's clients (most images, most pixels, longest text) for the largest micro-batch that
    fits; the method's ``grad_accum`` stays a lower bound. The probe uses the plain next-token loss: a
    method with two forward passes per step (KD, dual adapters) may need a fixed ``micro_batch``.
    """
    from drake.models.loading import fit_grad_accum

    if micro_batch == 0:
        return {}
    out: dict[str, int] = {}
    for name, arch in archs.items():
        if micro_batch != "auto":
            out[name] = max(config.grad_accum, math.ceil(config.batch_size / int(micro_batch)))
        elif arch.loaded.device.type == "cuda":
            rows = largest_rows(data, scenario, name, config.batch_size)
            k = fit_grad_accum(len(rows), lambda m, arch=arch, rows=rows: probe(arch, rows[:m]))
            out[name] = max(config.grad_accum, math.ceil(config.batch_size / math.ceil(len(rows) / k)))
    return out


def largest_rows(data: Mapping[str, TaskRows], scenario: ScenarioSpec, arch: str, n: int) -> list[Row]:
    """The ``n`` training rows of ``arch``'s clients that cost the most memory (images, pixels, text)."""
    tasks = dict.fromkeys(t for c in scenario.clients if c.model == arch for t in c.tasks)

    def cost(row: Row) -> tuple[int, int, int]:
        images = row.get("images") or []
        pixels = sum(getattr(im, "width", 0) * getattr(im, "height", 0) for im in images)
        text = len(str(row.get("prompt", ""))) + len(str(row.get("answer", ""))) + len(" ".join(row.get("choices") or []))
        return len(images), pixels, text

    rows = [r for t in tasks for r in data[t].splits.get("train", [])]
    if not rows:
        raise DataError(f"micro_batch auto: the clients of {arch!r} have no training rows to probe with")
    return sorted(rows, key=cost, reverse=True)[:n]


def probe(arch: ArchModel, rows: Sequence[Row]) -> None:
    """One training forward + backward pass on ``rows``; gradients are dropped afterwards."""
    from drake.models.batching import collate

    arch.model.train()
    try:
        loss = arch.model(**collate(arch.loaded, rows, with_answer=True)).loss
        loss.backward()
        if arch.loaded.device.type == "cuda":
            torch.cuda.synchronize(arch.loaded.device)
    finally:
        for p in arch.adapter.parameters("all"):
            p.grad = None
        arch.model.eval()
