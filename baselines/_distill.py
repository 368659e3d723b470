"""Knowledge distillation at the answer positions, shared by the KD baselines (FedDAT, PerAda, FedDF, FedMKT,
TAKFL): a student matches a teacher's logits only where the labels hold answer tokens (the harness's KD
convention), so prompts, images and padding never enter the loss; teachers are ensembles of client models
whose tokenizers share one vocabulary."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from drake.fl.client import ArchModel, ClientRuntime, Row
from drake.fl.types import Arrays
from drake.models.batching import IGNORE_INDEX, collate


def forward(client: ClientRuntime, rows: Sequence[Row]) -> tuple[Any, torch.Tensor]:
    """The client's model on ``rows`` with answers (training mode): (outputs, labels)."""
    inputs = collate(client.arch.loaded, rows, with_answer=True)
    return client.model(**inputs), inputs["labels"]


def answer_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The logits that predict answer tokens, flattened to (n_answer_tokens, vocab), row-major."""
    mask = labels[:, 1:] != IGNORE_INDEX
    return logits[:, :-1][mask]


@torch.no_grad()
def row_logits(am: ArchModel, arrays: Arrays | None, rows: Sequence[Row], batch: int) -> list[torch.Tensor]:
    """Per row, the logits at its answer positions (n_answer_tokens x vocab, CPU float32) of ``am`` with the
    adapter state ``arrays`` loaded (None: as it is)."""
    if arrays is not None:
        am.adapter.set_state(arrays)
    am.model.eval()
    out: list[torch.Tensor] = []
    for start in range(0, len(rows), batch):
        chunk = list(rows[start : start + batch])
        inputs = collate(am.loaded, chunk, with_answer=True)
        logits = am.model(**inputs).logits
        mask = inputs["labels"][:, 1:] != IGNORE_INDEX
        out.extend(logits[i, :-1][mask[i]].float().cpu() for i in range(len(chunk)))
    return out


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)), averaged over positions (Hinton et al.)."""
    t = temperature
    log_p_s = F.log_softmax(student.float() / t, dim=-1)
    log_p_t = F.log_softmax(teacher.float() / t, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)
    return kl.mean() * t * t if kl.numel() else student.sum() * 0.0


def ensemble_kl(
    student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], temperature: float = 1.0
) -> float:
    """KL(softmax(teacher/T) || softmax(student/T)) averaged over all answer positions of all rows."""
    if not student:
        return 0.0
    s, t = torch.cat(list(student)), torch.cat(list(teacher))
    return float(kd_loss(s, t, temperature)) / (temperature * temperature)


def vocab_signature(loaded: Any) -> str:
    """Architectures whose tokenizers have the same vocabulary can average logits position by position."""
    vocab = sorted(loaded.tokenizer.get_vocab().items())
    return hashlib.sha256(repr(vocab).encode()).hexdigest()[:16]


def ensemble_teacher(per_client: Sequence[Sequence[torch.Tensor]]) -> list[torch.Tensor]:
    """Per public row, the mean over clients of their answer-position logits (the ensemble teacher)."""
    return [torch.stack(rows).mean(0) for rows in zip(*per_client)]


def teacher_groups(
    archs: Mapping[str, str], clients: Mapping[int, str], cross_arch: bool
) -> dict[str, list[int]]:
    """For each architecture, the clients whose models teach it: every client whose architecture has the
    same vocabulary signature (``archs``: arch -> signature), or only its own clients."""
    out: dict[str, list[int]] = {}
    for arch, sig in archs.items():
        out[arch] = sorted(
            cid for cid, a in clients.items() if (archs.get(a) == sig if cross_arch else a == arch)
        )
    return out
