"""FedDF: the server's ensemble distillation lowers each architecture's KL to the ensemble on held-out public
rows, early stopping never keeps a worse student than the average, and the server's compute is recorded.

On the shipped (pre-trained) tiny zoo: untrained models give near-uniform outputs whose KL barely moves."""

from __future__ import annotations

import pytest
import torch

from baselines._distill import ensemble_kl, ensemble_teacher, row_logits
from baselines.feddf import FedDF, FedDFConfig
from drake.errors import SpecError
from drake.fl.method import ServerState
from drake.fl.types import ClientInfo, RoundContext
from drake.spec import load_scenario
from tests.zoo_kd import attach_zoo, random_updates

ARCHS = {0: "tiny-llama-s", 1: "tiny-llama-m", 2: "tiny-llama-s"}  # two architectures, one tokenizer


@pytest.fixture(scope="module")
def public() -> list[dict]:
    from drake.models.pretrain import draw_rows

    return draw_rows("train", 56, 0, 32)  # 32 distilled on, 8 validation, 16 held out for the test


def _setup(config: FedDFConfig, public: list[dict]):
    method = FedDF(config)
    archs = attach_zoo(method, ARCHS.values(), public[:40])
    updates = random_updates(archs, ARCHS, lambda cid: 10 * (cid + 1))  # three "trained" clients
    clients = {cid: ClientInfo(cid, arch, ("t",)) for cid, arch in ARCHS.items()}
    ctx = RoundContext(0, load_scenario("smoke"), 0, tuple(ARCHS), clients)
    return method, archs, updates, ctx


def _held_out_kl(method, archs, updates, server, rows) -> dict[str, float]:
    teacher = ensemble_teacher([row_logits(archs[ARCHS[u.client_id]], u.arrays, rows, 8) for u in updates])
    return {a: ensemble_kl(row_logits(archs[a], server.per_arch[a], rows, 8), teacher) for a in server.per_arch}


def test_distillation_lowers_the_kl_to_the_ensemble_on_held_out_rows(public) -> None:
    cfg = FedDFConfig(kd_samples=32, kd_val_samples=8, kd_steps=16, kd_batch=8, kd_eval_every=0)
    method, archs, updates, ctx = _setup(cfg, public)
    averaged = FedDF(FedDFConfig(kd_samples=0)).aggregate(ctx, ServerState(), updates)  # FedAvg only
    held_out = public[40:]
    before = _held_out_kl(method, archs, updates, averaged, held_out)
    server = method.aggregate(ctx, ServerState(), updates)
    after = _held_out_kl(method, archs, updates, server, held_out)
    for arch in ("tiny-llama-s", "tiny-llama-m"):
        assert after[arch] < 0.9 * before[arch], (arch, before[arch], after[arch])
        assert not torch.equal(server.per_arch[arch][next(iter(server.per_arch[arch]))],
                               averaged.per_arch[arch][next(iter(averaged.per_arch[arch]))])  # fmt: skip
    rec = server.method_state["feddf"]
    (rnd,) = rec["rounds"]
    for log in rnd["archs"].values():  # the validation rows tell the same story as the held-out ones
        assert log["kl_after"] < log["kl_before"] and log["steps"] == 16 and log["kept_step"] == 16
    # compute: 16 steps x 8 rows per architecture + (3 teachers x 40 rows + 2 validations x 8 rows x 2 archs) / 3
    assert rnd["server_units"] == pytest.approx(2 * 16 * 8 + (3 * 40 + 2 * 2 * 8) / 3)
    assert rec["server_ratio_to_client_training"] == pytest.approx(rnd["server_units"] / 24)


def test_early_stopping_keeps_the_best_validated_student(public) -> None:
    cfg = FedDFConfig(kd_samples=32, kd_val_samples=8, kd_steps=4, kd_batch=8, kd_eval_every=2, kd_lr=0.5)
    method, _archs, updates, ctx = _setup(cfg, public)
    averaged = FedDF(FedDFConfig(kd_samples=0)).aggregate(ctx, ServerState(), updates)
    server = method.aggregate(ctx, ServerState(), updates)  # a huge learning rate: later steps may only hurt
    logs = server.method_state["feddf"]["rounds"][0]["archs"]
    for log in logs.values():
        assert log["kl_after"] <= log["kl_before"] and log["kept_step"] in (0.0, 2.0, 4.0)
    kept_average = [a for a, log in logs.items() if log["kept_step"] == 0]
    assert kept_average, "lr 0.5 should make some architecture's distillation worse than its average"
    for arch in kept_average:
        assert all(torch.equal(v, averaged.per_arch[arch][k]) for k, v in server.per_arch[arch].items())


def test_bad_settings_are_one_line_spec_errors() -> None:
    with pytest.raises(SpecError, match="teacher='client' is not one of clients, globals"):
        FedDFConfig(teacher="client")
    with pytest.raises(SpecError, match="kd_samples=-1 must be >= 0"):
        FedDFConfig(kd_samples=-1)
    assert FedDF().compute_ratio_to_local() == 1.0  # clients train as local does; the server's cost is logged
