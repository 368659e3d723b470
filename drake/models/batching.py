"""Collate canonical rows into model inputs, with the loss on answer tokens only.

A canonical row is ``{images: list[PIL.Image], prompt: str (one "<image>" per image), choices, answer}``
(extra keys such as ``id``/``task`` are ignored). The same function serves pre-training, federated client
training (labels) and evaluation (``with_answer=False``, left padding for generation), so every caller
sees the same tokens.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from drake.models.prompting import add_special_tokens, format_answer, format_prompt

IGNORE_INDEX = -100
Row = Mapping[str, Any]


def _tokenizer(processor: Any) -> Any:
    return getattr(processor, "tokenizer", processor)


def encode_prompts(rows: Sequence[Row], processor: Any) -> tuple[list[list[int]], dict[str, torch.Tensor]]:
    """Token ids of each formatted prompt (placeholders expanded) and the image tensors of the batch.

    Images are flattened in row order then placeholder order, which is the order LLaVA consumes them.
    """
    texts = [format_prompt(processor, str(r["prompt"])) for r in rows]
    images = [img for r in rows for img in (r.get("images") or [])]
    n_placeholders = sum(t.count(_image_token(processor)) for t in texts)
    if n_placeholders != len(images):
        raise ValueError(
            f"batch has {len(images)} images but {n_placeholders} image placeholders in its prompts"
        )
    kwargs: dict[str, Any] = {"add_special_tokens": add_special_tokens(processor)}
    if images:
        enc = _process(processor, texts, images, kwargs)
    else:
        enc = _tokenizer(processor)(texts, padding=False, **kwargs)
    extra = {}
    for key, value in enc.items():
        if key in ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids"):
            continue
        extra[key] = value if isinstance(value, torch.Tensor) else torch.as_tensor(_stack(value))
    return [list(ids) for ids in enc["input_ids"]], extra


#: processors whose resize and RGB conversion were checked to be no-ops on images already at their size
_NO_OP_CHECKED: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def _already_fit(processor: Any, images: Sequence[Any]) -> bool:
    """True when every image is an RGB PIL image of exactly the size the image processor resizes to (and
    crops to, if it crops): resizing and converting it then change nothing but cost a third of a collate."""
    ip = getattr(processor, "image_processor", None)
    size = getattr(ip, "size", None)
    height, width = getattr(size, "height", None), getattr(size, "width", None)
    if not height or not width:
        return False
    crop = getattr(ip, "crop_size", None) if getattr(ip, "do_center_crop", False) else size
    if (getattr(crop, "height", None), getattr(crop, "width", None)) != (height, width):
        return False
    return all(
        getattr(im, "mode", None) == "RGB" and getattr(im, "size", None) == (width, height) for im in images
    )


def _process(processor: Any, texts: list[str], images: list[Any], kwargs: dict[str, Any]) -> Any:
    """``processor(text, images)``, skipping the no-op resize/RGB conversion of images already at the target
    size; the first such batch of each processor is processed both ways and must match exactly."""
    full = {"return_tensors": None, "padding": False, **kwargs}
    try:
        verdict = _NO_OP_CHECKED.get(processor)
    except TypeError:  # not weak-referenceable: never checked, so always the full path
        verdict = False
    if verdict is False or not _already_fit(processor, images):
        return processor(text=texts, images=images, **full)
    if verdict:
        return processor(text=texts, images=images, do_resize=False, do_convert_rgb=False, **full)
    slow = processor(text=texts, images=images, **full)
    try:
        fast = processor(text=texts, images=images, do_resize=False, do_convert_rgb=False, **full)
        same = fast["input_ids"] == slow["input_ids"] and all(
            np.array_equal(np.asarray(a), np.asarray(b))
            for a, b in zip(fast["pixel_values"], slow["pixel_values"])
        )
    except (TypeError, ValueError):  # a processor without these switches
        same = False
    _NO_OP_CHECKED[processor] = same
    return slow


def _stack(value: Any) -> Any:
    return np.stack([np.asarray(v) for v in value]) if isinstance(value, list) else value


def _image_token(processor: Any) -> str:
    return getattr(processor, "image_token", None) or getattr(_tokenizer(processor), "image_token", "<image>")


def encode_answers(answers: Sequence[str], processor: Any, add_eos: bool = True) -> list[list[int]]:
    """Token ids of each answer continuation (plus EOS so the model learns to stop)."""
    tok = _tokenizer(processor)
    texts = [format_answer(processor, str(a)) for a in answers]
    ids = tok(texts, add_special_tokens=False)["input_ids"]
    eos = [tok.eos_token_id] if add_eos and tok.eos_token_id is not None else []
    return [list(x) + eos for x in ids]


def pad_batch(
    sequences: Sequence[Sequence[int]],
    labels: Sequence[Sequence[int]] | None,
    pad_id: int,
    padding_side: str = "right",
) -> dict[str, torch.Tensor]:
    """Pad to the longest sequence; returns input_ids, attention_mask (and labels when given)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    lab = torch.full((len(sequences), width), IGNORE_INDEX, dtype=torch.long) if labels is not None else None
    for i, seq in enumerate(sequences):
        n = len(seq)
        sl = slice(0, n) if padding_side == "right" else slice(width - n, width)
        ids[i, sl] = torch.as_tensor(seq, dtype=torch.long)
        mask[i, sl] = 1
        if lab is not None:
            lab[i, sl] = torch.as_tensor(labels[i], dtype=torch.long)
    out = {"input_ids": ids, "attention_mask": mask}
    if lab is not None:
        out["labels"] = lab
    return out


def unpack(source: Any) -> tuple[Any, Any, torch.device | None, torch.dtype | None]:
    """``(processor, model, device, dtype)`` of a LoadedModel, or ``(processor, None, None, None)``."""
    if hasattr(source, "processor") and hasattr(source, "model"):
        return source.processor, source.model, source.device, source.dtype
    return source, None, None, None


def to_device(
    batch: dict[str, torch.Tensor], device: Any, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """Move a batch; floating tensors (pixels) also take ``dtype`` (the model's) when given."""
    return {
        k: v.to(device, dtype=dtype) if (dtype is not None and v.is_floating_point()) else v.to(device)
        for k, v in batch.items()
    }


def collate(
    source: Any,
    rows: Sequence[Row],
    *,
    with_answer: bool = True,
    answers: Sequence[str] | None = None,
    padding_side: str = "right",
    add_eos: bool = True,
) -> dict[str, torch.Tensor]:
    """Model inputs for ``rows``: ``input_ids``, ``attention_mask``, ``pixel_values`` (if any image), ``labels``.

    ``source`` is a LoadedModel (the batch is then moved to its device, pixels in its dtype) or a processor
    (CPU tensors).

    With ``with_answer`` the answer (``answers[i]`` if given, else ``row["answer"]``) follows the prompt and
    ``labels`` mark only its tokens (+ EOS); prompt, image and padding positions are ``-100``. Without it
    the batch holds prompts only (use ``padding_side="left"`` for generation).
    """
    if not rows:
        raise ValueError("collate needs at least one row")
    processor, _, device, dtype = unpack(source)
    prompt_ids, extra = encode_prompts(rows, processor)
    pad_id = _tokenizer(processor).pad_token_id
    if pad_id is None:
        pad_id = _tokenizer(processor).eos_token_id or 0
    if not with_answer:
        batch = {**pad_batch(prompt_ids, None, pad_id, padding_side), **extra}
    else:
        targets = list(answers) if answers is not None else [str(r["answer"]) for r in rows]
        answer_ids = encode_answers(targets, processor, add_eos=add_eos)
        seqs = [p + a for p, a in zip(prompt_ids, answer_ids)]
        labels = [[IGNORE_INDEX] * len(p) + a for p, a in zip(prompt_ids, answer_ids)]
        batch = {**pad_batch(seqs, labels, pad_id, padding_side), **extra}
    return batch if device is None else to_device(batch, device, dtype)


def expand_choices(rows: Sequence[Row]) -> tuple[list[Row], list[str], list[int]]:
    """One (row, choice) pair per choice: the rows repeated, the choices, and each pair's row index."""
    flat_rows: list[Row] = []
    flat_choices: list[str] = []
    owner: list[int] = []
    for i, row in enumerate(rows):
        choices = row.get("choices")
        if not choices:
            raise ValueError(f"row {i} ({row.get('id', '?')}) has no choices to score")
        for c in choices:
            flat_rows.append(row)
            flat_choices.append(str(c))
            owner.append(i)
    return flat_rows, flat_choices, owner
