"""One loader for every model: a zoo name, a local ``save_pretrained`` folder, or a hub id.

All three end in the same code path (a folder or hub id read by ``from_pretrained``), so a tiny zoo member
and ``llava-hf/llava-interleave-qwen-0.5b-hf`` are used identically downstream. The base weights come back
frozen and in eval mode; methods attach adapters on top.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from drake.errors import DataError, DrakeError, UnknownNameError, did_you_mean
from drake.models.folders import (
    LLAVA_MODEL_TYPES,
    cached_path,
    check_model_folder,
    is_cached,
    quiet_progress,
    read_meta,
)
from drake.models.zoo import ZOO

#: the text model's linear layers (Llama and Qwen2 names) that LoRA adapters may target
TEXT_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class LoadedModel:
    """A frozen base model with its processor and the facts methods need about it."""

    model: Any
    processor: Any
    name: str
    device: torch.device
    dtype: torch.dtype
    family: str  # text model type: "llama", "qwen2", ...
    num_layers: int  # text model blocks
    hidden_size: int  # text model width
    path: str = ""  # the folder or hub id the weights came from
    meta: dict[str, Any] = field(default_factory=dict)  # pre-training record of zoo members
    #: zoo provenance for result files (``zoo_manifest.shipped_info``): zoo_version, member, sha256, shipped
    zoo: dict[str, Any] | None = None

    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)


def language_model_target_regex(modules: Sequence[str] = TEXT_LINEAR) -> str:
    """A peft ``target_modules`` regex selecting only the text model's linear projections.

    Plain names (``q_proj``) would also match the vision tower's attention, which uses the same names.
    """
    return r".*language_model.*\.(" + "|".join(modules) + r")$"


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"``: cuda when present, else cpu."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def default_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on CUDA (what the paper's 1B-8B models train in), float32 elsewhere (CPU bf16 is slow)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def _is_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~")) and " " not in name


def _check_llava(config: Any, where: str) -> None:
    model_type = getattr(config, "model_type", None)
    if model_type not in LLAVA_MODEL_TYPES:
        raise DrakeError(
            f"{where}: model_type {model_type!r} is not a LLaVA-style model; DRAKE needs a vision tower + projector + "
            f"causal LM checkpoint (model_type one of {', '.join(LLAVA_MODEL_TYPES)})"
        )


def _model_class(model_type: str) -> Any:
    if model_type == "llava":
        from transformers import LlavaForConditionalGeneration

        return LlavaForConditionalGeneration
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText


def resolve(
    name_or_path: str | Path,
    *,
    pretrain_if_missing: bool = False,
    progress: bool = True,
    cache_dir: str | Path | None = None,
) -> tuple[str, str]:
    """``(display name, folder or hub id)`` for a zoo name, a folder, a zoo hub id or a hub id.

    A zoo member is the shipped weights (``drake/models/zoo_weights``, every file checked against its sha256:
    a missing or changed file is a ZooIntegrityError naming it); it is never pre-trained here. A registered
    member that does not ship (a larger one added with ``register_model``) is read from the cache that
    ``drake pretrain`` fills, and pre-trained now only with ``pretrain_if_missing=True``. ``org/repo/member``
    is a member of a zoo pushed with ``drake push --zoo`` (fetched with ``snapshot_download``, checked).
    """
    from drake.models.zoo_manifest import shipped_names, shipped_path

    name = str(name_or_path)
    if name in ZOO or name in shipped_names():
        path = shipped_path(name)
        if path is not None:
            return name, str(path)
        from drake.models.pretrain import pretrain

        path = cached_path(name)
        if not is_cached(path):
            if not pretrain_if_missing:
                raise DataError(
                    f"zoo model {name!r} does not ship with DRAKE and is not pre-trained yet ({path} is missing); "
                    f"run `drake pretrain --model {name}`"
                )
            path = pretrain(name, progress=progress)
        return name, str(path)
    path = Path(name).expanduser()
    if path.exists():
        check_model_folder(path)
        return path.name, str(path)
    from drake.models.zoo_hub import hub_member_folder, is_zoo_hub_id

    if is_zoo_hub_id(name):
        return name, str(hub_member_folder(name, cache_dir=cache_dir))
    if _is_hub_id(name):
        return name, name
    raise UnknownNameError(
        f"unknown model {name!r}{did_you_mean(name, ZOO)}; use a zoo member ({', '.join(sorted(ZOO))}), "
        "a local model folder, a hub id like 'llava-hf/llava-interleave-qwen-0.5b-hf' or a zoo repo member "
        "like 'you/drake-zoo/tiny-llama-m'"
    )


def load_model(
    name_or_path: str | Path,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    pretrain_if_missing: bool = False,
    gradient_checkpointing: bool = False,
    progress: bool = True,
    cache_dir: str | Path | None = None,
) -> LoadedModel:
    """Load a LLaVA-style model + processor, frozen, in eval mode, on ``device`` (auto: cuda if present).

    ``dtype`` defaults to bfloat16 on cuda and float32 on cpu. A zoo name loads the shipped weights after
    checking their sha256 (never pre-training; see ``resolve``); to use members you pre-trained yourself, pass
    their cache folder (``drake pretrain`` prints it; ``drake.models.folders.cached_path(name)``). Hub ids
    (``org/repo``, or ``org/repo/member`` for a pushed zoo) honour ``HF_HUB_OFFLINE`` (cache only) and
    ``cache_dir`` (default: the HF cache). ``LoadedModel.zoo`` is the zoo provenance (``shipped_info``).
    """
    from transformers import AutoConfig, AutoProcessor

    display, source = resolve(
        name_or_path, pretrain_if_missing=pretrain_if_missing, progress=progress, cache_dir=cache_dir
    )
    dev = resolve_device(device)
    dtype = dtype or default_dtype(dev)
    local_only = _offline() or Path(source).exists()
    hub = {"local_files_only": local_only, "cache_dir": str(cache_dir) if cache_dir else None}
    try:
        config = AutoConfig.from_pretrained(source, **hub)
    except (OSError, ValueError) as exc:
        hint = (
            " (HF_HUB_OFFLINE is set: download it once online, or pass a local folder)" if _offline() else ""
        )
        raise DrakeError(f"cannot load model {source!r}: {str(exc).splitlines()[0]}{hint}") from None
    _check_llava(config, source)
    try:
        with quiet_progress():
            model = _model_class(config.model_type).from_pretrained(source, dtype=dtype, **hub)
        processor = AutoProcessor.from_pretrained(source, **hub)
    except (OSError, ValueError) as exc:
        raise DrakeError(f"cannot load model {source!r}: {str(exc).splitlines()[0]}") from None
    model.to(dev)
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    text = config.text_config
    meta: dict[str, Any] = {}
    zoo = None
    if Path(source).is_dir():
        from drake.models.zoo_manifest import shipped_info

        meta = read_meta(source) or {}
        zoo = shipped_info(source)
    return LoadedModel(
        model=model,
        processor=processor,
        name=display,
        device=dev,
        dtype=dtype,
        family=str(text.model_type),
        num_layers=int(text.num_hidden_layers),
        hidden_size=int(text.hidden_size),
        path=source,
        meta=meta,
        zoo=zoo,
    )


def load_pool(names: Sequence[str], **kwargs: Any) -> dict[str, LoadedModel]:
    """One frozen base model per distinct architecture name, in first-seen order."""
    return {name: load_model(name, **kwargs) for name in dict.fromkeys(names)}


# ------------------------------------------------------------------------------------- GPU memory


def text_model(model: Any) -> Any:
    """The causal LM's decoder stack inside a LLaVA-style model, also through peft or method wrappers."""
    from transformers import PreTrainedModel

    for module in model.modules():
        if isinstance(module, PreTrainedModel) and hasattr(module.config, "text_config"):
            return module.get_decoder()
    if isinstance(model, PreTrainedModel):
        return model.get_decoder() if hasattr(model, "get_decoder") else model
    raise DrakeError(f"{type(model).__name__}: no LLaVA-style model inside, so no text model to checkpoint")


def enable_gradient_checkpointing(model: Any) -> Any:
    """Recompute the text model's activations in backward instead of keeping them (GPU memory for time).

    Only the text model: the vision tower is frozen and gets no gradient, so checkpointing it saves
    nothing. Non-reentrant checkpointing gives LoRA weights inside the checkpointed blocks their gradients
    even though the blocks' inputs (frozen embeddings) need none, so peft's input-grad hook is not needed.
    Works before or after adapters are attached (peft wraps the same modules). Returns the text model.
    """
    text = text_model(model)
    kwargs = {"use_reentrant": False}
    if hasattr(text, "activation_checkpointing_enable"):  # transformers >= 5.x; the old name warns
        text.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        text.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return text


def is_oom(exc: BaseException) -> bool:
    """An accelerator out-of-memory error, whichever way torch reports it."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_accelerator_memory() -> None:
    """Drop what a failed (out-of-memory) attempt left behind."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def fit_grad_accum(
    batch_size: int,
    try_micro_batch: Callable[[int], None],
    *,
    on_oom: Callable[[], None] | None = free_accelerator_memory,
) -> int:
    """The fewest micro-batches k whose size ``ceil(batch_size / k)`` runs ``try_micro_batch`` without OOM.

    ``try_micro_batch(m)`` runs one forward + backward pass on ``m`` (worst-case) examples. Memory grows
    with ``m``, so a binary search over k needs O(log batch_size) attempts. Errors other than OOM
    propagate; when even one example does not fit, a DrakeError says what to change.
    """
    if batch_size < 1:
        raise DrakeError(f"batch_size {batch_size}: must be at least 1")
    tried: dict[int, bool] = {}

    def fits(k: int) -> bool:
        size = -(-batch_size // k)
        if size not in tried:
            try:
                try_micro_batch(size)
                tried[size] = True
            except Exception as exc:  # noqa: BLE001 - only OOM is handled, everything else re-raised
                if not is_oom(exc):
                    raise
                tried[size] = False
            if not tried[size] and on_oom is not None:
                on_oom()
        return tried[size]

    if fits(1):
        return 1
    if not fits(batch_size):
        raise DrakeError(
            "micro_batch auto: even one example per forward pass runs out of GPU memory; set "
            "engine.gradient_checkpointing=true, use a smaller model or a GPU with more memory"
        )
    fails, ok = 1, batch_size  # fits(fails) is False, fits(ok) is True
    while ok - fails > 1:
        mid = (fails + ok) // 2
        if fits(mid):
            ok = mid
        else:
            fails = mid
    return ok
