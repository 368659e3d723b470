"""The run's checkpoint after every round: what ``--resume`` continues from (written atomically)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from drake.errors import DataError
from drake.io import atomic_write_bytes

#: bumped when what a checkpoint pickles changes shape (2: ``ClientState.method_state``, was ``extra``)
FORMAT = 2


class Checkpoint:
    """One file holding the server state, the history and every client's state after the last finished round."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def save(self, blob: Mapping[str, Any]) -> None:
        buf = io.BytesIO()
        torch.save({**blob, "format": FORMAT}, buf)
        atomic_write_bytes(self.path, buf.getvalue())

    def load(self, *, seed: int, method: str, weights: Mapping[str, str]) -> dict[str, Any] | None:
        """The saved blob, or None when there is none; one error line when another version of drake wrote it, it
        belongs to another run (seed, method) or the base weights it trained on changed since."""
        if not self.path.is_file():
            return None
        try:
            blob = torch.load(self.path, weights_only=False)
        except Exception as exc:  # truncated, empty or not a torch file: what `torch.load` raises varies
            raise DataError(f"{self.path}: unreadable checkpoint ({type(exc).__name__}); delete it to start that "
                            "seed afresh, or use a new --out") from exc  # fmt: skip
        if not isinstance(blob, Mapping):
            raise DataError(f"{self.path}: not a drake checkpoint; delete it to start that seed afresh, or use a new --out")
        if blob.get("format") != FORMAT:
            raise DataError(f"{self.path}: checkpoint written by another version of drake (format "
                            f"{blob.get('format', 1)}, this one reads {FORMAT}); use a new --out or drop --resume")
        if blob.get("seed") != seed or blob.get("method") != method:
            raise DataError(f"{self.path}: checkpoint is for another run (method/seed); use a new --out or drop --resume")
        changed = sorted(a for a, w in blob.get("weights", {}).items() if a in weights and w != weights[a])
        if changed:
            raise DataError(f"{self.path}: the base weights of {', '.join(changed)} changed since the checkpoint (a "
                            "re-trained zoo member?); use a new --out or drop --resume")  # fmt: skip
        return blob
