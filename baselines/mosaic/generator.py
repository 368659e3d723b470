"""A Mosaic client's generator of its own data, in the model's input space, and its adversarial training.

The paper's client trains a DCGAN on its images against a discriminator, with DeGAN's extra terms on its
own classifier's predictions (code: ``L_G = BCE(D(G(z)), 1) + c H + d sum_c pbar_c log pbar_c`` with c = 0,
d = 5). Here a sample is an ``Items`` row (visual tokens as vision-tower features, prompt and option token
slots), so the generator maps noise to

- visual slots: vectors in the tower's feature space (the frozen projector turns them into visual tokens),
  from an MLP of the noise with a learned embedding and bias per slot;
- token slots: one categorical distribution over the vocabulary per slot (a logit table; special ids banned).
  A token is sampled, discrete (straight-through Gumbel-softmax while training, so the discriminator and
  the classifier see real token embeddings), which keeps a generated sample in the same form as a real row
  and readable by every architecture that shares the tokenizer.

The text slots are independent of the noise and of each other. A z-dependent text head read out through
the embedding matrix (tied logits) collapsed to a few repeated tokens within our step budget in every
setting tried (straight-through gradients of discrete text are the known weak point of text GANs), while a
prompt template is a few tokens per slot; the visual slots carry the sample-to-sample variation.

The classifier term uses the client's model: option scores of generated samples (its adapter frozen), and
d * sum_k pbar_k log pbar_k over the batch-mean option distribution (diverse answers). The discriminator is
a small set network over slot embeddings (per-slot position embeddings, pooled per segment); it never leaves
the client. The visual biases start at the client's mean real sample and the logit table at its real
per-slot token frequencies (a data-dependent initialisation of a model of its own data), so a short
adversarial run starts from plausible samples.

Privacy: the uploaded logit table starts at log(count) of the task's real rows at each slot (add-1e-3
smoothed) and moves little in ``gen_steps`` Adam steps (about ``gen_lr`` per logit per step: ~0.04 at the
defaults' 20 x 2e-3, against ~log(1000) = 6.9 between a token one row has at a slot and one no row has), so
it reveals the task's per-slot token frequencies. Counts of fewer than ``min_count`` rows (the prototypes'
k, ``proto_min_members``) start at zero, so a token of fewer rows at a slot starts where an unseen one does:
the same k-anonymity as the prototypes', over the task's rows instead of a cluster's. What the adversarial
steps then move (a few hundredths of a logit) is not covered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from baselines.mosaic.items import Frame, Items, embed_slots, embedding_matrix, option_logprobs, project
from drake.fl.client import ArchModel


@dataclass(frozen=True)
class GenShape:
    """What one generator emits: visual slots x d_vis, prompt slots, options x option slots, text width."""

    n_vis: int
    d_vis: int
    prompt: int
    options: int
    option_len: int
    d_text: int

    @property
    def n_text(self) -> int:
        return self.prompt + self.options * self.option_len

    def to_tensor(self) -> torch.Tensor:
        return torch.tensor([self.n_vis, self.d_vis, self.prompt, self.options, self.option_len, self.d_text])

    @staticmethod
    def from_tensor(t: torch.Tensor) -> GenShape:
        return GenShape(*(int(v) for v in t.tolist()))


class Generator(nn.Module):
    """z -> visual slots (an MLP body, a learned embedding and bias per slot, one head), plus a logit table
    for the token slots."""

    def __init__(self, shape: GenShape, nz: int, hidden: int, vocab: int) -> None:
        super().__init__()
        self.shape, self.nz = shape, nz
        self.body = nn.Sequential(nn.Linear(nz, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU())
        self.slots = nn.Parameter(torch.randn(shape.n_vis, hidden) * 0.02)
        self.vis_head = nn.Sequential(nn.GELU(), nn.Linear(hidden, max(shape.d_vis, 1)))
        self.vis_bias = nn.Parameter(torch.zeros(shape.n_vis, max(shape.d_vis, 1)))
        self.txt_logits = nn.Parameter(torch.zeros(shape.n_text, vocab))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(B, n_vis, d_vis) visual slots for noise ``z`` (B, nz)."""
        h = self.body(z).unsqueeze(1) + self.slots.unsqueeze(0)
        return (self.vis_head(h) + self.vis_bias)[..., : self.shape.d_vis]

    def token_logits(self, banned: Sequence[int]) -> torch.Tensor:
        """(n_text, V) the token slots' logits, banned ids at -inf."""
        if not banned:
            return self.txt_logits
        keep = torch.ones(self.txt_logits.shape[1], dtype=torch.bool, device=self.txt_logits.device)
        keep[list(banned)] = False
        return self.txt_logits.masked_fill(~keep, float("-inf"))


def _split(shape: GenShape, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-slot tensor (B, n_text, ...) -> prompt (B, L_p, ...), options (B, K, L_o, ...)."""
    opts = t[:, shape.prompt :]
    return t[:, : shape.prompt], opts.reshape(t.shape[0], shape.options, shape.option_len, *t.shape[2:])


@torch.no_grad()
def sample_items(gen: Generator, frame: Frame, n: int, rng: torch.Generator) -> Items:
    """``n`` generated samples (each token drawn from its slot's distribution), seeded by ``rng``."""
    gen.eval()
    shape = gen.shape
    vis = gen(torch.randn(n, gen.nz, generator=rng))
    probs = torch.softmax(gen.token_logits(frame.banned).float(), dim=-1)
    ids = torch.multinomial(probs, n, replacement=True, generator=rng).T.reshape(n, shape.n_text, 1)
    p_ids, o_ids = _split(shape, ids)
    return Items(
        visual=vis.detach(), prompt_ids=p_ids, prompt_w=torch.ones(p_ids.shape), prompt_mask=torch.ones(n, shape.prompt, dtype=torch.bool),
        opt_ids=o_ids, opt_w=torch.ones(o_ids.shape), opt_mask=torch.ones(n, shape.options, shape.option_len, dtype=torch.bool),
    )  # fmt: skip


class Discriminator(nn.Module):
    """Real or generated: slot embeddings (tower features, token embeddings) + per-slot position embeddings,
    mean-pooled per segment (visual, prompt, options; masked slots left out), then an MLP."""

    def __init__(self, shape: GenShape, hidden: int) -> None:
        super().__init__()
        self.shape = shape
        self.vis = nn.Linear(max(shape.d_vis, 1), hidden)
        self.txt = nn.Linear(shape.d_text, hidden)
        self.pos = nn.Parameter(torch.randn(shape.n_vis + shape.n_text, hidden) * 0.02)
        self.out = nn.Sequential(nn.Linear(3 * hidden, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, vis: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        s = self.shape
        b = text.shape[0]
        if s.n_vis:
            hv = F.leaky_relu(self.vis(vis) + self.pos[: s.n_vis], 0.2).mean(1)
        else:
            hv = text.new_zeros(b, self.pos.shape[1])
        ht = F.leaky_relu(self.txt(text) + self.pos[s.n_vis :], 0.2)
        m = text_mask.float().unsqueeze(-1)
        pooled = []
        for part in (slice(0, s.prompt), slice(s.prompt, s.n_text)):
            w = m[:, part]
            pooled.append((ht[:, part] * w).sum(1) / w.sum(1).clamp(min=1.0))
        return self.out(torch.cat([hv, *pooled], dim=-1)).squeeze(-1)


def _text_of(items: Items, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Token slots of ``items`` as embeddings (B, n_text, d) and their mask (B, n_text)."""
    p = embed_slots(embedding, items.prompt_ids, items.prompt_w)
    o = embed_slots(embedding, items.opt_ids, items.opt_w).flatten(1, 2)
    return torch.cat([p, o], 1).float(), torch.cat([items.prompt_mask, items.opt_mask.flatten(1)], 1)


def init_from_real(gen: Generator, real: Items, seed: int, min_count: int = 1) -> None:
    """Data-dependent initialisation (Salimans & Kingma 2016): the visual output starts at the real tower
    features' per-slot mean and per-dimension spread (head bias := mean, head rows rescaled to the real
    standard deviation), the logit table at the log of each token slot's real token frequencies (add-1e-3
    smoothed, so the adversarial game can still move mass to unseen tokens), counting only tokens that at
    least ``min_count`` rows have at the slot."""
    with torch.no_grad():
        if gen.shape.n_vis:
            gen.vis_bias.zero_()
            head = gen.vis_head[-1]
            head.bias.zero_()
            z = torch.randn(256, gen.nz, generator=torch.Generator().manual_seed(seed))
            spread = gen(z).flatten(0, 1).std(0).clamp(min=1e-6)
            head.weight.mul_((real.visual.float().flatten(0, 1).std(0) / spread).unsqueeze(1))
            gen.vis_bias.copy_(real.visual.float().mean(0) - gen(z).mean(0))
        ids = torch.cat([real.prompt_ids[..., 0], real.opt_ids[..., 0].flatten(1)], 1)
        mask = torch.cat([real.prompt_mask, real.opt_mask.flatten(1)], 1).float()
        counts = torch.zeros_like(gen.txt_logits).scatter_add_(1, ids.T, mask.T)
        counts = counts.masked_fill(counts < min_count, 0.0)
        gen.txt_logits.copy_(torch.log((counts + 1e-3) / (counts + 1e-3).sum(1, keepdim=True)))


@dataclass(frozen=True)
class GanSettings:
    steps: int
    batch: int
    lr: float
    nz: int
    hidden: int
    div_weight: float
    entropy_weight: float
    min_count: int = 1  # rows that must share a token at a slot for the starting table to count it


def train_generator(
    am: ArchModel, model: nn.Module, frame: Frame, real: Items, cfg: GanSettings, seed: int
) -> tuple[Generator, dict[str, float]]:
    """Train a generator of ``real`` (one task of one client) against a discriminator, DeGAN-style, with the
    client's model (``model``, adapter frozen) as the classifier. Returns the generator (CPU) and a log
    (final losses, and ``units``: classifier forward+backward sequences, the harness's compute unit)."""
    emb = embedding_matrix(am).detach()
    device = emb.device
    shape = GenShape(real.visual.shape[1], real.visual.shape[2] if real.visual.dim() == 3 else 0,
                     real.prompt_ids.shape[1], real.num_options, real.opt_ids.shape[2], emb.shape[1])  # fmt: skip
    rng = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen, disc = Generator(shape, cfg.nz, cfg.hidden, emb.shape[0]), Discriminator(shape, cfg.hidden)
    init_from_real(gen, real, seed, cfg.min_count)
    gen.to(device).train()
    disc.to(device).train()
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    real_text, real_mask = _text_of(real, emb)
    real_vis = real.visual.float().to(device)
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    was_training = model.training
    model.eval()
    bce = nn.BCEWithLogitsLoss()
    log = {"loss_d": float("nan"), "loss_g": float("nan"), "div": float("nan"), "units": 0.0}
    try:
        for _ in range(cfg.steps):
            idx = torch.randint(len(real), (cfg.batch,), generator=rng)
            z = torch.randn(cfg.batch, cfg.nz, generator=rng).to(device)
            vis = gen(z)
            logits = gen.token_logits(frame.banned).unsqueeze(0).expand(cfg.batch, -1, -1)
            uniform = torch.rand(logits.shape, generator=rng).clamp(1e-9, 1 - 1e-9).to(device)
            soft = torch.softmax(logits - torch.log(-torch.log(uniform)), dim=-1)  # Gumbel-softmax, tau 1
            hard = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
            y = hard - soft.detach() + soft  # straight-through: one-hot forward, soft gradient
            text = y @ emb.float()
            fake_mask = torch.ones(cfg.batch, shape.n_text, dtype=torch.bool, device=device)
            # discriminator step
            d_real = disc(real_vis[idx.to(device)], real_text[idx.to(device)], real_mask[idx.to(device)])
            d_fake = disc(vis.detach(), text.detach(), fake_mask)
            loss_d = bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            # generator step: adversarial + DeGAN's classifier terms on the client's model
            d_gen = disc(vis, text, fake_mask)
            loss_g = bce(d_gen, torch.ones_like(d_gen))
            div = torch.zeros((), device=device)
            if cfg.div_weight or cfg.entropy_weight:
                p_emb, o_emb = _split(shape, text)
                o_ids = _split(shape, hard.argmax(-1, keepdim=True))[1]
                scores = option_logprobs(
                    am, model, frame, project(am, vis), p_emb, fake_mask[:, : shape.prompt], o_emb, o_ids,
                    torch.ones(o_ids.shape, device=device), torch.ones(o_ids.shape[:3], dtype=torch.bool, device=device),
                )  # fmt: skip
                probs = torch.softmax(scores, dim=-1)
                mean = probs.mean(0)
                div = (mean * torch.log(mean.clamp(min=1e-12))).sum()
                entropy = -(probs * torch.log(probs.clamp(min=1e-12))).sum(-1).mean()
                loss_g = loss_g + cfg.div_weight * div + cfg.entropy_weight * entropy
                log["units"] += float(cfg.batch * shape.options)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            log.update(loss_d=float(loss_d.detach()), loss_g=float(loss_g.detach()), div=float(div.detach()))
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)
    return gen.cpu().eval(), log
