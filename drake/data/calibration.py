"""Where the build finds the calibration table that its dataset card shows, and how it reads it.

The table is ``benchmarks/calibrate_tasks.py``'s output, kept in the checkout; the card only renders the
table it is given (``drake.data.card.render_card(..., calibration=...)``), so this module is the one place
the data library knows that path. An installed package has no such file: its cards show dashes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from drake.spec import REPO_ROOT

CALIBRATION_PATH = REPO_ROOT / "benchmarks" / "results" / "calibration.json"


def load_calibration(path: str | Path | None = None) -> dict[str, Any] | None:
    """The calibration table at ``path`` (default CALIBRATION_PATH), or None when absent or unreadable."""
    p = Path(path) if path else CALIBRATION_PATH
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("tasks"), dict) else None
