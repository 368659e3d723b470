"""What ``drake list models`` shows: the shipped zoo, registered members, the pre-training cache and any
model folders named, each with size, text model shape, held-out accuracy and whose weights they are.

Torch-free (listing stays instant): parameter counts come from the pre-training record or, for other
folders, from the safetensors header (shapes only, no tensor is read).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from math import prod
from pathlib import Path
from typing import Any

from drake.models.zoo_manifest import (
    META_FILE,
    SHIPPED_DIR,
    WEIGHTS,
    ZooIntegrityError,
    file_sha256,
    is_stale,
    read_manifest,
)


def safetensors_parameters(path: str | Path) -> int:
    """Parameters stored in a safetensors file, from its JSON header (tied weights are stored once)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return sum(prod(t["shape"]) for k, t in header.items() if k != "__metadata__")


def _text_shape(folder: Path) -> tuple[str, str]:
    """``(text model type, "layers x hidden")`` from a folder's config.json."""
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return "?", "?"
    text = cfg.get("text_config", cfg)
    return str(text.get("model_type", "?")), f"{text.get('num_hidden_layers', '?')} x {text.get('hidden_size', '?')}"


def _params(meta: dict[str, Any], folder: Path) -> str:
    total = (meta.get("parameters") or {}).get("total")
    if total is None and (folder / WEIGHTS).is_file():
        total = safetensors_parameters(folder / WEIGHTS)
    return f"{total / 1e6:.2f}M" if total else "?"


def _acc(meta: dict[str, Any]) -> str:
    acc = (meta.get("heldout_accuracy") or {}).get("overall")
    return f"{acc:.3f}" if acc is not None else "-"


def _row(name: str, kind: str, meta: dict[str, Any], folder: Path, weights: str) -> dict[str, str]:
    family, shape = _text_shape(folder)
    return {"model": name, "kind": kind, "params": _params(meta, folder), "text": family,
            "shape": shape, "acc": _acc(meta), "weights": weights, "where": str(folder)}  # fmt: skip


def describe_models(extra: Sequence[str | Path] = (), home: Path | None = None) -> list[dict[str, str]]:
    """One row per model: shipped members (and tower), registered members not shipped, cache folders under
    ``home`` (default ``models_home()``) and the folders in ``extra``."""
    from drake.models.folders import check_model_folder
    from drake.models.zoo import ZOO, models_home

    try:
        manifest = read_manifest()
    except ZooIntegrityError:
        manifest = {"members": {}, "zoo_version": None}
    by_sha = {e.get("sha256"): n for n, e in manifest["members"].items()}
    rows = []
    for name, entry in sorted(manifest["members"].items(), key=lambda kv: (kv[1].get("role") != "tower", kv[0])):
        folder = SHIPPED_DIR / entry["folder"]
        stale = " (stale: the zoo spec or vocab changed since)" if is_stale(name, entry) else ""
        rows.append(_row(name, entry.get("role", "member"), entry, folder, f"shipped, zoo {manifest['zoo_version']}{stale}"))
    home = home or models_home()
    cache = sorted(p for p in home.glob("*") if (p / "config.json").is_file()) if home.is_dir() else []
    for name in sorted(set(ZOO) - set(manifest["members"])):
        mine = [p for p in cache if p.name.rsplit("-", 1)[0] == name]
        weights = "cache" if mine else f"none: run `drake pretrain --model {name}`"
        rows.append({"model": name, "kind": "member", "params": "-", "text": ZOO[name].family,
                     "shape": f"{ZOO[name].text_layers} x {ZOO[name].text_hidden}", "acc": "-",
                     "weights": weights, "where": str(mine[-1]) if mine else "-"})  # fmt: skip
    named = [Path(p).expanduser() for p in extra]
    for folder in named:
        check_model_folder(folder)
    for folder in [*cache, *named]:
        meta_file = folder / META_FILE
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        same = by_sha.get(file_sha256(folder / WEIGHTS)) if (folder / WEIGHTS).is_file() else None
        weights = f"same bytes as shipped {same}" if same else "pre-trained here" if meta else "local"
        kind = "cache" if folder in cache else "local"
        rows.append(_row(folder.name, kind, meta, folder, weights))
    return rows
