"""Evaluation: multiple choice by log-likelihood of each choice, open-ended by greedy generation.

Multiple choice scores every (row, choice) pair of a batch of rows in one padded forward: pairs are
left-padded so all answers end at the last position, and only the last ``max_answer_len + 1`` logits are
computed (``logits_to_keep``), which keeps a 150k-word hub vocabulary cheap. Position ids follow the
attention mask, so padding never shifts a sequence. A choice's score is its mean log-probability per token
(``length_norm=True``: long choices are not penalised for their length) or its total.

Every function takes ``source`` first: a LoadedModel (its model, processor, device) or a processor, plus an
optional ``model`` (e.g. the peft-wrapped model of a client) that overrides the LoadedModel's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from drake.models.batching import IGNORE_INDEX, Row, collate, expand_choices, to_device, unpack


def _model_and_processor(source: Any, model: Any) -> tuple[Any, Any]:
    processor, base, _, _ = unpack(source)
    model = model if model is not None else base
    if model is None:
        raise ValueError("pass model=... when source is a processor")
    return model, processor


def _device_dtype(model: Any) -> tuple[torch.device, torch.dtype]:
    p = next(p for p in model.parameters() if p.is_floating_point())
    return p.device, p.dtype


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... over the real tokens of each row (padding gets 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@torch.inference_mode()
def score_pairs(
    source: Any, rows: Sequence[Row], answers: Sequence[str], *, model: Any = None, length_norm: bool = True
) -> list[float]:
    """Log-likelihood score of ``answers[i]`` after ``rows[i]``'s prompt, in one forward pass."""
    model, processor = _model_and_processor(source, model)
    batch = collate(processor, rows, answers=answers, padding_side="left", add_eos=False)
    labels = batch.pop("labels")
    keep = int((labels != IGNORE_INDEX).sum(-1).max().item()) + 1
    batch = to_device(batch, *_device_dtype(model))
    out = model(
        **batch, position_ids=position_ids(batch["attention_mask"]), logits_to_keep=keep, use_cache=False
    )
    logits = out.logits[:, :-1].float()  # predictions of the last keep-1 tokens
    target = labels[:, -(keep - 1) :].to(logits.device)
    mask = target != IGNORE_INDEX
    logp = torch.log_softmax(logits, dim=-1).gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    total = (logp * mask).sum(-1)
    if length_norm:
        total = total / mask.sum(-1).clamp(min=1)
    return total.tolist()


def choice_scores(
    source: Any, rows: Sequence[Row], *, model: Any = None, batch_size: int = 64, length_norm: bool = True
) -> list[list[float]]:
    """Per row, the score of each of its ``choices`` (higher = more likely); ``batch_size`` rows per forward."""
    per_row: list[list[float]] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        flat_rows, flat_choices, owner = expand_choices(chunk)
        scores = score_pairs(source, flat_rows, flat_choices, model=model, length_norm=length_norm)
        grouped: list[list[float]] = [[] for _ in chunk]
        for i, s in zip(owner, scores):
            grouped[i].append(s)
        per_row += grouped
    return per_row


def score_choices(
    source: Any, rows: Sequence[Row], *, model: Any = None, batch_size: int = 64, length_norm: bool = True
) -> list[int]:
    """Index of the highest-scoring choice of each row (the first one on ties)."""
    return [
        max(range(len(s)), key=s.__getitem__)
        for s in choice_scores(source, rows, model=model, batch_size=batch_size, length_norm=length_norm)
    ]


def predict_choices(source: Any, rows: Sequence[Row], **kwargs: Any) -> list[str]:
    """The highest-scoring choice string of each row."""
    return [row["choices"][k] for row, k in zip(rows, score_choices(source, rows, **kwargs))]


def _is_word_level(processor: Any) -> bool:
    tok = getattr(processor, "tokenizer", processor)
    backend = getattr(tok, "backend_tokenizer", None) or getattr(tok, "_tokenizer", None)
    return type(getattr(backend, "model", None)).__name__ == "WordLevel"


@torch.inference_mode()
def generate_answers(
    source: Any, rows: Sequence[Row], *, model: Any = None, batch_size: int = 32, max_new_tokens: int = 8
) -> list[str]:
    """Greedy answers (stripped, word-level spacing undone) for open-ended rows, left-padded and batched."""
    from drake.models.tokenizer import detokenize

    model, processor = _model_and_processor(source, model)
    tok = getattr(processor, "tokenizer", processor)
    word_level = _is_word_level(processor)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    answers: list[str] = []
    for start in range(0, len(rows), batch_size):
        batch = collate(processor, rows[start : start + batch_size], with_answer=False, padding_side="left")
        batch = to_device(batch, *_device_dtype(model))
        out = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad_id,
            eos_token_id=tok.eos_token_id,
        )
        new = out[:, batch["input_ids"].shape[1] :]
        for text in tok.batch_decode(new, skip_special_tokens=True):
            answers.append(detokenize(text) if word_level else text.strip())
    return answers
