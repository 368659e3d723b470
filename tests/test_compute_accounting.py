"""The headline compute ratio to Local counts what a method's log says it spent beyond its clients' local
steps: server-side distillation (PublicData methods) and FedMS's sparsely activated stage 1."""

from __future__ import annotations

import pytest

from baselines.feddf import FedDF
from baselines.fedms import FedMS
from baselines.perada import PerAda
from drake.fl.method import ServerState


def test_public_data_methods_add_their_logged_server_units() -> None:
    server = ServerState(method_state={"feddf": {"server_units": 30.0, "client_units": 120.0}})
    assert FedDF().compute_scale(server) == pytest.approx(1.25)
    assert FedDF().compute_scale(ServerState()) == 1.0  # nothing distilled, nothing logged
    assert PerAda().compute_scale(server) == 1.0  # another method's log is not read


def test_fedms_scales_by_the_mean_block_passes_over_the_rounds() -> None:
    rounds = [{"block_passes": 0.5}, {"block_passes": 0.7}, {"block_passes": 1.0}, {"block_passes": 1.0}]
    assert FedMS().compute_scale(ServerState(method_state={"fedms": {"rounds": rounds}})) == pytest.approx(0.8)
    assert FedMS().compute_scale(ServerState()) == 1.0
