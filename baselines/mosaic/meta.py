"""Mosaic's server pieces: task experts, prototypes, the meta model that fuses the experts, and the KD loss.

- Task experts (the paper's class experts): theta_c = sum_i n_ic theta_i / sum_i n_ic over the clients of one
  architecture, n_ic = client i's samples of task c so far (``task_experts``).
- Prototypes (the paper's k-means centres of penultimate features per class): per task and correct-option
  index, k-means on the client's model's last hidden state of each real sample, then each cluster of at least
  ``min_members`` samples averaged in the sample space: mean tower features, and per token slot only the ids
  that at least ``min_members`` of the cluster's samples have at that slot (k-anonymity per slot, k =
  ``min_members``), their shares renormalised, cut to the top ``topk`` (``prototypes``).
- Meta model: expert option log-probabilities (E experts x K_max options, padded options at the floor) ->
  Linear(K_max -> W) -> ``nn.Transformer`` over the experts (1 encoder + 1 decoder layer, W = K_max^2 and
  K_max heads by default, dropout 0.2) -> mean over experts -> Linear(W -> K_max), padded options masked.
  As released, it has no expert identity (no positional encoding): it fuses experts by what they output
  (e.g. whom to follow when one is confident and the others agree), not by who they are. Trained with CE on
  the prototypes, ``epochs`` x 5 shuffled passes over all of them (the paper's 30 x 5; the released trainer
  steps only on each epoch's first batch, ``batch_idx == 0``); its EMA (decay 0.99) is the teacher
  (``train_meta``).
- KD loss: 0.8 T^2 KL(p_t || p_s) + 0.2 CE(s, argmax t) + 1.0 JSD(p_s, p_t), T = 1 (``kd_loss``).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from baselines.mosaic.items import Items
from drake.fl.method import weighted_mean
from drake.fl.types import Arrays

#: option log-probabilities are clamped here, and padded options take this value (an impossible option)
FLOOR = -20.0


# ------------------------------------------------------------------------------------------ experts


def task_experts(
    adapters: Mapping[int, Arrays], counts: Mapping[int, Mapping[str, float]]
) -> dict[str, tuple[Arrays, dict[int, float]]]:
    """Per task c held by any client here: (sum_i n_ic theta_i / sum_i n_ic, {client: n_ic > 0}).

    ``adapters``: client -> uploaded adapter (one architecture); ``counts``: client -> task -> n_ic."""
    tasks = sorted({t for cid in adapters for t, n in counts.get(cid, {}).items() if n > 0})
    out = {}
    for task in tasks:
        weights = {cid: float(counts[cid][task]) for cid in sorted(adapters) if counts.get(cid, {}).get(task, 0) > 0}
        out[task] = (weighted_mean([adapters[c] for c in weights], list(weights.values())), weights)
    return out


# ----------------------------------------------------------------------------------------- prototypes


def kmeans(x: torch.Tensor, k: int, seed: int, iters: int = 25) -> torch.Tensor:
    """Cluster index of each row of ``x`` (k-means++ seeding, Lloyd iterations; deterministic)."""
    n = x.shape[0]
    k = max(1, min(k, n))
    g = torch.Generator().manual_seed(seed)
    centres = [x[int(torch.randint(n, (1,), generator=g))]]
    for _ in range(1, k):
        d = torch.cdist(x, torch.stack(centres)).min(1).values ** 2
        if float(d.sum()) <= 0:
            break
        centres.append(x[int(torch.multinomial(d / d.sum(), 1, generator=g))])
    c = torch.stack(centres)
    assign = torch.zeros(n, dtype=torch.long)
    for _ in range(iters):
        assign = torch.cdist(x, c).argmin(1)
        new = torch.stack([x[assign == j].mean(0) if bool((assign == j).any()) else c[j] for j in range(len(c))])
        if torch.allclose(new, c):
            break
        c = new
    return assign


def _histogram(
    ids: torch.Tensor, mask: torch.Tensor, topk: int, min_members: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Members' one-hot slots (m, ..., 1) -> per slot the ids that at least ``min_members`` members have there
    (k-anonymity: an id of fewer rows never leaves the client), the ``topk`` most common of them with their
    shares renormalised over the kept ids, and whether the slot keeps any id (a slot that keeps none is absent)."""
    m = ids.shape[0]
    flat = ids[..., 0].reshape(m, -1)
    fmask = mask.reshape(m, -1)
    out_ids = torch.zeros(flat.shape[1], topk, dtype=torch.long)
    out_w = torch.zeros(flat.shape[1], topk)
    for s in range(flat.shape[1]):
        uniq, cnt = flat[fmask[:, s], s].unique(return_counts=True)
        uniq, cnt = uniq[cnt >= min_members], cnt[cnt >= min_members]
        order = cnt.argsort(descending=True, stable=True)[:topk]
        out_ids[s, : len(order)] = uniq[order]
        out_w[s, : len(order)] = cnt[order].float() / cnt[order].sum()
    shape = tuple(ids.shape[1:-1]) + (topk,)
    return out_ids.view(shape), out_w.view(shape), (out_w > 0).any(-1).view(ids.shape[1:-1])


def _prompt_layout(ids: torch.Tensor, w: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A prompt's kept slots (L_p, ...) moved to its end in their order, left-padded like a real prompt.

    Scoring reads an option's first token off the prompt's last position, and a masked position's output is
    no prediction. Absent slots are skipped as keys and positions count only present ones
    (``items.option_logprobs``), so for every kept token this layout computes exactly what the masked one
    does; it only makes the last position a kept token."""
    order = mask.int().argsort(stable=True)  # absent slots first, the kept ones after, in their order
    return ids[order], w[order], mask[order]


def _option_layout(ids: torch.Tensor, w: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each option (K, L_o, ...) cut at its first absent slot: a slot's log-likelihood is read off the slot
    before it, so a kept slot after an absent one would be scored from no token. The option's score is then the
    mean log-likelihood of its longest kept prefix (answers are right-padded, so real rows end the same way)."""
    keep = mask.int().cumprod(-1).bool()
    return ids * keep[..., None], w * keep[..., None], keep


def prototypes(
    items: Items, features: torch.Tensor, *, k: int, min_members: int, topk: int, seed: int
) -> tuple[Items | None, int]:
    """Per correct-option index, k-means on ``features`` (one row per sample) into at most
    min(k, n // min_members) clusters; clusters under ``min_members`` samples join their nearest kept
    cluster. Each prototype is its cluster's mean sample (see the module docstring). Returns the prototypes
    (None if none is kept) and how many clusters were dropped because the k-anonymous sample cannot be scored:
    an option that keeps no token (it would score 0, above any real option), or neither a prompt token nor a
    visual token left to read the options after."""
    assert items.label is not None
    protos, dropped = [], 0
    for label in sorted(set(items.label.tolist())):
        idx = (items.label == label).nonzero().flatten()
        if len(idx) < min_members:
            continue
        assign = kmeans(features[idx].float(), min(k, len(idx) // min_members), seed + label)
        sizes = torch.bincount(assign, minlength=int(assign.max()) + 1)
        kept = (sizes >= min_members).nonzero().flatten()
        centres = torch.stack([features[idx][assign == j].float().mean(0) for j in kept.tolist()])
        small = sizes[assign] < min_members
        if bool(small.any()):
            assign[small] = kept[torch.cdist(features[idx][small].float(), centres).argmin(1)]
        for j in kept.tolist():
            members = items.select(idx[assign == j])
            p_ids, p_w, p_mask = _prompt_layout(*_histogram(members.prompt_ids, members.prompt_mask, topk, min_members))
            o_ids, o_w, o_mask = _option_layout(*_histogram(members.opt_ids, members.opt_mask, topk, min_members))
            if not bool(o_mask.any(-1).all()) or not (bool(p_mask.any()) or members.visual.shape[1]):
                dropped += 1
                continue
            protos.append(Items(
                visual=members.visual.float().mean(0, keepdim=True), prompt_ids=p_ids[None], prompt_w=p_w[None],
                prompt_mask=p_mask[None], opt_ids=o_ids[None], opt_w=o_w[None], opt_mask=o_mask[None],
                label=torch.tensor([label]),
            ))  # fmt: skip
    return (Items.cat(protos) if protos else None), dropped


# ----------------------------------------------------------------------------------------- meta model


def expert_inputs(scores: Sequence[torch.Tensor], k_max: int) -> torch.Tensor:
    """Per-expert option scores [(N, K)] -> (N, E, K_max) option log-probabilities, floored, padded."""
    n, k = scores[0].shape
    out = torch.full((n, len(scores), k_max), FLOOR)
    for e, s in enumerate(scores):
        out[:, e, :k] = torch.log_softmax(s.float(), dim=-1).clamp(min=FLOOR)
    return out


class MetaModel(nn.Module):
    """The paper's meta model, with options in place of classes (see the module docstring). It averages the
    transformer's outputs over the experts, as the released CIFAR-100 code does (its CIFAR-10 code sums them):
    the two differ by the factor E, which ``fc`` absorbs."""

    def __init__(self, k_max: int, width: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.k_max = k_max
        self.expand = nn.Linear(k_max, width)
        with warnings.catch_warnings():  # torch notes that an odd head count skips its nested-tensor fast path
            warnings.simplefilter("ignore", UserWarning)
            self.transformer = nn.Transformer(
                d_model=width, nhead=heads, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=ffn,
                dropout=dropout, batch_first=True,
            )  # fmt: skip
        self.fc = nn.Linear(width, k_max)

    def forward(self, x: torch.Tensor, options: torch.Tensor) -> torch.Tensor:
        """(N, E, K_max) expert log-probs, (N,) option counts -> (N, K_max) logits (-inf past each count)."""
        h = self.expand(x)
        h = self.transformer(h, h).mean(1)
        logits = self.fc(h)
        pad = torch.arange(self.k_max, device=x.device)[None] >= options[:, None]
        return logits.masked_fill(pad, float("-inf"))


def train_meta(
    x: torch.Tensor, options: torch.Tensor, labels: torch.Tensor, *, width: int, heads: int, ffn: int,
    dropout: float, lr: float, epochs: int, passes: int, batch: int, ema: float, seed: int,
) -> tuple[MetaModel, dict[str, float]]:
    """Train a meta model with CE on prototypes (``epochs`` x ``passes`` shuffled passes of ``batch``, Adam)
    and return its EMA copy (eval mode) with a log (final CE; accuracy of the EMA teacher and of the mean
    expert on the prototypes). The EMA starts at zero with bias correction (the released code starts it at
    the untrained model, which at a few hundred steps would keep ema^steps of that model in the teacher).
    Every pass covers all prototypes, as the paper's 30 epochs x 5 passes; the released trainer steps only on
    the first batch of each epoch (``batch_idx == 0``)."""
    k_max = x.shape[-1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MetaModel(k_max, width, heads, ffn, dropout)
    avg = copy.deepcopy(model)
    for p in avg.parameters():
        p.requires_grad_(False)
        p.zero_()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    steps, loss = 0, torch.zeros(())
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)  # dropout masks
        for _ in range(epochs * passes):
            order = torch.randperm(len(x), generator=g)
            for s in range(0, len(x), batch):
                sel = order[s : s + batch]
                loss = F.cross_entropy(model(x[sel], options[sel]), labels[sel])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
                with torch.no_grad():
                    for a, p in zip(avg.parameters(), model.parameters()):
                        a.mul_(ema).add_(p, alpha=1 - ema)
    if steps:
        with torch.no_grad():
            for a in avg.parameters():
                a.div_(1 - ema**steps)
    avg.eval()
    with torch.no_grad():
        acc = float((avg(x, options).argmax(-1) == labels).float().mean()) if len(x) else float("nan")
        mean_expert = x.mean(1).masked_fill(torch.arange(k_max)[None] >= options[:, None], float("-inf"))
        base = float((mean_expert.argmax(-1) == labels).float().mean()) if len(x) else float("nan")
    return avg, {"ce": float(loss.detach()), "teacher_acc": acc, "mean_expert_acc": base, "steps": float(steps)}


# ------------------------------------------------------------------------------------------- KD loss


def jsd(student: torch.Tensor, teacher: torch.Tensor, mix: str = "probs") -> torch.Tensor:
    """Jensen-Shannon divergence per row. ``probs``: 0.5 KL(p_s || m) + 0.5 KL(p_t || m) with m the mean of
    the two distributions (the definition); ``logits``: m = softmax of the mean logits, KL(m || p_s) and
    KL(m || p_t) (what the released code computes)."""
    log_s, log_t = F.log_softmax(student, -1), F.log_softmax(teacher, -1)
    if mix == "logits":
        log_m = F.log_softmax((student + teacher) / 2, -1)
        kl = lambda a, b: (a.exp() * (a - b)).sum(-1)  # noqa: E731  KL(exp a || exp b)
        return 0.5 * (kl(log_m, log_s) + kl(log_m, log_t))
    log_m = torch.logsumexp(torch.stack([log_s, log_t]), 0) - torch.log(torch.tensor(2.0))
    return 0.5 * ((log_s.exp() * (log_s - log_m)).sum(-1) + (log_t.exp() * (log_t - log_m)).sum(-1))


def kl_rows(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(softmax(teacher/T) || softmax(student/T)) per row."""
    log_s, log_t = F.log_softmax(student / temperature, -1), F.log_softmax(teacher / temperature, -1)
    return (log_t.exp() * (log_t - log_s)).sum(-1)


def kd_loss(
    student: torch.Tensor, teacher: torch.Tensor, *, temperature: float = 1.0, kl: float = 0.8, ce: float = 0.2,
    js: float = 1.0, mix: str = "probs",
) -> torch.Tensor:
    """Mosaic's distillation loss, summed over rows (callers divide by the batch): kl T^2 KL(p_t || p_s)
    + ce CE(s, argmax t) + js JSD(s/T, t/T), with option scores as the logits."""
    s, t = student.float(), teacher.float().to(student.device)
    out = kl * temperature**2 * kl_rows(s, t, temperature)
    out = out + ce * F.cross_entropy(s, t.argmax(-1), reduction="none")
    return (out + js * jsd(s / temperature, t / temperature, mix)).sum()
