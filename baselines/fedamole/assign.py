"""Reverse selection-based expert assignment (RSEA), solved exactly.

The server scores every (expert, client) pair, S = softmax over clients of (mean key . mean query) / sqrt(r),
and picks the 0/1 matrix X maximising sum(S * X) subject to: every expert row sums to exactly ``choices``
clients and every client column holds between ``min_experts`` and ``max_experts`` experts. The official code
solves it as a binary program (cvxpy + SCIP); here it is the same binary program, solved exactly by SciPy's
MILP solver (HiGHS).
"""

from __future__ import annotations

import numpy as np
import torch

from drake.errors import DrakeError


def assignment_bounds(experts: int, clients: int, choices: int, min_experts: int, max_experts: int) -> tuple[int, int, int, int]:
    """(units, choices, low, high) actually used: an expert picks ``min(choices, clients)`` distinct clients,
    a client holds at most ``min(max_experts, experts)``; when every expert cannot place all its picks (few
    clients this round) the total is capped, and the lower bound never exceeds an even share of it."""
    c = min(choices, clients)
    high = min(max_experts, experts)
    units = min(experts * c, clients * high)
    low = min(min_experts, units // clients) if clients else 0
    return units, c, low, high


def assign_experts(scores: torch.Tensor, choices: int, min_experts: int, max_experts: int) -> torch.Tensor:
    """The optimal 0/1 assignment (E x N bool) of experts to clients for ``scores`` (E x N, values in [0, 1])."""
    n_e, n_c = scores.shape
    units, c, low, high = assignment_bounds(n_e, n_c, choices, min_experts, max_experts)
    if units == 0:
        return torch.zeros(n_e, n_c, dtype=torch.bool)
    from scipy.optimize import Bounds, LinearConstraint, milp

    # x[e, i] flattened row-major; rows: each expert places exactly c picks (or, when the clients cannot take
    # them all, the total is ``units``); columns: each client holds between low and high experts
    rows = np.kron(np.eye(n_e), np.ones(n_c))
    cols = np.kron(np.ones(n_e), np.eye(n_c))
    exact = units == n_e * c
    constraints = [
        LinearConstraint(rows, c if exact else 0, c),
        LinearConstraint(cols, low, high),
        LinearConstraint(np.ones((1, n_e * n_c)), units, units),
    ]
    objective = -scores.clamp(0.0, 1.0).double().numpy().reshape(-1)
    res = milp(objective, constraints=constraints, integrality=np.ones(n_e * n_c), bounds=Bounds(0, 1))
    if not res.success:
        raise DrakeError(f"fedamole: no expert assignment places {units} picks ({n_e} experts, {n_c} clients): "
                         f"{res.message}; lower experts_per_client or raise max_experts")  # fmt: skip
    return torch.from_numpy(np.round(res.x).reshape(n_e, n_c) > 0.5)


def check_assignment(x: torch.Tensor, choices: int, min_experts: int, max_experts: int) -> list[str]:
    """The constraints ``x`` breaks (empty when it is valid), for tests and assertions."""
    n_e, n_c = x.shape
    units, c, low, high = assignment_bounds(n_e, n_c, choices, min_experts, max_experts)
    bad = []
    rows, cols = x.sum(1).tolist(), x.sum(0).tolist()
    if units == n_e * c and any(r != c for r in rows):
        bad.append(f"expert rows {rows} != {c}")
    if any(r > c for r in rows):
        bad.append(f"an expert row exceeds {c}: {rows}")
    if any(not low <= k <= high for k in cols):
        bad.append(f"client columns {cols} outside [{low}, {high}]")
    return bad


def assignment_value(scores: torch.Tensor, x: torch.Tensor) -> float:
    return float((scores.double() * x.double()).sum())
