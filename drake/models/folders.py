"""Model folders on disk: where a pre-trained zoo member is cached, whether a folder is complete, the
pre-training record beside its weights, and which checkpoint kinds load as LLaVA-style models.

Torch-free, so that the zoo manifest, the loader, the scorer and the pre-training recipe can all read it
without importing one another.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from drake.data.synth.public import PUBLIC_VERSION
from drake.errors import DataError
from drake.models.tokenizer import default_vocab
from drake.models.zoo import ModelSpec, get_spec, models_home
from drake.spec import fingerprint

#: the pre-training recipe's version (drake/models/pretrain.py): part of every cache key
PRETRAIN_VERSION = 4
META_FILE = "drake_pretrain.json"
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
LLAVA_MODEL_TYPES = ("llava", "llava_next", "llava_next_video", "llava_onevision", "video_llava", "vipllava")


def cache_key(spec: ModelSpec, vocab: Sequence[str]) -> str:
    """12 hex digits over everything the weights depend on."""
    return fingerprint(
        {
            "spec": spec.to_dict(),
            "vocab": list(vocab),
            "public": PUBLIC_VERSION,
            "pretrain": PRETRAIN_VERSION,
        }
    )[:12]


def cached_path(spec: ModelSpec | str, vocab: Sequence[str] | None = None, home: Path | None = None) -> Path:
    """The folder a member is (or would be) cached in."""
    spec = get_spec(spec) if isinstance(spec, str) else spec
    vocab = default_vocab() if vocab is None else vocab
    return (home or models_home()) / f"{spec.name}-{cache_key(spec, vocab)}"


def is_cached(path: Path) -> bool:
    return (path / "model.safetensors").is_file() and (path / "config.json").is_file()


def check_model_folder(path: Path) -> None:
    """Refuse, in one line, a path that is not a saved model folder (missing, a file, or no config/weights)."""
    if not path.exists():
        raise DataError(f"{path}: no such model folder; give a folder written by save_pretrained or `drake pretrain`")
    if not path.is_dir():
        raise DataError(f"{path}: expected a model folder (save_pretrained output), got a file")
    if not (path / "config.json").is_file():
        raise DataError(
            f"{path}: no config.json, so this is not a saved model folder (expected save_pretrained output)"
        )
    if not any((path / f).is_file() for f in WEIGHT_FILES) and not list(path.glob("*.safetensors")):
        raise DataError(
            f"{path}: has a config.json but no weights (model.safetensors); save the model with save_pretrained "
            "or, for a zoo member, run `drake pretrain`"
        )


def read_meta(path: str | Path) -> dict[str, Any] | None:
    """The pre-training record saved next to a member's weights (None for other folders)."""
    p = Path(path) / META_FILE
    return json.loads(p.read_text()) if p.is_file() else None


@contextmanager
def quiet_progress() -> Iterator[None]:
    """No per-tensor "Loading weights" bar for models that load (or save) in milliseconds."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()
