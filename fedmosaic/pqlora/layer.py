"""PQ-LoRA layers: a frozen base ``nn.Linear`` plus a frozen *global* and a trainable *local* adapter, mixed by a gate.

Forward (row-vector convention of the official ``coloralayer.py``; s = alpha / r):

    PQ layer    h = W x + s * B( z P_mix + Q_mix ),  z = A dropout(x),  P_mix = beta P_G + (1 - beta) P_L
    LoRA layer  h = W x + s * ( beta B_G A_G dropout(x) + (1 - beta) B_L A_L dropout(x) )

so ``Delta W = s B P^T A`` (+ the input-independent bias ``s B Q``) at PQ layers. At PQ layers A and B are
frozen, shared by both branches and orthonormal (rows of A, columns of B), so the map P -> B P^T A is
injective and the reachable updates span r^2 dimensions (Theorem 1 of the paper).

Known differences from the official code (we follow the paper where they differ, and say so):
- Gate: the paper says "beta is a learnable gating parameter". The official code computes an input-dependent
  beta(h) = sigmoid(mean_t(h_t . w_gate + noise_t)) per sample and module, averaging over *all* positions
  including padding. ``gate="sample"`` (default) keeps the input-dependent per-sample gate but averages
  over real tokens only (the attention mask is captured from the text model's forward), so a sample's beta
  does not depend on how it was batched; ``gate="scalar"`` is the literal one-learnable-beta reading.
- Gate tokens: with ``gate_tokens="prompt"`` (default) the sample gate averages the *input* tokens only (the
  images and the question; in training the answer tokens, marked by the labels, are left out), and
  generation reuses the prompt's gate for every new token. The official code averages the answer tokens
  too in training (teacher forcing) but sees only the prompt when it predicts the first answer token at
  test time; the prompt-only gate is the same function in training and at test time, and it lets choice
  scoring run the prompt once for all choices (``prompt_tokens``). ``gate_tokens="all"`` is the code's
  reading (every real token; at decode time the newest token only).
- Gate noise: the official noise std is softplus(h . w_noise) + 1e-5, but it is computed under no_grad, so
  ``w_noise`` never receives a gradient and stays at its zero init: the std is the constant
  softplus(0) + 1e-5 = 0.6931 per token. The paper does not mention noise; the default is off
  (``gate_noise=0``, also cheaper) and ``gate_noise=0.6931`` reproduces the code (the dead ``w_noise``
  parameter is dropped).
- Dropout: one dropout mask feeds both branches (the official code draws one per branch); cheaper, and the
  same in evaluation (no dropout). The two LoRA branches run as one stacked rank-2r product and PQ layers
  mix P and Q per sample before one r x r product: the same function, fewer kernels.
- ``get_delta_weight`` in the official layer is stale for PQ layers (it ignores P and Q); ours returns the
  delta the forward actually applies (tested against the forward).
- Adapter weights are kept in float32 (like peft's ``autocast_adapter_dtype``) and the input is cast to
  them, so the layer works under a bf16 base on GPU and float32 on CPU.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from drake.models.batching import IGNORE_INDEX

ADAPTER_DTYPE = torch.float32


class GateContext:
    """Shared by every layer of one model: which tokens the sample gate averages in the current forward, and
    a one-slot cache of the token mean of the last input (q/k/v, and gate/up, receive the same tensor).

    The token mask is the text model's 2D attention mask (``tokens == "all"``); with ``tokens == "prompt"``
    it is ``prompt`` when a scorer set it (``PQLoraModel.prompt_tokens``), else the attention mask without
    the answer tokens when the forward has ``labels``. With a KV cache a forward sees only the newest
    positions: ``tokens == "prompt"`` then reuses each layer's mean from the last full (prefill) forward.
    """

    def __init__(self, tokens: str = "prompt") -> None:
        self.tokens = tokens
        self.mask: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None  # set by PQLoraModel.forward for the duration of a forward
        self.prompt: torch.Tensor | None = None  # set by PQLoraModel.prompt_tokens
        self._weights: dict[int, torch.Tensor] = {}
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None
        self._prefill: dict[int, torch.Tensor] = {}  # layer id -> its prompt mean in the last full forward

    def set_mask(self, mask: torch.Tensor | None) -> None:
        mask = mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None
        if self.tokens == "prompt" and self.prompt is not None:
            mask = self.prompt
        elif self.tokens == "prompt" and mask is not None and self.labels is not None:
            if self.labels.shape != mask.shape:
                raise ValueError(f"labels {tuple(self.labels.shape)} do not match the attention mask {tuple(mask.shape)}")
            mask = mask.bool() & (self.labels == IGNORE_INDEX).to(mask.device)
        self.mask = mask
        self._weights.clear()
        self._last = None

    def token_mean(self, x: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """Mean of ``x`` (B, T, d) over each sample's gate tokens -> (B, d); padding has weight 0.

        ``layer`` (the calling layer's id) keys the prefill means that decode steps reuse."""
        decoding = self.decoding(x)
        if decoding and self.tokens == "prompt" and layer in self._prefill:
            return self._prefill[layer]
        last = self._last
        if last is not None and last[0] is x:
            mean = last[1]
        else:
            w = self._token_weights(x)
            mean = x.mean(1) if w is None else torch.bmm(w, x).squeeze(1)
            self._last = (x, mean)
        if layer is not None and not decoding and self.tokens == "prompt":
            self._prefill[layer] = mean.detach()  # every layer, also those served by the one-slot cache
        return mean

    def decoding(self, x: torch.Tensor) -> bool:
        """Whether ``x`` is a decode step with a KV cache: fewer positions than the last full forward's mask."""
        mask = self.mask
        return mask is not None and mask.shape[0] == x.shape[0] and x.shape[1] < mask.shape[1]

    def _token_weights(self, x: torch.Tensor) -> torch.Tensor | None:
        mask, (b, t) = self.mask, x.shape[:2]
        if mask is None or mask.shape[0] != b or mask.shape[1] < t:
            return None
        if t not in self._weights:
            # with a KV cache the forward sees only the newest positions: they are the mask's last columns
            m = mask[:, -t:].to(device=x.device, dtype=x.dtype)
            self._weights[t] = (m / m.sum(1, keepdim=True).clamp(min=1.0)).unsqueeze(1)
        return self._weights[t]


@contextmanager
def one_thread() -> Iterator[None]:
    """Run small dense linear algebra on one thread (extra threads only add sync cost, large on a busy CPU)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def orthonormal(rows: int, cols: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Kaiming-uniform(a=sqrt(5)) then SVD, as the official init: orthonormal rows if rows <= cols, else columns."""
    w = torch.empty(rows, cols)
    nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=generator)
    with one_thread():
        u, _, vh = torch.linalg.svd(w, full_matrices=False)
    return (vh if rows <= cols else u).contiguous()


class PQLoraLayer:
    """Mixin holding the adapter-name-keyed parameter dicts (peft's ``LoraLayer`` shape, prefix ``pqlora_``)."""

    #: trainable (local) parameter dicts; at PQ layers pqlora_A/pqlora_B exist but are frozen
    adapter_layer_names = ("pqlora_A", "pqlora_B", "pqlora_P", "pqlora_Q", "pqlora_gate")
    #: the frozen global copies received from the server
    global_layer_names = ("pqlora_global_A", "pqlora_global_B", "pqlora_global_P", "pqlora_global_Q")
    other_param_names = ("r", "lora_alpha", "scaling", "use_pq")

    def _init_dicts(self) -> None:
        for name in (*self.adapter_layer_names, *self.global_layer_names):
            setattr(self, name, nn.ParameterDict())
        self.pqlora_dropout = nn.ModuleDict()
        self.r: dict[str, int] = {}
        self.lora_alpha: dict[str, int] = {}
        self.scaling: dict[str, float] = {}
        self.use_pq = False
        self.gate = "sample"
        self.gate_noise = 0.0
        self.active_adapter = "default"
        self.disable_adapters = False
        self.force_beta: float | None = None  # tests / analysis: fix beta (1 = global branch only)


def _frozen(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t, requires_grad=False)


class Linear(nn.Module, PQLoraLayer):
    """PQ-LoRA (``use_pq=True``) or dual-LoRA (``use_pq=False``) wrapper of one ``nn.Linear``."""

    def __init__(
        self,
        base_layer: nn.Linear,
        adapter_name: str,
        *,
        r: int,
        lora_alpha: int,
        lora_dropout: float,
        use_pq: bool,
        gate: str,
        gate_noise: float,
        context: GateContext,
        ab: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self._init_dicts()
        self.base_layer = base_layer
        self.in_features = base_layer.in_features
        self.out_features = base_layer.out_features
        self.context = context
        self.use_pq = use_pq
        self.gate = gate
        self.gate_noise = gate_noise
        self.active_adapter = adapter_name
        self.update_layer(adapter_name, r, lora_alpha, lora_dropout, ab)

    def update_layer(
        self, adapter_name: str, r: int, lora_alpha: int, lora_dropout: float,
        ab: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """Add adapter ``adapter_name``; ``ab`` = the frozen (A, B) of a PQ layer (default: fresh orthonormal)."""
        d_in, d_out = self.in_features, self.out_features
        self.r[adapter_name], self.lora_alpha[adapter_name] = r, lora_alpha
        self.scaling[adapter_name] = lora_alpha / r
        self.pqlora_dropout[adapter_name] = nn.Dropout(lora_dropout) if lora_dropout > 0 else nn.Identity()
        if self.use_pq:
            # frozen orthonormal A (rows) and B (columns), shared by the global and the local branch
            a, b = ab if ab is not None else (orthonormal(r, d_in), orthonormal(d_out, r))
            self.pqlora_A[adapter_name] = _frozen(a.clone())
            self.pqlora_B[adapter_name] = _frozen(b.clone())
            self.pqlora_P[adapter_name] = nn.Parameter(torch.zeros(r, r))  # P = Q = 0: Delta W = 0 at start
            self.pqlora_Q[adapter_name] = nn.Parameter(torch.zeros(r))
            self.pqlora_global_P[adapter_name] = _frozen(torch.zeros(r, r))
            self.pqlora_global_Q[adapter_name] = _frozen(torch.zeros(r))
        else:
            a = torch.empty(r, d_in)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # peft's default LoRA init: A random, B zero
            self.pqlora_A[adapter_name] = nn.Parameter(a)
            self.pqlora_B[adapter_name] = nn.Parameter(torch.zeros(d_out, r))
            self.pqlora_global_A[adapter_name] = _frozen(a.clone())
            self.pqlora_global_B[adapter_name] = _frozen(torch.zeros(d_out, r))
            # row 0 selects the local half of the stacked rank (2r), row 1 the global half
            basis = torch.zeros(2, 2 * r)
            basis[0, :r], basis[1, r:] = 1.0, 1.0
            self.register_buffer("pqlora_gate_basis", basis.to(self.base_layer.weight.device), persistent=False)
        shape = (d_in,) if self.gate == "sample" else (1,)
        self.pqlora_gate[adapter_name] = nn.Parameter(torch.zeros(shape))  # beta = 0.5 at start
        weight = self.base_layer.weight
        self.to(device=weight.device)
        for d in (*self.adapter_layer_names, *self.global_layer_names):
            for p in getattr(self, d).values():
                p.data = p.data.to(device=weight.device, dtype=ADAPTER_DTYPE)

    # ---- gate ------------------------------------------------------------------------------------
    def beta(self, x: torch.Tensor) -> torch.Tensor:
        """The global branch's weight for ``x`` (B, T, d_in): float32, (B, 1, 1) or (1, 1, 1).

        ``sample`` gate: sigmoid(mean_t(x_t) . w) per sample, the mean over real tokens. Training noise is
        added to the sample's logit with std ``gate_noise / sqrt(tokens)``, the same distribution as the
        official per-token noise averaged over the tokens.
        """
        a = self.active_adapter
        if self.force_beta is not None:
            return torch.full((1, 1, 1), float(self.force_beta), dtype=ADAPTER_DTYPE, device=x.device)
        w = self.pqlora_gate[a]
        if self.gate == "scalar":
            return torch.sigmoid(w).reshape(1, 1, 1)
        logit = self.context.token_mean(x, id(self)).to(w.dtype) @ w  # (B,)
        if self.training and self.gate_noise > 0:
            tokens = self.context._token_weights(x)
            n = torch.full_like(logit, float(x.shape[1])) if tokens is None else 1.0 / tokens.amax((1, 2)).to(w.dtype)
            logit = logit + torch.randn_like(logit) * (self.gate_noise / n.sqrt())
        return torch.sigmoid(logit)[:, None, None]

    # ---- forward ---------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        a = self.active_adapter
        if self.disable_adapters or a not in self.pqlora_A:
            return result
        flat = x.dim() == 2  # (N, d): treat every row as a one-token sample
        if flat:
            x = x.unsqueeze(1)
        beta = self.beta(x)  # before the cast: q/k/v (and gate/up) share the cached token mean of x
        if x.dtype != ADAPTER_DTYPE:
            x = x.to(ADAPTER_DTYPE)
        xd = self.pqlora_dropout[a](x)
        if self.use_pq:
            # beta is per sample, so mix P and Q first: one r x r product per sample instead of two branches
            z = xd @ self.pqlora_A[a].T
            p = torch.lerp(self.pqlora_P[a], self.pqlora_global_P[a], beta)
            q = torch.lerp(self.pqlora_Q[a], self.pqlora_global_Q[a], beta)
            delta = (torch.matmul(z, p) + q) @ self.pqlora_B[a].T
        else:
            # both branches in one pair of matmuls: z = [A_L; A_G] x, weighted (1 - beta | beta), then [B_L B_G]
            z = xd @ torch.cat((self.pqlora_A[a], self.pqlora_global_A[a])).T
            gate = torch.lerp(self.pqlora_gate_basis[0], self.pqlora_gate_basis[1], beta)
            delta = (z * gate) @ torch.cat((self.pqlora_B[a], self.pqlora_global_B[a]), dim=1).T
        if flat:
            delta = delta.squeeze(1)
        if delta.dtype != result.dtype:
            delta = delta.to(result.dtype)
        return torch.add(result, delta, alpha=self.scaling[a])

    # ---- merging helpers -------------------------------------------------------------------------
    def get_delta_weight(self, adapter: str = "default", branch: str = "local") -> torch.Tensor:
        """``Delta W`` (d_out x d_in) of one branch, as the forward applies it (without the gate)."""
        s = self.scaling[adapter]
        if self.use_pq:
            p = self.pqlora_P[adapter] if branch == "local" else self.pqlora_global_P[adapter]
            return s * self.pqlora_B[adapter] @ p.T @ self.pqlora_A[adapter]
        a = self.pqlora_A[adapter] if branch == "local" else self.pqlora_global_A[adapter]
        b = self.pqlora_B[adapter] if branch == "local" else self.pqlora_global_B[adapter]
        return s * b @ a

    def get_delta_bias(self, adapter: str = "default", branch: str = "local") -> torch.Tensor:
        """The input-independent output shift ``s B Q`` of a PQ branch (zero for LoRA layers)."""
        if not self.use_pq:
            return torch.zeros(self.out_features, device=self.pqlora_B[adapter].device)
        q = self.pqlora_Q[adapter] if branch == "local" else self.pqlora_global_Q[adapter]
        return self.scaling[adapter] * self.pqlora_B[adapter] @ q

    def extra_repr(self) -> str:
        kind = "pq" if self.use_pq else "lora"
        return f"{kind}, r={self.r.get(self.active_adapter)}, gate={self.gate}"
