"""scripts/lora_factor_gap.py: the numbers behind docs/results.md's factor-averaging evidence."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "lora_factor_gap.py"
spec = importlib.util.spec_from_file_location("lora_factor_gap", SCRIPT)
gap_script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gap_script)


def state(a: list[float], b: list[float], prefix: str = "layers.0.q_proj") -> dict[str, torch.Tensor]:
    """One rank-1 LoRA layer in peft's key names: A (1 x d_in), B (d_out x 1)."""
    return {f"{prefix}.lora_A.default.weight": torch.tensor([a]), f"{prefix}.lora_B.default.weight": torch.tensor(b)[:, None]}


def test_identical_clients_lose_nothing() -> None:
    s = state([1.0, 2.0], [0.5, -1.0])
    assert gap_script.gap([s, s, s], [0.2, 0.3, 0.5]) == pytest.approx((1.0, 1.0))


def test_orthogonal_updates_keep_a_known_fraction() -> None:
    """Delta W_1 = e1 e1^T, Delta W_2 = e2 e2^T: mean(B) mean(A) = (e1 + e2)(e1 + e2)^T / 4 against the mean of
    the updates (e1 e1^T + e2 e2^T) / 2; norms 1/2 and 1/sqrt(2), so both kept and cos are 1/sqrt(2)."""
    kept, cos = gap_script.gap([state([1.0, 0.0], [1.0, 0.0]), state([0.0, 1.0], [0.0, 1.0])], [1.0, 1.0])
    assert kept == pytest.approx(1 / math.sqrt(2)) and cos == pytest.approx(1 / math.sqrt(2))


def test_fedmosaic_keys_and_layers_without_both_factors() -> None:
    s = {"x.pqlora_A.default": torch.ones(1, 2), "x.pqlora_B.default": torch.ones(2, 1), "pq.0.P": torch.ones(1, 1)}
    assert set(gap_script.lora_pairs(s)) == {"x"}  # the PQ layer's P has no trainable A/B pair
