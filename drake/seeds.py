"""One stable hash for every seed the harness derives: the same parts give the same number in every process
and on every machine (Python's ``hash()`` is salted per process), so data, streams and training replay."""

from __future__ import annotations

import hashlib


def stable_hash64(*parts: object) -> int:
    """A 64-bit integer from the parts joined by ``|`` (sha256, first 8 bytes, big-endian)."""
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big")


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (fits ``torch.manual_seed``)."""
    return stable_hash64(*parts) >> 1
