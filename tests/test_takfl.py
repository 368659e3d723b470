"""TAKFL: the task-arithmetic merge is exact on synthetic task vectors with known weights, the weight
candidates and their choice follow the official heuristic, and each per-teacher distillation lowers the
student's KL to that teacher's ensemble on held-out public rows (shipped pre-trained zoo), so the merged global
differs from FedAvg (the FedMosaic code's task vectors are always zero)."""

from __future__ import annotations

import pytest
import torch

from baselines._distill import ensemble_kl, ensemble_teacher, row_logits
from baselines.takfl import TAKFL, TAKFLConfig, candidate_weights, choose_weights, merge_task_vectors
from drake.errors import SpecError
from drake.fl.method import ServerState
from drake.fl.types import ClientInfo, RoundContext
from drake.spec import load_scenario
from tests.zoo_kd import attach_zoo, random_updates

# two prototypes of two clients each (an ensemble of two is not the average of the two adapters)
ARCHS = {0: "tiny-llama-s", 1: "tiny-llama-m", 2: "tiny-llama-s", 3: "tiny-llama-m"}


def _states(n: int, seed: int, dtype: torch.dtype = torch.float32) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{"a": torch.randn(4, 3, generator=g).to(dtype), "b": torch.randn(5, generator=g).to(dtype)} for _ in range(n)]


def test_merge_is_exact_on_synthetic_task_vectors() -> None:
    base, *tuned = _states(4, 0)
    weights = [0.2, 0.3, 0.5]
    merged = merge_task_vectors(base, tuned, weights)
    for key in base:  # theta_avg + sum_j lambda_j (theta_j - theta_avg), in float64, cast back
        b = base[key].double()
        expected = b + 0.2 * (tuned[0][key].double() - b) + 0.3 * (tuned[1][key].double() - b) + 0.5 * (tuned[2][key].double() - b)
        assert torch.equal(merged[key], expected.float())
    for j in range(3):  # a one-hot weight gives that task's model, zero weights the base, exactly
        one_hot = [float(i == j) for i in range(3)]
        assert all(torch.equal(merge_task_vectors(base, tuned, one_hot)[k], tuned[j][k]) for k in base)
    assert all(torch.equal(merge_task_vectors(base, tuned, [0.0] * 3)[k], base[k]) for k in base)
    # FedMosaic's takfl.py computes each task vector as v - global with v = global: zero, so the merge is FedAvg
    assert all(torch.equal(merge_task_vectors(base, [base] * 3, [1 / 3] * 3)[k], base[k]) for k in base)
    half, *tuned_half = _states(3, 1, torch.bfloat16)
    assert merge_task_vectors(half, tuned_half, [0.5, 0.5])["a"].dtype == torch.bfloat16
    with pytest.raises(ValueError, match="2 task vectors but 3 weights"):
        merge_task_vectors(half, tuned_half, [0.2, 0.3, 0.5])


def test_weight_candidates_follow_the_official_heuristic() -> None:
    cands = candidate_weights(3, 10, seed=5)
    assert len(cands) == 1 + 3 * 10 and cands[0] == [1 / 3] * 3  # uniform first, then 10 per exponent 1, 5, 10
    for w in cands:
        assert sum(w) == pytest.approx(1.0) and w == sorted(w) and min(w) >= 0  # largest weight: largest teacher
    assert cands == candidate_weights(3, 10, seed=5) and cands != candidate_weights(3, 10, seed=6)
    assert candidate_weights(1, 10, seed=5) == [[1.0]]
    scores = {0: 0.5, 1: 0.2, 2: 0.2}
    assert choose_weights([[0], [1], [2]], lambda w: scores[w[0]]) == (1, 0.2)  # lowest, ties: the first


@pytest.fixture(scope="module")
def public() -> list[dict]:
    from drake.models.pretrain import draw_rows

    return draw_rows("train", 56, 0, 32)  # 32 distilled on, 8 validation, 16 held out for the test


def _setup(config: TAKFLConfig, public: list[dict]):
    method = TAKFL(config)
    archs = attach_zoo(method, ARCHS.values(), public[:40])
    updates = random_updates(archs, ARCHS, lambda cid: 10)  # four "trained" clients
    clients = {cid: ClientInfo(cid, arch, ("t",)) for cid, arch in ARCHS.items()}
    ctx = RoundContext(0, load_scenario("smoke"), 0, tuple(ARCHS), clients)
    return method, archs, updates, ctx


def test_each_distillation_lowers_the_kl_to_its_teacher_and_the_merge_is_not_fedavg(public) -> None:
    cfg = TAKFLConfig(kd_samples=32, kd_val_samples=8, kd_epochs=2, kd_batch=8, merge="uniform")
    method, archs, updates, ctx = _setup(cfg, public)
    averaged = TAKFL(TAKFLConfig(kd_samples=0)).aggregate(ctx, ServerState(), updates)  # FedAvg only
    server = method.aggregate(ctx, ServerState(), updates)
    (rnd,) = server.method_state["takfl"]["rounds"]
    held_out = public[40:]
    ensembles = {a: ensemble_teacher([row_logits(archs[ARCHS[u.client_id]], u.arrays, held_out, 8) for u in updates
                                      if ARCHS[u.client_id] == a]) for a in archs}  # fmt: skip
    for student, am in archs.items():
        log = rnd["archs"][student]
        assert log["teachers"] == ["tiny-llama-s", "tiny-llama-m"]  # smallest first
        assert log["weights"] == {"tiny-llama-s": 0.5, "tiny-llama-m": 0.5}
        for teacher, kl in log["kl_held_out"].items():  # validation rows: each distillation moves toward its teacher
            assert kl["after"] < 0.9 * kl["before"], (student, teacher, kl)
        # the merged global is closer to the teachers than the average is, on rows no step has seen
        target = [torch.stack(rows).mean(0) for rows in zip(*ensembles.values())]
        kl_avg = ensemble_kl(row_logits(am, averaged.per_arch[student], held_out, 8), target)
        kl_merged = ensemble_kl(row_logits(am, server.per_arch[student], held_out, 8), target)
        assert kl_merged < 0.9 * kl_avg, (student, kl_avg, kl_merged)
    # compute: 4 clients' and 2 students' forwards, 2 x 2 distillations of 2 epochs x 32 rows, 2 x 2 x 2 validations
    assert rnd["server_units"] == pytest.approx(4 * 40 / 3 + 2 * 32 / 3 + 4 * 64 + 8 * 8 / 3)
    assert server.method_state["takfl"]["server_ratio_to_client_training"] == pytest.approx(rnd["server_units"] / 32)


def test_tuned_weights_are_a_candidate_no_worse_than_uniform(public) -> None:
    cfg = TAKFLConfig(kd_samples=32, kd_val_samples=8, kd_epochs=1, kd_batch=8, merge_candidates=2)
    method, _archs, updates, ctx = _setup(cfg, public)
    server = method.aggregate(ctx, ServerState(), updates)
    for log in server.method_state["takfl"]["rounds"][0]["archs"].values():
        weights = list(log["weights"].values())
        assert sum(weights) == pytest.approx(1.0) and 0 <= log["candidate"] < 7
        assert log["val_ce"] == log["val_ce"]  # scored (not NaN)


def test_bad_settings_are_one_line_spec_errors() -> None:
    with pytest.raises(SpecError, match="merge='mean' is not one of tuned, uniform"):
        TAKFLConfig(merge="mean")
    with pytest.raises(SpecError, match="self_reg=-1.0 must be >= 0"):
        TAKFLConfig(self_reg=-1.0)
    assert TAKFL().compute_ratio_to_local() == pytest.approx(15 * 8 / (20 * 8))  # the server's cost is logged
