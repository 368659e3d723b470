"""Server-side training on the public split, shared by the KD baselines (FedDF, FedMKT, TAKFL).

The public rows a method distils on are the first rows of the harness's built ``public`` split (what the tiny
zoo pre-trains on; FedMosaic's KD baselines take the first 80 LLaVA-665K samples), and server-side training
goes through the one training loop (``ClientRuntime.train``) on a runtime with no stream.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from drake.errors import DataError
from drake.fl.client import ArchModel, ClientRuntime, ClientState, Row, derive_seed
from drake.fl.types import ClientInfo, RoundContext


def load_public_rows(data_dir: Path | None, n: int, method: str) -> list[Row]:
    """The first ``n`` rows of the built public split (fewer if it is smaller), decoded once."""
    from drake.data.build import load_task_split

    if data_dir is None:
        raise DataError(f"{method}: no data directory bound; run through the harness (drake run / eval.py)")
    ds = load_task_split(data_dir, "public", "train")
    return [dict(ds[i]) for i in range(min(n, len(ds)))]


def server_runtime(
    ctx: RoundContext, am: ArchModel, *, tag: str, lr: float, max_grad_norm: float, batch_size: int
) -> ClientRuntime:
    """A runtime over an architecture's model for server-side training (the one training loop), with no
    stream (every batch is passed in) and a fresh optimizer each call; ``tag`` seeds it."""
    return ClientRuntime(
        ClientInfo(-1, am.name, ()), am, {}, None, ClientState(), seed=derive_seed(ctx.seed, tag),  # type: ignore[arg-type]
        round_idx=ctx.round, lr=lr, weight_decay=0.0, max_grad_norm=max_grad_norm, batch_size=batch_size,
    )  # fmt: skip


def epoch_batches(rows: Sequence[Row], batch: int, epochs: int) -> list[list[Row]]:
    """``epochs`` passes over ``rows`` in order, in batches of at most ``batch`` rows."""
    return [list(rows[s : s + batch]) for _ in range(epochs) for s in range(0, len(rows), batch)]


class PublicData:
    """Mixin for methods that train on public rows: ``bind`` keeps the models and the data directory, and
    ``public_rows`` loads the first ``public_size()`` rows once (or uses ``set_public_rows``'s)."""

    name: str
    _archs: dict[str, ArchModel]
    _data_dir: Path | None
    _public: list[Row] | None

    def _init_public(self) -> None:
        self._archs, self._data_dir, self._public = {}, None, None

    def public_size(self) -> int:
        raise NotImplementedError

    def bind(self, archs: Mapping[str, ArchModel], data_dir: Path | None) -> None:
        self._archs = dict(archs)
        self._data_dir = data_dir

    def set_public_rows(self, rows: Sequence[Row]) -> None:
        """Use ``rows`` as the public data (tests; the harness loads the built split)."""
        self._public = list(rows)

    def public_rows(self) -> list[Row]:
        if self._public is None:
            self._public = load_public_rows(self._data_dir, self.public_size(), self.name)
        return self._public
