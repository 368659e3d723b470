"""PerAda's server step: ensemble distillation of each architecture's average with the official code's early
stopping (validated after every step; the average stays where distillation does not lower the KL)."""

from __future__ import annotations

import pytest
import torch

from baselines.perada import PerAda, PerAdaConfig
from drake.fl.method import ServerState
from drake.fl.types import ClientInfo, ClientUpdate, RoundContext
from drake.spec import load_scenario
from tests.zoo_kd import attach_zoo, random_updates

ARCHS = {0: "tiny-llama-s", 1: "tiny-llama-m", 2: "tiny-llama-s"}  # two architectures, one tokenizer


@pytest.fixture(scope="module")
def public() -> list[dict]:
    from drake.models.pretrain import draw_rows

    return draw_rows("train", 40, 0, 32)  # 32 distilled on, 8 validation


def _round(cfg: PerAdaConfig, public: list[dict]) -> tuple[ServerState, ServerState]:
    """(the plain per-architecture average, PerAda's server state) after one round of three "trained" clients."""
    method = PerAda(cfg)
    archs = attach_zoo(method, ARCHS.values(), public)
    shared = {a: set(m.adapter.names("shared")) for a, m in archs.items()}
    updates = [  # clients upload their global adapter only
        ClientUpdate(u.client_id, {k: v for k, v in u.arrays.items() if k in shared[ARCHS[u.client_id]]}, 10, u.metrics)
        for u in random_updates(archs, ARCHS, lambda cid: 10)
    ]
    ctx = RoundContext(0, load_scenario("smoke"), 0, tuple(ARCHS), {c: ClientInfo(c, a, ("t",)) for c, a in ARCHS.items()})
    averaged = PerAda(PerAdaConfig(kd_samples=0)).aggregate(ctx, ServerState(), updates)
    return averaged, method.aggregate(ctx, ServerState(), updates)


def test_server_distillation_lowers_the_validated_kl_and_logs_it(public) -> None:
    cfg = PerAdaConfig(kd_samples=32, kd_val_samples=8, kd_steps=16, kd_batch=8, kd_eval_every=4)
    averaged, server = _round(cfg, public)
    (rnd,) = server.method_state["perada"]["rounds"]
    for arch, log in rnd["archs"].items():
        assert log["kl_after"] < log["kl_before"] and log["kept_step"] > 0 and log["teachers"] == 3.0
        assert any(not torch.equal(v, averaged.per_arch[arch][k]) for k, v in server.per_arch[arch].items())
    # 16 steps x 8 rows per architecture + (3 teachers x 40 rows + 5 validations x 8 rows x 2 archs) / 3
    assert rnd["server_units"] == pytest.approx(2 * 16 * 8 + (3 * 40 + 2 * 5 * 8) / 3)


def test_a_worse_student_leaves_the_average(public) -> None:
    cfg = PerAdaConfig(kd_samples=32, kd_val_samples=8, kd_steps=2, kd_batch=8, kd_lr=0.5)  # only hurts
    averaged, server = _round(cfg, public)
    logs = server.method_state["perada"]["rounds"][0]["archs"]
    kept_average = [a for a, log in logs.items() if log["kept_step"] == 0]
    assert kept_average, "lr 0.5 should make some architecture's distillation worse than its average"
    for arch in kept_average:
        assert logs[arch]["kl_after"] == logs[arch]["kl_before"]
        assert all(torch.equal(v, averaged.per_arch[arch][k]) for k, v in server.per_arch[arch].items())
