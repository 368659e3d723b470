"""Client states between their turns: in RAM up to a byte budget, then on disk.

The engine keeps one frozen base model per architecture; what differs per client (adapter, optimizer, stream
position, method extras) is a small ``ClientState`` swapped in for the client's turn and kept here afterwards,
so memory grows with the number of architectures, not clients.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from drake.fl.client import ClientState
from drake.io import atomic_write_bytes


class StateStore:
    """Client states in RAM up to a byte budget, then on disk (torch.save, atomic)."""

    def __init__(self, offload_dir: Path | None, budget_bytes: float) -> None:
        self.offload_dir = offload_dir
        self.budget = budget_bytes
        self._mem: dict[int, ClientState] = {}
        self._size: dict[int, int] = {}
        self._disk: set[int] = set()

    @staticmethod
    def _bytes(state: ClientState) -> int:
        n = sum(t.numel() * t.element_size() for t in state.adapter.values())
        return n * 3 if state.optimizer else n  # Adam keeps two moments per parameter

    def put(self, cid: int, state: ClientState) -> None:
        size = self._bytes(state)
        in_mem = sum(v for k, v in self._size.items() if k != cid)
        if self.offload_dir is not None and in_mem + size > self.budget:
            buf = io.BytesIO()
            torch.save(state, buf)
            atomic_write_bytes(self.offload_dir / f"client_{cid}.pt", buf.getvalue())
            self._mem.pop(cid, None)
            self._size.pop(cid, None)
            self._disk.add(cid)
        else:
            self._mem[cid] = state
            self._size[cid] = size
            self._disk.discard(cid)

    def get(self, cid: int) -> ClientState:
        if cid in self._mem:
            return self._mem[cid]
        if cid in self._disk and self.offload_dir is not None:
            return torch.load(self.offload_dir / f"client_{cid}.pt", weights_only=False)
        raise KeyError(cid)

    def all(self) -> dict[int, ClientState]:
        return {cid: self.get(cid) for cid in sorted(set(self._mem) | self._disk)}

    @property
    def ram_clients(self) -> int:
        return len(self._mem)
