"""A method and its models for one seed, built the same way on the server and on every node.

``drake run`` (drake/runner.py) and each node of the process and Flower engines (drake/fl/nodes.py) build
through here, so both hold the same seeded adapters on the same base weights (the nodes check it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from drake.errors import SpecError
from drake.fl.client import ArchModel, state_sha256
from drake.fl.method import Method, MethodConfig
from drake.fl.settings import EngineSettings
from drake.malloc import release_large_blocks
from drake.seeds import derive_seed


def set_threads(threads: int | None) -> None:
    """Torch intra-op threads: explicit, or 1 on small machines (see --threads)."""
    if threads is not None and threads < 0:
        raise SpecError(f"--threads {threads}: expected 1 or more (or leave it out for the default)")
    cores = os.cpu_count() or 1
    torch.set_num_threads(threads if threads else (1 if cores <= 2 else min(cores, 8)))


def build_method(
    method_cls: type[Method], config: MethodConfig, architectures: Sequence[str], *, seed: int, device: str,
    progress: bool, data_dir: Path | None,
) -> tuple[Method, dict[str, ArchModel]]:
    """A fresh method and one base model per architecture with the method's adapters attached (seeded init)."""
    from drake.models.loading import load_model

    torch.manual_seed(derive_seed(seed, "init"))
    method = method_cls(config)
    archs = {}
    for arch in architectures:
        loaded = load_model(arch, device=device, progress=progress)
        weights = state_sha256(loaded.model)
        torch.manual_seed(derive_seed(seed, "adapter-init", arch))
        model, handle = method.attach(loaded.model, arch)
        archs[arch] = ArchModel(arch, loaded, model, handle, weights)
    method.bind(archs, data_dir)
    return method, archs


def prepare_models(archs: Mapping[str, ArchModel], settings: EngineSettings) -> None:
    """What a process that trains does once before its first step: freed activations go back to the OS
    (drake/malloc.py), and gradient checkpointing where the settings ask for it."""
    release_large_blocks()
    if settings.gradient_checkpointing:
        from drake.models.loading import enable_gradient_checkpointing

        for arch in archs.values():
            enable_gradient_checkpointing(arch.model)
