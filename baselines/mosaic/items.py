"""Mosaic's samples in the model's input space, and their option scores.

An ``Items`` batch is what a Mosaic generator produces, what a client's real rows are turned into to train
it, and what a prototype is: per sample, the visual tokens as vision-tower features (the projector's input,
so every architecture that shares the tower and tokenizer reads the same sample through its own frozen
projector), a prompt of ``L_p`` token slots and ``K`` options of ``L_o`` token slots. A token slot is a
sparse distribution over the shared vocabulary (ids, weights; one-hot for real and generated samples, a
histogram for a prototype), so nothing in it belongs to one architecture.

A sample is read by an architecture as one sequence per option, laid out like a scored row:
``[prompt-format prefix][visual tokens][prompt slots][prompt-format suffix][option slots]``. An option's score
is the mean log-likelihood of its tokens (the harness's length-normalised choice score,
drake/models/scoring.py), so the K scores are the "logits" Mosaic's teacher and student exchange.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from drake.errors import DrakeError
from drake.fl.client import ArchModel
from drake.models.batching import collate
from drake.models.prompting import add_special_tokens, format_answer, format_prompt
from drake.models.scoring import image_encoder

#: marks where a sample's prompt goes in the architecture's prompt format (split out, never tokenised)
SLOT = "MOSAICPROMPTSLOT"


@dataclass
class Items:
    """A batch of samples of one shape: (B, n_vis, d_vis) visual features, (B, L_p, k) prompt slots, and
    (B, K, L_o, k) option slots (ids + weights, with masks for absent slots); ``label`` is the correct option
    (real samples and prototypes) or None (generated ones)."""

    visual: torch.Tensor
    prompt_ids: torch.Tensor
    prompt_w: torch.Tensor
    prompt_mask: torch.Tensor
    opt_ids: torch.Tensor
    opt_w: torch.Tensor
    opt_mask: torch.Tensor
    label: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.visual.shape[0])

    @property
    def num_options(self) -> int:
        return int(self.opt_ids.shape[1])

    @property
    def shape_key(self) -> tuple[int, int, int, int]:
        """(visual tokens, prompt slots, options, option slots): samples of one key batch together."""
        return (int(self.visual.shape[1]), int(self.prompt_ids.shape[1]), self.num_options, int(self.opt_ids.shape[2]))

    def select(self, idx: torch.Tensor | Sequence[int]) -> Items:
        idx = torch.as_tensor(idx, dtype=torch.long)
        return Items(**{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[idx]) for f in fields(self)})

    @staticmethod
    def cat(parts: Sequence[Items]) -> Items:
        out: dict[str, Any] = {}
        for f in fields(Items):
            vals = [getattr(p, f.name) for p in parts]
            out[f.name] = None if any(v is None for v in vals) else torch.cat(vals)
        return Items(**out)

    def to_arrays(self, prefix: str) -> dict[str, torch.Tensor]:
        """Flat tensors for a ClientUpdate's extras (every byte counted as communication)."""
        return {f"{prefix}/{f.name}": getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @staticmethod
    def from_arrays(arrays: dict[str, torch.Tensor], prefix: str) -> Items:
        return Items(**{f.name: arrays.get(f"{prefix}/{f.name}") for f in fields(Items)})


@dataclass(frozen=True)
class Frame:
    """One architecture's prompt format around a sample: token ids before the images and after the prompt,
    the end-of-answer id and the ids a generator must never emit (image placeholder, padding, BOS, ...)."""

    pre: tuple[int, ...]
    post: tuple[int, ...]
    eos: int | None
    banned: tuple[int, ...]
    vocab: int


def frame_of(am: ArchModel) -> Frame:
    """The prompt format of ``am`` (plain prompts for the tiny zoo; the chat template's turn for hub models)."""
    processor, tok = am.loaded.processor, am.loaded.tokenizer
    text = format_prompt(processor, SLOT)
    pre, _, post = text.partition(SLOT)
    pre_ids = tok(pre, add_special_tokens=add_special_tokens(processor))["input_ids"] if pre or add_special_tokens(processor) else []
    post_ids = tok(post, add_special_tokens=False)["input_ids"] if post else []
    vocab = int(embedding_matrix(am).shape[0])
    banned = set(getattr(tok, "all_special_ids", []) or []) - {tok.eos_token_id}
    image_id = getattr(getattr(am.loaded.model, "config", None), "image_token_id", None)
    if image_id is not None:
        banned.add(int(image_id))
    banned |= set(range(len(tok), vocab))  # embedding rows past the tokenizer (padding to a multiple)
    return Frame(tuple(pre_ids), tuple(post_ids), tok.eos_token_id, tuple(sorted(banned)), vocab)


def embedding_matrix(am: ArchModel) -> torch.Tensor:
    """The frozen input-embedding matrix (vocab x d_text) of ``am``."""
    return am.model.get_input_embeddings().weight


def encoder(am: ArchModel) -> nn.Module:
    """The LLaVA module holding the vision tower and the projector (Mosaic's samples need both)."""
    enc = image_encoder(am.model)
    if enc is None:
        raise DrakeError(
            f"mosaic: {am.name} is not a plain LLaVA model (vision tower + projector without adapters); "
            "use a LLaVA-style checkpoint or another method"
        )
    return enc


def project(am: ArchModel, visual: torch.Tensor) -> torch.Tensor:
    """Vision-tower features (B, n, d_vis) -> visual tokens in ``am``'s text space (its frozen projector)."""
    if visual.shape[1] == 0:
        return visual.new_zeros(visual.shape[0], 0, embedding_matrix(am).shape[1])
    proj = encoder(am).multi_modal_projector
    p = next(proj.parameters())
    return proj(visual.to(p.device, p.dtype))


def embed_slots(embedding: torch.Tensor, ids: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Sparse token distributions (..., k) -> their expected input embeddings (..., d)."""
    e = embedding[ids.to(embedding.device)]
    return (e * w.to(e.device, e.dtype).unsqueeze(-1)).sum(-2)


def _prefix(
    am: ArchModel, frame: Frame, visual_tokens: torch.Tensor, prompt_emb: torch.Tensor, prompt_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings (B, P, d) and mask (B, P) of ``[format prefix][visual tokens][prompt slots][format suffix]``."""
    emb = embedding_matrix(am)
    device, dtype = emb.device, emb.dtype
    b = prompt_emb.shape[0]
    ids = lambda seq: torch.tensor(seq, dtype=torch.long, device=device)  # noqa: E731
    pre = emb[ids(frame.pre)].unsqueeze(0).expand(b, -1, -1)
    post = emb[ids(frame.post)].unsqueeze(0).expand(b, -1, -1)
    seq = torch.cat([pre, visual_tokens.to(device, dtype), prompt_emb.to(device, dtype), post], dim=1)
    ones = lambda n: torch.ones(b, n, dtype=torch.bool, device=device)  # noqa: E731
    mask = torch.cat([ones(len(frame.pre) + visual_tokens.shape[1]), prompt_mask.to(device), ones(len(frame.post))], 1)
    return seq, mask


def option_logprobs(
    am: ArchModel, model: nn.Module, frame: Frame, visual_tokens: torch.Tensor, prompt_emb: torch.Tensor,
    prompt_mask: torch.Tensor, opt_emb: torch.Tensor, opt_ids: torch.Tensor, opt_w: torch.Tensor, opt_mask: torch.Tensor,
) -> torch.Tensor:
    """(B, K) mean log-likelihood of each option's tokens after its sample's prompt (one sequence per option).

    Embeddings are given (so gradients reach a generator through them); targets are sparse distributions
    (ids, weights): a slot's log-likelihood is sum_k w_k log p(id_k), the exact log-likelihood when one-hot.
    """
    b, k, lo = opt_ids.shape[:3]
    prefix, pmask = _prefix(am, frame, visual_tokens, prompt_emb, prompt_mask)
    device = prefix.device
    seq = torch.cat([prefix.unsqueeze(1).expand(-1, k, -1, -1), opt_emb.to(device, prefix.dtype)], dim=2).flatten(0, 1)
    mask = torch.cat([pmask.unsqueeze(1).expand(-1, k, -1), opt_mask.to(device)], dim=2).flatten(0, 1).long()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(inputs_embeds=seq, attention_mask=mask, position_ids=positions, logits_to_keep=lo + 1, use_cache=False)
    logp = torch.log_softmax(out.logits[:, :-1].float(), dim=-1)  # (B*K, L_o, V): predictions of the option slots
    ids = opt_ids.to(device).flatten(0, 1)
    tok = (logp.gather(-1, ids) * opt_w.to(device).flatten(0, 1).float()).sum(-1)
    valid = opt_mask.to(device).flatten(0, 1).float()
    score = (tok * valid).sum(-1) / valid.sum(-1).clamp(min=1.0)
    return score.view(b, k)


@torch.no_grad()
def prefix_states(am: ArchModel, model: nn.Module, frame: Frame, items: Items, batch: int = 32) -> torch.Tensor:
    """(B, d) the model's last hidden state at the end of each sample's prompt (where the answer is read):
    the analogue of the paper's penultimate features, clustered into prototypes. CPU float32."""
    emb = embedding_matrix(am)
    out = []
    for s in range(0, len(items), batch):
        it = items.select(range(s, min(s + batch, len(items))))
        seq, mask = _prefix(am, frame, project(am, it.visual), embed_slots(emb, it.prompt_ids, it.prompt_w), it.prompt_mask)
        mask = mask.long()
        res = model(inputs_embeds=seq, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                    output_hidden_states=True, use_cache=False)  # fmt: skip
        out.append(res.hidden_states[-1][:, -1].float().cpu())
    return torch.cat(out)


def score_items(am: ArchModel, model: nn.Module, frame: Frame, items: Items, batch: int = 32) -> torch.Tensor:
    """(B, K) option scores of ``items`` under ``model`` (architecture ``am``), ``batch`` samples per forward;
    gradients flow when the caller enables them."""
    emb = embedding_matrix(am)
    parts = []
    for s in range(0, len(items), batch):
        it = items.select(range(s, min(s + batch, len(items))))
        parts.append(option_logprobs(
            am, model, frame, project(am, it.visual), embed_slots(emb, it.prompt_ids, it.prompt_w), it.prompt_mask,
            embed_slots(emb, it.opt_ids, it.opt_w), it.opt_ids, it.opt_w, it.opt_mask))  # fmt: skip
    return torch.cat(parts) if parts else torch.zeros(0, items.num_options)


# ------------------------------------------------------------------------------------ real rows


@torch.no_grad()
def tower_features(am: ArchModel, rows: Sequence[dict[str, Any]], batch: int = 16) -> list[torch.Tensor]:
    """Per row, its images' vision-tower features as the projector receives them ((n_img * T, d_vis), CPU)."""
    enc = encoder(am)
    out: list[torch.Tensor] = []
    for s in range(0, len(rows), batch):
        chunk = list(rows[s : s + batch])
        counts = [len(r.get("images") or []) for r in chunk]
        if not sum(counts):
            out.extend(torch.zeros(0, 0) for _ in chunk)
            continue
        captured: list[torch.Tensor] = []
        hook = enc.multi_modal_projector.register_forward_pre_hook(lambda _m, a, out=captured: out.append(a[0].detach()))
        try:
            pixels = collate(am.loaded, chunk, with_answer=False)["pixel_values"]
            cfg = enc.config
            enc.get_image_features(pixel_values=pixels, vision_feature_layer=cfg.vision_feature_layer,
                                   vision_feature_select_strategy=cfg.vision_feature_select_strategy)  # fmt: skip
        finally:
            hook.remove()
        feats = captured[0].float().cpu()  # (n_images, T, d_vis)
        start = 0
        for n in counts:
            out.append(feats[start : start + n].reshape(-1, feats.shape[-1]))
            start += n
    return out


def _slots(ids: Sequence[int], length: int, pad: int, left: bool) -> tuple[list[int], list[bool]]:
    ids = list(ids)[-length:] if left else list(ids)[:length]
    gap = length - len(ids)
    if left:
        return [pad] * gap + ids, [False] * gap + [True] * len(ids)
    return ids + [pad] * gap, [True] * len(ids) + [False] * gap


def option_lists(rows: Sequence[dict[str, Any]], open_choices: int, seed: int) -> tuple[list[list[str]], list[int]]:
    """Each row's options and the index of its answer. Choice rows keep their choices; open-ended rows get
    the answer plus ``open_choices - 1`` other answers of the same task on this client (never leaving it),
    at a seeded position."""
    g = torch.Generator().manual_seed(seed)
    answers = sorted({str(r["answer"]) for r in rows})
    opts, labels = [], []
    for r in rows:
        if r.get("choices"):
            choices = [str(c) for c in r["choices"]]
            opts.append(choices)
            labels.append(choices.index(str(r["answer"])) if str(r["answer"]) in choices else 0)
            continue
        others = [a for a in answers if a != str(r["answer"])]
        pick = [others[i] for i in torch.randperm(len(others), generator=g)[: max(0, open_choices - 1)].tolist()]
        at = int(torch.randint(len(pick) + 1, (1,), generator=g))
        opts.append([*pick[:at], str(r["answer"]), *pick[at:]])
        labels.append(at)
    return opts, labels


def real_items(
    am: ArchModel, frame: Frame, rows: Sequence[dict[str, Any]], *, prompt_tokens: int, option_tokens: int,
    open_choices: int, seed: int,
) -> Items | None:
    """A client's rows of one task as one-hot ``Items`` (on the client only: they train its generator and
    make its prototypes). The prompt keeps its last ``prompt_tokens`` text tokens (image placeholders
    dropped); each option is its answer text + end-of-answer, cut to the task's option length (at most
    ``option_tokens``). Rows whose image or option count differs from the task's most common one are left
    out; None when fewer than two rows or options remain."""
    tok = am.loaded.tokenizer
    processor = am.loaded.processor
    image_token = getattr(processor, "image_token", None) or "<image>"
    opts, labels = option_lists(rows, open_choices, seed)
    shapes = [(len(r.get("images") or []), len(o)) for r, o in zip(rows, opts)]
    common = max(set(shapes), key=shapes.count) if shapes else (0, 0)
    keep = [i for i, s in enumerate(shapes) if s == common]
    if len(keep) < 2 or common[1] < 2:
        return None
    rows, opts, labels = [rows[i] for i in keep], [opts[i] for i in keep], [labels[i] for i in keep]
    eos = [frame.eos] if frame.eos is not None else []
    opt_tok = [[tok(format_answer(processor, o), add_special_tokens=False)["input_ids"] + eos for o in os_] for os_ in opts]
    lo = max(1, min(option_tokens, max(len(t) for ts in opt_tok for t in ts)))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    p_ids, p_mask, o_ids, o_mask = [], [], [], []
    for r, ts in zip(rows, opt_tok):
        text = str(r["prompt"]).replace(image_token, " ")
        ids, m = _slots(tok(text, add_special_tokens=False)["input_ids"], prompt_tokens, pad, left=True)
        p_ids.append(ids)
        p_mask.append(m)
        pairs = [_slots(t, lo, pad, left=False) for t in ts]
        o_ids.append([p[0] for p in pairs])
        o_mask.append([p[1] for p in pairs])
    feats = tower_features(am, rows)
    d_vis = max((f.shape[-1] for f in feats), default=0)
    visual = torch.stack([f if f.numel() else torch.zeros(0, d_vis) for f in feats])
    prompt_ids = torch.tensor(p_ids, dtype=torch.long).unsqueeze(-1)
    opt_ids = torch.tensor(o_ids, dtype=torch.long).unsqueeze(-1)
    return Items(
        visual=visual, prompt_ids=prompt_ids, prompt_w=torch.ones(prompt_ids.shape), prompt_mask=torch.tensor(p_mask),
        opt_ids=opt_ids, opt_w=torch.ones(opt_ids.shape), opt_mask=torch.tensor(o_mask), label=torch.tensor(labels),
    )  # fmt: skip
