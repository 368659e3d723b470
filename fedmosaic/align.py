"""Cross-architecture alignment of the frozen PQ-LoRA A and B, once before federated training.

The same (P, Q) must mean the same thing in every model, so the frozen A, B of each larger model are aligned
to those of the smallest (anchor) model on public data (official ``train_abalign.py``, ``AB_init.py``):

- Step A: the PQ modules' inputs are captured on public rows in both models and paired token by token;
  each A_large minimises ``mean ||A_large x_large - A_anchor x_anchor||^2 + lambda * orth(A_large)``,
  then is projected to the nearest row-orthonormal matrix (A <- U V^T from its SVD).
- Step B (closed form, CCA / whitened Procrustes): with P = I and Q = 0 the B-branch outputs X1 (anchor)
  and X3 (large, with the aligned A) give S11, S33, S31 (+ gamma I); M = S33^-1/2 S31 S11^-1/2 = U S V^T and
  ``B_large <- S33^1/2 U V^T S11^-1/2 B_anchor``.

Differences from the official code, and why:
- The official orthogonality term normalises the *columns* of the r x d_in weight and penalises the
  d_in x d_in cosine matrix (its comment says r x r); for d_in > r that cannot reach zero. We penalise the
  off-diagonal cosines of A's r rows, which is what "orthogonal rows" asks for.
- The MSE is minimised on the captured activations' Gram matrices (exact, as A does not change the
  forward during alignment: the official code multiplies the adapter output by 0), with Adam on the full
  set instead of 5000 samples x batch 4 of AdamW; the tiny zoo default is 128 public rows.
- ``project_b`` (default on) also projects B_large to the nearest column-orthonormal matrix; the official
  code keeps T B_anchor as is. Theorem 1 assumes orthogonal columns, and equal column norms keep P's
  scale comparable across the architectures whose P are averaged.
- Tokens are paired one to one, which needs the same tokenizer (true for the whole tiny zoo); the
  official FuseLLM-style cross-tokenizer matching is not implemented (set ``align=false`` then).
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from drake.errors import DrakeError
from drake.io import atomic_write_bytes
from drake.models.batching import collate
from drake.spec import fingerprint
from fedmosaic.pqlora.config import PQLoraConfig
from fedmosaic.pqlora.layer import one_thread
from fedmosaic.pqlora.model import PQLoraModel, block_layers, frozen_ab, locate_linears

ALIGN_VERSION = 1


@dataclass(frozen=True)
class AlignSettings:
    """How A/B are aligned (official: 5000 public samples for A, 100 for B, lambda = 0.5, gamma = 1e-4)."""

    samples: int = 128
    batch_size: int = 16
    steps: int = 300
    lr: float = 5e-3
    ortho: float = 0.5
    gamma: float = 1e-4
    project_b: bool = True
    seed: int = 0
    image_size: int = 32


# ----------------------------------------------------------------------------------------- math


def row_orthogonality(a: torch.Tensor) -> torch.Tensor:
    """Mean squared off-diagonal cosine similarity between the rows of ``a`` (0 iff rows are orthogonal)."""
    an = torch.nn.functional.normalize(a, dim=1)
    gram = an @ an.T
    r = gram.shape[0]
    if r < 2:
        return gram.new_zeros(())
    off = gram[~torch.eye(r, dtype=torch.bool, device=gram.device)]
    return (off**2).mean()


def closest_row_orthonormal(a: torch.Tensor) -> torch.Tensor:
    """U V^T from the SVD of ``a`` (r x d, r <= d): the nearest matrix with orthonormal rows."""
    with one_thread():
        u, _, vh = torch.linalg.svd(a.double(), full_matrices=False)
    return (u @ vh).to(a.dtype)


def closest_col_orthonormal(b: torch.Tensor) -> torch.Tensor:
    """The nearest matrix with orthonormal columns (d x r, d >= r)."""
    return closest_row_orthonormal(b.T).T.contiguous()


def _mse(a: torch.Tensor, c: torch.Tensor, d: torch.Tensor, zz: torch.Tensor, n: int) -> torch.Tensor:
    """mean((X a^T - Z)^2) from C = X^T X, D = X^T Z, zz = sum(Z^2)."""
    r = a.shape[0]
    return (torch.trace(a @ c @ a.T) - 2 * torch.trace(a @ d) + zz) / (n * r)


def align_a_stats(
    c: torch.Tensor, d: torch.Tensor, zz: float, n: int, a_init: torch.Tensor, settings: AlignSettings
) -> tuple[torch.Tensor, float, float]:
    """Step A from C = X^T X, D = X^T Z, zz = sum(Z^2): (row-orthonormal A_large, MSE before, MSE after)."""
    c, d = c.double(), d.double()
    zz_t = torch.tensor(zz, dtype=torch.float64)
    before = float(_mse(a_init.double(), c, d, zz_t, n))
    scale = zz / (n * a_init.shape[0]) or 1.0  # MSE of A = 0: normalises the loss so lr means the same everywhere
    a = a_init.double().clone().requires_grad_(True)
    opt = torch.optim.Adam([a], lr=settings.lr)
    for _ in range(settings.steps):
        opt.zero_grad()
        loss = _mse(a, c, d, zz_t, n) / scale + settings.ortho * row_orthogonality(a)
        loss.backward()
        opt.step()
    out = closest_row_orthonormal(a.detach()).to(a_init.dtype)
    return out, before, float(_mse(out.double(), c, d, zz_t, n))


def align_a(
    x_large: torch.Tensor, z_anchor: torch.Tensor, a_init: torch.Tensor, settings: AlignSettings
) -> tuple[torch.Tensor, float, float]:
    """Step A for one module from paired activations (tokens x d_large) and anchor projections (tokens x r)."""
    x, z = x_large.double(), z_anchor.double()
    return align_a_stats(x.T @ x, x.T @ z, float((z**2).sum()), x.shape[0], a_init, settings)


def _sqrt_pair(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    vals, vecs = torch.linalg.eigh(s)
    vals = vals.clamp(min=1e-12)
    return (vecs * vals.rsqrt()) @ vecs.T, (vecs * vals.sqrt()) @ vecs.T


def align_b_cov(s11: torch.Tensor, s33: torch.Tensor, s31: torch.Tensor, b_anchor: torch.Tensor) -> torch.Tensor:
    """Step B from centred (co)variances (gamma already added): ``S33^1/2 U V^T S11^-1/2 B_anchor``."""
    s11_inv, _ = _sqrt_pair(s11.double())
    s33_inv, s33_sqrt = _sqrt_pair(s33.double())
    u, _, vh = torch.linalg.svd(s33_inv @ s31.double() @ s11_inv, full_matrices=False)
    return (s33_sqrt @ u @ vh @ s11_inv @ b_anchor.double()).to(b_anchor.dtype)


def align_b(y_anchor: torch.Tensor, y_large: torch.Tensor, b_anchor: torch.Tensor, gamma: float = 1e-4) -> torch.Tensor:
    """Step B from paired B-branch outputs (tokens x d_anchor, tokens x d_large), as the official code."""
    x1 = y_anchor.double() - y_anchor.double().mean(0, keepdim=True)
    x3 = y_large.double() - y_large.double().mean(0, keepdim=True)
    s11 = x1.T @ x1 + gamma * torch.eye(x1.shape[1], dtype=torch.float64)
    s33 = x3.T @ x3 + gamma * torch.eye(x3.shape[1], dtype=torch.float64)
    return align_b_cov(s11, s33, x3.T @ x1, b_anchor)


# ------------------------------------------------------------------------------------ capture


def public_rows(n: int, seed: int = 0, image_size: int = 32) -> list[dict[str, Any]]:
    """Public (pre-training distribution) rows: the tiny zoo's counterpart of the LLaVA-665K mix."""
    from drake.models.pretrain import draw_rows

    rows = draw_rows("train", n, seed, image_size)
    return [{k: r[k] for k in ("images", "prompt", "choices", "answer")} for r in rows]


@torch.no_grad()
def stream_inputs(
    loaded: Any, model: nn.Module, modules: Mapping[str, nn.Module], rows: Sequence[Mapping[str, Any]], batch_size: int
) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """Per batch of ``rows``: the real tokens' ids and each module's inputs on them (tokens x d_in, float64).

    Streaming keeps memory at one batch: callers accumulate Gram matrices, never all activations.
    """
    current: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda mod, a, o, k=k: current.__setitem__(k, a[0])) for k, m in modules.items()]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(rows), batch_size):
            batch = collate(loaded, rows[start:start + batch_size], with_answer=True)
            batch.pop("labels")
            current.clear()
            model(**batch, use_cache=False, logits_to_keep=1)
            keep = batch["attention_mask"].bool()
            yield batch["input_ids"][keep].cpu(), {k: current[k][keep].cpu().double() for k in modules}
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)


def anchor_modules(anchor_model: nn.Module, config: PQLoraConfig) -> dict[str, tuple[nn.Module, torch.Tensor, torch.Tensor]]:
    """Canonical PQ key -> (anchor's base linear, its frozen A, its frozen B), rebuilt from a bare anchor."""
    located = locate_linears(anchor_model, config)
    if not located:
        raise DrakeError("A/B alignment: the anchor model has no text-model linear layers to match")
    layers = 1 + max(layer for _, _, layer, _ in located)
    at = {layer: block for block, layer in block_layers(layers, config.num_blocks).items()}
    out = {}
    for name, base, layer, suffix in located:
        if layer in at:
            a, b = frozen_ab(config, at[layer], suffix, base, name)
            out[f"pq.{at[layer]}.{suffix}"] = (base, a, b)
    return out


# -------------------------------------------------------------------------------------- driver


def _align_module(
    k: str, anchor: tuple[nn.Module, torch.Tensor, torch.Tensor], zs: torch.Tensor, st: dict[str, Any], n: int,
    current: Mapping[str, torch.Tensor], settings: AlignSettings, state: dict[str, torch.Tensor], report: dict[str, Any],
) -> None:
    """Steps A and B of one PQ module from the streamed statistics (results go into ``state``/``report``)."""
    _, a_s, b_s = anchor
    c, d, sx = st["c"], st["d"], st["sx"]
    a_l, before, after = align_a_stats(c, d, float((zs**2).sum()), n, current[f"{k}.A"], settings)
    # B step from the same statistics: z_l = A_l x_l, y = z B^T (P = I, Q = 0), centred covariances
    al, bl, bs = a_l.double(), current[f"{k}.B"].double(), b_s.double()
    m_l, m_s = al @ sx / n, zs.mean(0)
    zl_zl = al @ c @ al.T - n * torch.outer(m_l, m_l)
    zl_zs = al @ d - n * torch.outer(m_l, m_s)
    zs_zs = zs.T @ zs - n * torch.outer(m_s, m_s)
    s11 = bs @ zs_zs @ bs.T + settings.gamma * torch.eye(bs.shape[0], dtype=torch.float64)
    s33 = bl @ zl_zl @ bl.T + settings.gamma * torch.eye(bl.shape[0], dtype=torch.float64)
    b_new = align_b_cov(s11, s33, bl @ zl_zs @ bs.T, b_s).to(current[f"{k}.B"].dtype)
    if settings.project_b:
        b_new = closest_col_orthonormal(b_new)
    state[f"{k}.A"], state[f"{k}.B"] = a_l, b_new
    report["modules"][k] = {"mse_before": before, "mse_after": after}


def _block(key: str) -> int:
    return int(key.split(".")[1])


def align_pair(
    anchor: Any, large: Any, pq: PQLoraModel, settings: AlignSettings, blocks: Sequence[int] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Aligned frozen A/B of ``pq`` (the larger model) to ``anchor`` on the shared (or given) blocks.

    Returns (ab_state of the aligned modules, report with the MSE before/after per module).
    """
    config = pq.pq_config
    anchors = anchor_modules(anchor.model, config)
    keys = [k for k in pq.pq_modules if k in anchors and (blocks is None or _block(k) in blocks)]
    if not keys:
        raise DrakeError("A/B alignment: the anchor and the model share no PQ block/module to align")
    rows = public_rows(settings.samples, settings.seed, settings.image_size)
    # anchor pass: keep only its r-dim A-projections z_s = A_anchor x_anchor (tokens x r)
    z_s: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    ids_s: list[torch.Tensor] = []
    for ids, xs in stream_inputs(anchor, anchor.model, {k: anchors[k][0] for k in keys}, rows, settings.batch_size):
        ids_s.append(ids)
        for k in keys:
            z_s[k].append(xs[k] @ anchors[k][1].double().T)
    # large pass: Gram statistics of x_large, paired with z_s token by token
    stats = {k: {"c": 0.0, "d": 0.0, "sx": 0.0} for k in keys}
    n = 0
    with pq.disable_adapter():
        base = {k: pq.pq_modules[k].base_layer for k in keys}
        for i, (ids, xs) in enumerate(stream_inputs(large, pq, base, rows, settings.batch_size)):
            if ids.shape != ids_s[i].shape or not torch.equal(ids, ids_s[i]):
                raise DrakeError(
                    f"A/B alignment pairs tokens one to one, but {anchor.name!r} and {large.name!r} tokenize the "
                    "public data differently; run with --set align=false (cross-tokenizer matching is not implemented)"
                )
            for k in keys:
                x = xs[k]
                st = stats[k]
                st["c"] = st["c"] + x.T @ x
                st["d"] = st["d"] + x.T @ z_s[k][i]
                st["sx"] = st["sx"] + x.sum(0)
            n += int(ids.numel())
    current = pq.ab_state()
    state: dict[str, torch.Tensor] = {}
    report: dict[str, Any] = {"modules": {}}
    with one_thread():  # small dense problems: threads only add synchronisation cost (large on a busy CPU)
        for k in keys:
            _align_module(k, anchors[k], torch.cat(z_s[k]), stats[k], n, current, settings, state, report)
    mods = report["modules"].values()
    report["mse_before"] = sum(m["mse_before"] for m in mods) / len(keys)
    report["mse_after"] = sum(m["mse_after"] for m in mods) / len(keys)
    report["tokens"] = n
    return state, report


def _weights_fingerprint(modules: Sequence[nn.Module]) -> str:
    h = hashlib.sha256()
    for m in modules:
        w = m.weight.detach()
        h.update(str(tuple(w.shape)).encode())
        h.update(w.reshape(-1)[:256].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).name or name)[:48]


def cache_path(
    anchor: Any, large: Any, pq: PQLoraModel, settings: AlignSettings, folder: Path | None = None,
    blocks: Sequence[int] | None = None,
) -> Path:
    """One file per (anchor, model) pair and everything the aligned A/B depend on (default folder:
    ``<models home>/pqlora-align``)."""
    from drake.models.zoo import models_home

    anchors = anchor_modules(anchor.model, pq.pq_config)
    key = fingerprint({
        "version": ALIGN_VERSION, "settings": asdict(settings), "pq": pq.pq_config.to_dict(),
        "blocks": sorted(blocks) if blocks is not None else None,
        "anchor": [anchor.name, _weights_fingerprint([m for m, _, _ in anchors.values()])],
        "large": [large.name, _weights_fingerprint([layer.base_layer for layer in pq.pq_modules.values()])],
    })[:16]  # fmt: skip
    return (folder or models_home() / "pqlora-align") / f"{_slug(anchor.name)}--{_slug(large.name)}--{key}.pt"


def align_to_anchor(
    anchor: Any, large: Any, pq: PQLoraModel, settings: AlignSettings | None = None, *, cache_dir: Path | None = None,
    blocks: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Align ``pq``'s frozen A/B to ``anchor`` in place, reading/writing the per-pair cache; returns the report."""
    settings = settings or AlignSettings()
    path = cache_path(anchor, large, pq, settings, cache_dir, blocks)
    if path.is_file():
        blob = torch.load(path, map_location="cpu", weights_only=True)
        pq.load_ab_state(blob["ab"])
        return {**blob["report"], "cached": True, "path": str(path)}
    state, report = align_pair(anchor, large, pq, settings, blocks)
    pq.load_ab_state(state)
    buf = io.BytesIO()
    torch.save({"ab": state, "report": report}, buf)
    atomic_write_bytes(path, buf.getvalue())
    return {**report, "cached": False, "path": str(path)}
