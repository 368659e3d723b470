"""Get/set adapter state by scope ("shared" goes to the server, "local" never leaves the client).

Keys are the model's own parameter names, so states from two clients of the same architecture line up
exactly; sharing across architectures is a method's job (e.g. PQ-LoRA's block mapping).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from drake.errors import DrakeError

Scope = Literal["shared", "local", "all"]


@dataclass(frozen=True)
class AdapterSpec:
    """Which adapter to attach and which of its parameters are shared (fnmatch globs over names)."""

    kind: str = "lora"
    params: Mapping[str, Any] = field(default_factory=dict)
    shared: tuple[str, ...] = ("*",)
    local: tuple[str, ...] = ()


class AdapterHandle:
    """The trainable parameters of one model, addressed by name and scope."""

    def __init__(self, model: nn.Module, spec: AdapterSpec, trainable: Sequence[str] | None = None) -> None:
        self.model = model
        self.spec = spec
        names = trainable if trainable is not None else [n for n, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        self._params = {n: params[n] for n in names}
        if not self._params:
            raise DrakeError("adapter has no trainable parameters; check the adapter's target modules")

    def names(self, scope: Scope = "all") -> list[str]:
        return [n for n in self._params if self.in_scope(n, scope)]

    def in_scope(self, name: str, scope: Scope) -> bool:
        if scope == "all":
            return True
        is_local = any(fnmatch.fnmatchcase(name, p) for p in self.spec.local)
        is_shared = not is_local and any(fnmatch.fnmatchcase(name, p) for p in self.spec.shared)
        return is_shared if scope == "shared" else not is_shared

    def parameters(self, scope: Scope = "all") -> list[nn.Parameter]:
        return [self._params[n] for n in self.names(scope)]

    def get_state(self, scope: Scope = "all") -> dict[str, torch.Tensor]:
        """Detached CPU copies (safe to keep after the model is reused by another client)."""
        return {n: self._params[n].detach().to("cpu", copy=True) for n in self.names(scope)}

    @torch.no_grad()
    def set_state(self, state: Mapping[str, torch.Tensor], *, strict: bool = True) -> None:
        """Copy tensors into the adapter; unknown keys raise (a silent no-op would hide bugs)."""
        unknown = [k for k in state if k not in self._params]
        if unknown and strict:
            raise DrakeError(f"adapter state has {len(unknown)} unknown keys, e.g. {unknown[0]!r}")
        for k, v in state.items():
            if k in self._params:
                p = self._params[k]
                if p.shape != v.shape:
                    raise DrakeError(f"adapter key {k!r}: shape {tuple(v.shape)} != {tuple(p.shape)}")
                p.copy_(v.to(device=p.device, dtype=p.dtype))

    def num_parameters(self, scope: Scope = "all") -> int:
        return sum(p.numel() for p in self.parameters(scope))
