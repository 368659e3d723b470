"""Helpers shared by the engine tests: compare result records without their wall-clock measurements."""

from __future__ import annotations

import json
from typing import Any


def strip_timing(record: dict) -> dict:
    """The record as JSON minus wall-clock times (everything else must be reproducible)."""

    def drop(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: drop(v) for k, v in obj.items() if not k.endswith("seconds") and k != "wall_by_phase"}
        if isinstance(obj, list):
            return [drop(v) for v in obj]
        return obj

    return drop(json.loads(json.dumps(record)))
