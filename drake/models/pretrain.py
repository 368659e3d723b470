"""Pre-train zoo members from scratch on the public split and cache them as ``save_pretrained`` folders.

This is the zoo's recipe. Runs load the shipped weights (drake/models/zoo_manifest.py), never these: a cache
folder is used only when passed by path, and ``drake pretrain --compare`` sets it beside the shipped one.

The cache folder is ``<models_home>/<name>-<hash12>`` where the hash covers the member's config and recipe
(seed included), the vocabulary, the public-data version and the recipe's version (``folders.PRETRAIN_VERSION``): change any of them
and a new folder is trained, never a stale one reused. Training is budgeted in steps, the data order is a
seeded permutation and weights start from ``torch.manual_seed(seed)``, so the same seed gives the same
weights on the same machine. Folders are written to a temp dir and renamed, so a killed run leaves no
half-written member.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from drake.data.synth.public import (
    PUBLIC_VERSION,
    QTYPES,
    SCHEDULE,
    public_context,
    public_sample,
    word_sample,
)
from drake.models.batching import IGNORE_INDEX, encode_answers, encode_prompts, pad_batch
from drake.models.folders import META_FILE, PRETRAIN_VERSION, cached_path, is_cached, quiet_progress
from drake.models.scoring import predict_choices
from drake.models.tokenizer import default_vocab, make_tokenizer
from drake.models.zoo import ModelSpec, build_model, count_parameters, get_spec, models_home

#: torch threads per member: on 2 cores, two one-thread members side by side train ~1.4x faster than one
#: member at a time on two threads (measured, tiny-llama-s: 0.268 s/step on each of two lanes vs 0.193
#: s/step alone on two threads), and one thread makes the weights independent of the core count.
RECIPE_THREADS = 1


# ------------------------------------------------------------------------------------------------ data


def sample_row(split: str, index: int, seed: int, image_size: int) -> dict[str, Any]:
    s = public_sample(public_context(split, index, seed, image_size))
    return {
        "images": s.images,
        "prompt": s.prompt,
        "choices": s.choices,
        "answer": s.answer,
        "qtype": s.meta["qtype"],
    }


def draw_rows(split: str, n: int, seed: int, image_size: int, progress: bool = False) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm

    it = range(n)
    if progress:
        it = tqdm(it, desc=f"public {split} data", unit="sample", leave=False)
    return [sample_row(split, i, seed, image_size) for i in it]


def word_rows(words: Sequence[str], per_word: int, seed: int, image_size: int) -> list[dict[str, Any]]:
    """``per_word`` copy rows for every vocabulary word (see public.WORD_PROMPT for why)."""
    out = []
    for k, word in enumerate(w for _ in range(per_word) for w in words):
        s = word_sample(public_context("words", k, seed, image_size), word)
        out.append({"images": s.images, "prompt": s.prompt, "choices": None, "answer": s.answer, "qtype": "word"})
    return out


def eval_rows(n_eval: int, seed: int, image_size: int) -> list[dict[str, Any]]:
    """Held-out public test items, multiple choice only: equally many of every question type."""
    per_block = len(QTYPES)
    n_blocks = math.ceil(n_eval / per_block)
    rows = [sample_row("test", i, seed, image_size) for i in range(n_blocks * len(SCHEDULE))]
    return [r for r in rows if r["choices"]][:n_eval]


def batch_order(rows: Sequence[dict[str, Any]], batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """``steps`` batches of row indices; rows with the same image count share a batch (less padding).

    Each epoch permutes every bucket with a seeded generator and shuffles the batch order.
    """
    buckets: dict[int, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        buckets[len(r["images"])].append(i)
    gen = torch.Generator().manual_seed(seed)
    order: list[list[int]] = []
    while len(order) < steps:
        epoch: list[list[int]] = []
        for key in sorted(buckets):
            idx = buckets[key]
            perm = torch.randperm(len(idx), generator=gen).tolist()
            epoch += [
                [idx[j] for j in perm[k : k + batch_size]]
                for k in range(0, len(idx) - batch_size + 1, batch_size)
            ]
        if not epoch:
            raise ValueError(f"n_train ({len(rows)}) is smaller than one batch ({batch_size})")
        shuffle = torch.randperm(len(epoch), generator=gen).tolist()
        order += [epoch[j] for j in shuffle]
    return order[:steps]


class PreEncoded:
    """Rows tokenized and image-processed once, then assembled into batches by padding.

    Exactly what ``collate(processor, rows)`` returns for the same rows (a test checks it), without
    running the tokenizer and image processor again at every step (~10% of a tiny model's step).
    """

    def __init__(self, processor: Any, rows: Sequence[dict[str, Any]], chunk: int = 256) -> None:
        self.ids: list[list[int]] = []
        self.labels: list[list[int]] = []
        self.pixels: list[torch.Tensor | None] = []
        tok = getattr(processor, "tokenizer", processor)
        self.pad_id = tok.pad_token_id
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            prompt_ids, extra = encode_prompts(part, processor)
            if set(extra) - {"pixel_values"}:
                raise ValueError(f"pre-encoding supports pixel_values only, got {sorted(extra)}")
            answer_ids = encode_answers([str(r["answer"]) for r in part], processor)
            pixels, offset = extra.get("pixel_values"), 0
            for row, p, a in zip(part, prompt_ids, answer_ids):
                n = len(row.get("images") or [])
                self.ids.append(p + a)
                self.labels.append([IGNORE_INDEX] * len(p) + a)
                self.pixels.append(pixels[offset : offset + n] if n else None)
                offset += n

    def batch(self, idx: Sequence[int]) -> dict[str, torch.Tensor]:
        out = pad_batch([self.ids[i] for i in idx], [self.labels[i] for i in idx], self.pad_id, "right")
        pix = [self.pixels[i] for i in idx if self.pixels[i] is not None]
        if pix:
            out["pixel_values"] = torch.cat(pix)
        return out


# -------------------------------------------------------------------------------------------- training


@contextmanager
def deterministic(threads: int | None = None):
    """Deterministic kernels (cheap on CPU) and an optional thread count, restored afterwards."""
    prev_det, prev_threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True, warn_only=True)
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.set_num_threads(prev_threads)


def lr_lambda(steps: int, warmup: float) -> Callable[[int], float]:
    """Linear warm-up then cosine decay to zero."""
    w = max(1, int(steps * warmup))

    def f(step: int) -> float:
        if step < w:
            return (step + 1) / w
        return 0.5 * (1 + math.cos(math.pi * (step - w) / max(1, steps - w)))

    return f


def train(
    model: Any,
    processor: Any,
    rows: Sequence[dict[str, Any]],
    spec: ModelSpec,
    *,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    bar_position: int | None = None,
) -> list[float]:
    """Run ``spec.recipe.steps`` AdamW steps on ``rows``; returns the loss of every step."""
    from tqdm.auto import tqdm

    r = spec.recipe
    device = next(model.parameters()).device
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]  # not a frozen tower
    decay = [p for n, p in params if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in params if not (p.ndim >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": r.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=r.lr,
        betas=(0.9, 0.98),
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(r.steps, r.warmup))
    model.train()
    losses: list[float] = []
    bar = tqdm(
        batch_order(rows, r.batch_size, r.steps, r.seed),
        desc=f"pretrain {spec.name}",
        unit="step",
        disable=not progress,
        position=bar_position,
    )
    encoded = PreEncoded(processor, rows)
    for step, idx in enumerate(bar):
        batch = {k: v.to(device) for k, v in encoded.batch(idx).items()}
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decay + no_decay, r.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
        if on_step is not None:
            on_step(step, losses[-1])
    model.eval()
    return losses


def evaluate_public(
    model: Any, processor: Any, rows: Sequence[dict[str, Any]], batch_size: int = 64
) -> dict[str, float]:
    """Held-out multiple-choice accuracy, overall and per question type."""
    preds = predict_choices(processor, rows, model=model, batch_size=batch_size)
    hits: dict[str, list[int]] = defaultdict(list)
    for row, pred in zip(rows, preds):
        hits[row["qtype"]].append(int(pred == row["answer"]))
    acc = {q: sum(h) / len(h) for q, h in sorted(hits.items())}
    acc["overall"] = sum(sum(h) for h in hits.values()) / max(1, sum(len(h) for h in hits.values()))
    acc["chance"] = sum(1 / len(r["choices"]) for r in rows) / max(1, len(rows))
    return acc


def pretrain(
    model: ModelSpec | str,
    *,
    home: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
    threads: int = RECIPE_THREADS,
    vocab: Sequence[str] | None = None,
    eval_every: int = 0,
    log: Callable[[str], None] = print,
    bar_position: int | None = None,
) -> Path:
    """Pre-train one member (unless cached) and return its folder.

    ``threads`` sets torch's CPU threads for the run (the recipes are budgeted, and their weights are
    reproducible, at one thread); ``vocab`` replaces the project vocabulary (tests); ``eval_every`` > 0
    also records a held-out accuracy curve (for tuning recipes; slower).
    """
    spec = get_spec(model) if isinstance(model, str) else model
    home_path = Path(home) if home else models_home()
    _refuse_shipped(home_path)
    vocab = default_vocab() if vocab is None else list(vocab)
    final = cached_path(spec, vocab, home_path)
    if is_cached(final) and not force:
        return final
    r = spec.recipe
    tower = None
    if spec.tower is not None:
        tower = pretrain(spec.tower, home=home_path, progress=progress, threads=threads, vocab=vocab, log=log)
    with deterministic(threads):
        tokenizer = make_tokenizer(vocab)
        net, processor = build_model(spec, tokenizer, seed=r.seed)
        if tower is not None:
            load_frozen_tower(net, tower)
        rows = draw_rows("train", r.n_train, r.seed, spec.image_size, progress=progress)
        rows += word_rows(vocab, r.words_per_vocab_word, r.seed, spec.image_size)
        held_out = eval_rows(r.n_eval, r.seed, spec.image_size)
        curve: list[tuple[int, float]] = []
        eval_s = 0.0

        def on_step(step: int, loss: float) -> None:
            nonlocal eval_s
            if eval_every and (step + 1) % eval_every == 0 and step + 1 < r.steps:
                t = time.perf_counter()
                net.eval()
                curve.append((step + 1, round(evaluate_public(net, processor, held_out)["overall"], 4)))
                log(f"{spec.name}: step {step + 1}: held-out accuracy {curve[-1][1]:.3f}, loss {loss:.3f}")
                net.train()
                eval_s += time.perf_counter() - t

        t0 = time.perf_counter()
        losses = train(net, processor, rows, spec, progress=progress, on_step=on_step, bar_position=bar_position)
        train_s = time.perf_counter() - t0 - eval_s
        acc = evaluate_public(net, processor, held_out)
    curve.append((r.steps, round(acc["overall"], 4)))
    meta = {
        "name": spec.name,
        "spec": spec.to_dict(),
        "cache_key": final.name.rsplit("-", 1)[-1],
        "tower": tower.name if tower is not None else None,
        "parameters": count_parameters(net),
        "train_seconds": round(train_s, 1),
        "seconds_per_step": round(train_s / max(1, r.steps), 4),
        "threads": threads,
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "first_loss": round(sum(losses[:20]) / max(1, len(losses[:20])), 4),
        "final_loss": round(sum(losses[-50:]) / max(1, len(losses[-50:])), 4),
        "heldout_accuracy": {k: round(v, 4) for k, v in acc.items()},
        "curve": curve,
        "versions": {"public": PUBLIC_VERSION, "pretrain": PRETRAIN_VERSION, "torch": torch.__version__},
    }
    _save_atomic(net, processor, meta, final)
    log(
        f"{spec.name}: {r.steps} steps in {train_s / 60:.1f} min, held-out accuracy {acc['overall']:.3f} "
        f"(chance {acc['chance']:.2f}) -> {final}"
    )
    return final


def _refuse_shipped(home: Path) -> None:
    """The recipe writes to a cache, never into the shipped zoo (a re-run would silently replace the
    canonical weights; shipping is ``python -m drake.models.zoo_manifest ship``)."""
    from drake.errors import DrakeError
    from drake.models.zoo_manifest import SHIPPED_DIR

    if home.resolve().is_relative_to(SHIPPED_DIR):
        raise DrakeError(
            f"{home}: inside the shipped zoo ({SHIPPED_DIR}); pre-train into a cache ($DRAKE_HOME or the default)"
        )


def load_frozen_tower(model: Any, donor: Path) -> None:
    """Load the vision tower of the pre-trained member in ``donor`` into ``model`` and freeze it."""
    from transformers import LlavaForConditionalGeneration

    source = LlavaForConditionalGeneration.from_pretrained(donor).model.vision_tower
    model.model.vision_tower.load_state_dict(source.state_dict())  # strict: every tensor, same shapes
    model.model.vision_tower.requires_grad_(False)


def pretrain_many(
    specs: Sequence[ModelSpec | str],
    *,
    jobs: int | None = None,
    force: bool = False,
    progress: bool = True,
    eval_every: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Pre-train every member not yet cached, up to ``jobs`` at once (default: one per core), and return
    ``{name: folder}``. Members run in their own processes with one torch thread each, largest first, so
    the lanes finish close together; the weights are the same as from ``pretrain`` one by one."""
    resolved = [get_spec(s) if isinstance(s, str) else s for s in specs]
    todo = [s for s in resolved if force or not is_cached(cached_path(s))]
    # the shared towers first (members load them); each is trained once, however many members share it
    towers = {cached_path(s.tower): s.tower for s in todo if s.tower is not None}
    stages = [[t for p, t in towers.items() if force or not is_cached(p)], todo]
    for stage in stages:
        _train_side_by_side(stage, jobs, force, progress, eval_every, log)
    return {s.name: cached_path(s) for s in resolved}


def _train_side_by_side(
    todo: list[ModelSpec], jobs: int | None, force: bool, progress: bool, eval_every: int, log: Callable[[str], None]
) -> None:
    jobs = max(1, min(len(todo), jobs or os.cpu_count() or 1))
    todo = sorted(todo, key=_cost, reverse=True)
    if jobs > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = [
                pool.submit(_pretrain_job, s, force, progress, eval_every, k % jobs) for k, s in enumerate(todo)
            ]
            for f in futures:
                log(f.result()[1])
    else:
        for s in todo:
            pretrain(s, force=force, progress=progress, eval_every=eval_every, log=log)


def _cost(spec: ModelSpec) -> float:
    """Relative training cost: steps x batch x (text + vision width^2 x depth)."""
    width = spec.text_hidden**2 * spec.text_layers + spec.vision_hidden**2 * spec.vision_layers
    return spec.recipe.steps * spec.recipe.batch_size * width


def _pretrain_job(spec: ModelSpec, force: bool, progress: bool, eval_every: int, position: int) -> tuple[Path, str]:
    lines: list[str] = []
    path = pretrain(spec, force=force, progress=progress, eval_every=eval_every, log=lines.append, bar_position=position)
    return path, "\n".join(lines)


def _save_atomic(model: Any, processor: Any, meta: dict[str, Any], final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        with quiet_progress():
            model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if final.exists():  # forced re-run or a concurrent writer: replace the old folder
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
