"""RELA (relevance-guided aggregation): gradient sketches from a shared small model, similarity, weights.

Gradients of different architectures are not comparable, so every client computes its sketch with the
*same* small frozen model W_s (the smallest model of the scenario): the gradient of the token-level CE loss
on the client's current batch w.r.t. the weight of W_s's last transformer block's MLP ``down_proj`` (the
layer that feeds the final norm and the LM head), keeps the first ``ratio`` of its rows and adds Gaussian
noise (the paper's "sanitization"; not a formal DP guarantee). A round's sketches are averaged, then
EMA'd across rounds; the server compares clients by the mean column-wise cosine similarity and turns a
row of similarities into weights with a softmax at temperature tau that excludes the client itself.

Differences from the official code (``federated_methods/fedmosaic.py``):
- The official gradient is analytic with a *diagonal* approximation of the RMSNorm Jacobian; we take the
  exact gradient by autograd through the final norm and LM head only (one tiny backward on detached
  hidden states), which is what "last-layer gradient" means.
- The official sampling steps are irregular (index arithmetic fires at steps 1, 6, 14, 27, ... for 94
  iterations); we sketch after every ``every``-th step (m = 10) and at least once per round.
- ``gradient_ratio`` keeps the first 40% of rows (deterministic truncation, as the code does).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from drake.errors import DrakeError
from drake.models.batching import IGNORE_INDEX, collate

_SHARED: dict[tuple[str, str], Any] = {}  # (name, device) -> LoadedModel, per process


# ---------------------------------------------------------------------------------------- W_s


def text_shape(name: str) -> dict[str, int]:
    """Text-model shape (hidden, layers, heads, kv_heads, ffn) of a zoo member, model folder or hub id."""
    from drake.models.zoo import ZOO

    if name in ZOO:
        s = ZOO[name]
        return {"hidden": s.text_hidden, "layers": s.text_layers, "heads": s.text_heads, "kv_heads": s.text_kv_heads,
                "ffn": s.text_ffn}  # fmt: skip
    import os
    from pathlib import Path

    from transformers import AutoConfig

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")
    try:
        cfg = AutoConfig.from_pretrained(name, local_files_only=offline or Path(name).expanduser().exists())
    except (OSError, ValueError) as exc:
        raise DrakeError(f"cannot read the config of model {name!r}: {exc}") from None
    t = getattr(cfg, "text_config", cfg)
    heads = int(getattr(t, "num_attention_heads", 1))
    return {"hidden": int(t.hidden_size), "layers": int(t.num_hidden_layers), "heads": heads,
            "kv_heads": int(getattr(t, "num_key_value_heads", heads) or heads),
            "ffn": int(getattr(t, "intermediate_size", 4 * int(t.hidden_size)))}  # fmt: skip


def text_size(name: str) -> int:
    """Approximate text-model parameter count (to rank architectures by size)."""
    s = text_shape(name)
    h, kv = s["hidden"], s["hidden"] // s["heads"] * s["kv_heads"]
    return s["layers"] * (2 * h * h + 2 * h * kv + 3 * h * s["ffn"])


def smallest_model(names: Iterable[str]) -> str:
    """The smallest architecture (ties broken by name): the anchor of A/B alignment and the default W_s."""
    uniq = sorted(set(names))
    if not uniq:
        raise DrakeError("no architectures to choose W_s / the alignment anchor from")
    return min(uniq, key=lambda n: (text_size(n), n))


def shared_model(name: str, device: torch.device | str) -> Any:
    """A frozen, adapter-free copy of model ``name`` on ``device``, loaded once per process."""
    key = (name, str(device))
    if key not in _SHARED:
        from drake.models.loading import load_model

        _SHARED[key] = load_model(name, device=device, progress=False)
    return _SHARED[key]


def _last_layer_parts(model: nn.Module) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(last block's MLP down_proj, final norm, LM head) of a LLaVA-style or text-only causal LM."""
    stacks = [(n, m) for n, m in model.named_modules() if hasattr(m, "layers") and hasattr(m, "norm")]
    if not stacks:
        raise DrakeError("W_s has no decoder stack with .layers and .norm; pick another sketch_model")
    stack = min(stacks, key=lambda nm: len(nm[0]))[1]
    down = getattr(getattr(stack.layers[-1], "mlp", None), "down_proj", None)
    head = model.get_output_embeddings()
    if down is None or head is None:
        raise DrakeError("W_s's last layer has no mlp.down_proj or the model has no LM head; pick another sketch_model")
    return down, stack.norm, head


# ------------------------------------------------------------------------------------ sketches


def last_layer_gradient(ws: Any, rows: Sequence[Mapping[str, Any]]) -> torch.Tensor:
    """Exact dCE/dW of W_s's last ``down_proj`` on ``rows`` (d_model x d_ff, float32, on W_s's device).

    One no-grad forward captures the down_proj input u and the pre-norm hidden state h; then
    ``g = autograd(CE(head(norm(h))), h)`` and ``dW = g^T u`` over answer tokens (mean CE).
    """
    model = ws.model
    down, norm, head = _last_layer_parts(model)
    grabbed: dict[str, torch.Tensor] = {}
    hooks = [
        down.register_forward_hook(lambda m, a, o: grabbed.__setitem__("u", a[0])),
        norm.register_forward_pre_hook(lambda m, a: grabbed.__setitem__("h", a[0])),
    ]
    batch = collate(ws, rows, with_answer=True)
    labels = batch.pop("labels")
    try:
        with torch.no_grad():
            model(**batch, use_cache=False, logits_to_keep=1)
    finally:
        for h in hooks:
            h.remove()
    target = labels[:, 1:]
    sel = target != IGNORE_INDEX
    if not bool(sel.any()):
        raise DrakeError("gradient sketch: the batch has no answer tokens")
    u = grabbed["u"][:, :-1][sel].float()
    h = grabbed["h"][:, :-1][sel].detach().float().requires_grad_(True)
    with torch.enable_grad():
        logits = head(norm(h.to(ws.dtype))).float()
        loss = F.cross_entropy(logits, target[sel].to(logits.device))
        (g,) = torch.autograd.grad(loss, h)
    return g.T @ u


def sanitize(grad: torch.Tensor, ratio: float, noise_std: float, generator: torch.Generator) -> torch.Tensor:
    """Keep the first ``floor(ratio * rows)`` rows and add N(0, noise_std^2) (CPU float32)."""
    keep = max(1, int(grad.shape[0] * ratio))
    g = grad[:keep].detach().to("cpu", torch.float32)
    if noise_std > 0:
        g = g + torch.randn(g.shape, generator=generator) * noise_std
    return g


def ema(old: torch.Tensor | None, new: torch.Tensor, decay: float) -> torch.Tensor:
    """``decay * old + (1 - decay) * new``; the first round takes ``new`` (official: (old + new) / 2)."""
    return new.clone() if old is None else decay * old + (1.0 - decay) * new


# ------------------------------------------------------------------------------ server side


def similarity(sketches: Sequence[torch.Tensor]) -> torch.Tensor:
    """N x N mean over columns c of cos(g_i[:, c], g_j[:, c]) (the official column-wise task similarity)."""
    if not sketches:
        return torch.zeros(0, 0)
    g = torch.stack([s.to(torch.float64) for s in sketches])  # N x k x d_ff
    g = F.normalize(g, dim=1)
    return torch.einsum("ikc,jkc->ijc", g, g).mean(-1)


def relevance_weights(sim: torch.Tensor, tau: float = 0.5, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Row i: softmax_j(S_ij / tau) over j != i (and ``allowed[i, j]``); rows with no candidate are zero."""
    n = sim.shape[0]
    mask = ~torch.eye(n, dtype=torch.bool)
    if allowed is not None:
        mask &= allowed.bool()
    logits = (sim.to(torch.float64) / tau).masked_fill(~mask, -math.inf)
    w = torch.softmax(logits, dim=1)
    return torch.nan_to_num(w, nan=0.0)


def uniform_weights(n: int, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """The no-RELA ablation: equal weight on every other (allowed) client."""
    mask = ~torch.eye(n, dtype=torch.bool)
    if allowed is not None:
        mask &= allowed.bool()
    w = mask.to(torch.float64)
    return w / w.sum(1, keepdim=True).clamp(min=1.0)


def mix(states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """Per key, the weighted sum over the states that have it, weights renormalised over those states."""
    keys: dict[str, None] = {}
    for s in states:
        keys.update(dict.fromkeys(s))
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        have = [(s[key], w) for s, w in zip(states, weights) if key in s and w > 0]
        total = sum(w for _, w in have)
        if total <= 0:
            continue
        acc = torch.zeros(have[0][0].shape, dtype=torch.float64)
        for t, w in have:
            acc += t.to(torch.float64) * (w / total)
        out[key] = acc.to(have[0][0].dtype)
    return out
