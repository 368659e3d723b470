"""A split's rows held in memory with their images still encoded, decoded to PIL only when a row is read.

Decoded ``PIL`` images are the bulk of a run's memory: loading every split of the 47 DRAKE-synth tasks as
decoded rows added 395 MB to the process (measured, scale 1, 32 px), while their PNG bytes are ~200 bytes
an image. Reading a row decodes its images again (microseconds at this size; ``PIL.Image.open`` is lazy),
so training and evaluation see exactly the rows ``datasets`` would give, and a pickled split (the Flower
engine ships rows to its nodes) carries bytes, not pixels.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from typing import Any, overload

from PIL import Image

Row = dict[str, Any]


class LazyRows(Sequence[Row]):
    """Rows whose ``images`` are ``{"bytes", "path"}`` records until read; slicing gives another LazyRows."""

    def __init__(self, records: Sequence[Row]) -> None:
        self._records = list(records)

    def __len__(self) -> int:
        return len(self._records)

    @overload
    def __getitem__(self, index: int) -> Row: ...

    @overload
    def __getitem__(self, index: slice) -> LazyRows: ...

    def __getitem__(self, index: int | slice) -> Row | LazyRows:
        if isinstance(index, slice):
            return LazyRows(self._records[index])
        return _decoded(self._records[index])

    def __iter__(self) -> Iterator[Row]:
        return map(_decoded, self._records)

    def column(self, key: str) -> list[Any]:
        """One field of every row, without decoding images (e.g. the answers, for label-skew partitions)."""
        return [r[key] for r in self._records]


def _decoded(record: Row) -> Row:
    images = record.get("images")
    if not images:
        return dict(record)
    return dict(record, images=[_open(im) for im in images])


def _open(image: Row) -> Image.Image:
    if image.get("bytes") is not None:
        return Image.open(io.BytesIO(image["bytes"]))
    return Image.open(image["path"])


def column(rows: Sequence[Row], key: str) -> list[Any]:
    """``rows``' values of ``key``; a LazyRows answers without decoding its images."""
    return rows.column(key) if isinstance(rows, LazyRows) else [r[key] for r in rows]
