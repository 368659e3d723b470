"""A peft model wrapped so that its outputs mix adapters beyond what one LoRA pass can express: logits summed
over several passes (FedSim) or a mix chosen per row (FedDPA), with a greedy decoder of its own because
``generate`` must go through the same mixed forward."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from drake.adapters.multi import Mix, mixed
from drake.models.batching import IGNORE_INDEX
from drake.models.scoring import position_ids, shares_prompt

RowMix = Callable[[torch.Tensor, torch.Tensor], "Mix | None"]


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over non-ignored labels (what HF's causal LM loss computes)."""
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(),
        labels[:, 1:].flatten().to(logits.device),
        ignore_index=IGNORE_INDEX,
    )


class MixModel(nn.Module):
    """A peft model whose outputs mix adapters beyond what one LoRA pass can express.

    - ``branches``: one forward pass per adapter mix, logits summed (FedSim as run by FedMosaic: a
      global-only pass plus a local-only pass); the loss is next-token CE on the summed logits.
    - ``row_mix(input_ids, prompt_mask)``: a per-row mix (weights shaped (batch, 1, 1)) applied to the
      pass when there are no branches (FedDPA's instance-wise weights at inference); returning ``None``
      keeps the current mix. It must depend on each row's prompt alone: the mask marks the prompt's tokens
      where a scorer says which they are (``prompt_tokens``), else it is the 2D attention mask.

    With neither set it is the peft model. ``generate`` is greedy (what the harness scores with).

    A scorer may run one prompt for all its choices (``drake.models.scoring.shares_prompt``) whenever the
    peft model may: every branch pass is causal, so is their sum, and a row mix read off the prompt is the
    same for the prompt and each of its choices.
    """

    def __init__(self, peft_model: nn.Module) -> None:
        super().__init__()
        self.peft = peft_model
        self.branches: list[dict[str, float]] | None = None
        self.row_mix: RowMix | None = None
        self.prefix_causal = shares_prompt(peft_model)  # answers for the peft model inside (checked once)
        self._prompt: torch.Tensor | None = None  # set by prompt_tokens

    @property
    def config(self) -> Any:
        return self.peft.config

    @property
    def peft_config(self) -> Any:
        return self.peft.peft_config

    def get_input_embeddings(self) -> nn.Module:
        return self.peft.get_input_embeddings()

    @contextmanager
    def prompt_tokens(self, mask: torch.Tensor) -> Iterator[None]:
        """Forwards inside read ``mask`` (B, T; True = prompt token) as each row's prompt: how a scorer that
        packs several answers after one prompt tells ``row_mix`` where the prompt is."""
        self._prompt = mask
        try:
            yield
        finally:
            self._prompt = None

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs: Any) -> Any:
        if not self.branches:
            prompt = self._prompt if self._prompt is not None else attention_mask
            mix = self.row_mix(input_ids, prompt) if self.row_mix is not None else None
            with mixed(self.peft, mix) if mix else nullcontext():
                return self.peft(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
        logits = None
        for branch in self.branches:
            with mixed(self.peft, branch):
                out = self.peft(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            logits = out.logits if logits is None else logits + out.logits
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    @torch.no_grad()
    def generate(self, input_ids, attention_mask, max_new_tokens: int = 8, pad_token_id=None, eos_token_id=None,
                 do_sample: bool = False, **kwargs: Any) -> torch.Tensor:  # fmt: skip
        """Greedy decoding without a cache (the few answer tokens of the benchmark's open tasks)."""
        if not self.branches:
            mix = self.row_mix(input_ids, attention_mask) if self.row_mix is not None else None
            with mixed(self.peft, mix) if mix else nullcontext():
                return self.peft.generate(input_ids=input_ids, attention_mask=attention_mask,
                                          max_new_tokens=max_new_tokens, pad_token_id=pad_token_id,
                                          eos_token_id=eos_token_id, do_sample=do_sample, **kwargs)  # fmt: skip
        ids, mask = input_ids, attention_mask
        pad = pad_token_id if pad_token_id is not None else 0
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        for _ in range(max_new_tokens):
            out = self(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), logits_to_keep=1,
                       use_cache=False, **kwargs)  # fmt: skip
            nxt = out.logits[:, -1].argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            mask = torch.cat([mask, (~done).to(mask.dtype)[:, None]], dim=1)
            if eos_token_id is not None:
                done |= nxt == eos_token_id
            if bool(done.all()):
                break
        return ids


def peft_of(model: nn.Module) -> nn.Module:
    """The peft model under a ``MixModel`` wrapper (or the model itself)."""
    return model.peft if isinstance(model, MixModel) else model
