"""Shared test set-up: offline, no telemetry, and tiny *untrained* zoo models saved to a temp dir.

Tests never pre-train: models are built from the zoo configs (random weights), which is enough to check
the harness's plumbing, determinism and bookkeeping.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# runs stay in the test process (spies and monkeypatches see the clients); tests/test_process_engine.py and
# tests/test_flower.py check that the other engines give the same numbers
os.environ.setdefault("DRAKE_ENGINE", "sequential")

import torch  # noqa: E402

torch.set_num_threads(1)  # tiny models: a second thread gains little and costs ~10x when cores are shared

SMOKE_TASKS = """clients:
  - {id: 0, tasks: [vsr_0, fashion200k_2]}
  - {id: 1, tasks: [irfl_3, vizwiz_0]}
  - {id: 2, tasks: [iconqa_2, wcvqa_0]}
unseen: [dreamsim_0]
"""


@pytest.fixture(scope="session")
def untrained_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """tiny-llama-s, tiny-llama-m and tiny-qwen-s with random weights, saved as normal HF folders."""
    from drake.models.zoo import build_model

    root = tmp_path_factory.mktemp("untrained")
    out = {}
    for name in ("tiny-llama-s", "tiny-llama-m", "tiny-qwen-s"):
        model, processor = build_model(name, seed=0)
        model.save_pretrained(root / name)
        processor.save_pretrained(root / name)
        out[name] = root / name
    return out


def write_scenario(path: Path, models: list[Path], *, rounds: int = 2, name: str = "tiny") -> Path:
    """A smoke-like scenario (3 clients x 2 tasks, one task per round) over the given model folders."""
    pool = ", ".join(str(m) for m in models)
    path.write_text(
        f"name: {name}\ndescription: test scenario\nmode: dynamic\nrounds: {rounds}\nrounds_per_task: 1\n"
        f"source: synth\npools:\n  test: [{pool}]\n{SMOKE_TASKS}eval_rounds: {list(range(1, rounds + 1))}\n"
    )
    return path


@pytest.fixture
def tiny_scenario(tmp_path: Path, untrained_models: dict[str, Path]) -> Path:
    """Hetero: clients 0 and 2 on tiny-llama-s, client 1 on tiny-qwen-s."""
    m = untrained_models
    return write_scenario(tmp_path / "tiny.yaml", [m["tiny-llama-s"], m["tiny-qwen-s"], m["tiny-llama-s"]])
