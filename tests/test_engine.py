"""The harness: aggregation exactness, scopes, determinism, resume identity, eval.py end to end."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from drake.fl.method import ServerState, group_by_architecture, weighted_mean
from drake.fl.types import ClientInfo, ClientUpdate, RoundContext
from drake.method_registry import METHODS
from drake.runner import add_run_arguments, make_engine, plan_from_args, seed_record
from drake.spec import load_scenario
from tests.records import strip_timing

FAST = ["--scale", "0.1", "--no-progress", "--set", "local_steps=2", "--set", "batch_size=4",
        "--set", "engine.others_limit=4", "--set", "engine.self_limit=6", "--set", "engine.unseen_limit=4"]  # fmt: skip


def _args(scenario: Path, out: Path, *extra: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_run_arguments(p)
    return p.parse_args(["--scenario", str(scenario), "--out", str(out), *FAST, *extra])


# ------------------------------------------------------------------------------------- pure units


def test_weighted_mean_is_exact() -> None:
    a = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.0])}
    b = {"w": torch.tensor([3.0, 6.0]), "b": torch.tensor([4.0])}
    m = weighted_mean([a, b], [1, 3])
    assert torch.equal(m["w"], torch.tensor([2.5, 5.0]))
    assert torch.equal(m["b"], torch.tensor([3.0]))
    with pytest.raises(ValueError):
        weighted_mean([a], [0])


def test_fedavg_averages_only_within_architecture() -> None:
    fedavg = METHODS.get("fedavg")()
    clients = {0: ClientInfo(0, "s", ("t",)), 1: ClientInfo(1, "m", ("t",)), 2: ClientInfo(2, "s", ("t",))}
    scen = load_scenario("smoke")
    ctx = RoundContext(0, scen, 0, (0, 1, 2), clients)
    ups = [
        ClientUpdate(0, {"x": torch.tensor([0.0])}, 10),
        ClientUpdate(1, {"x": torch.tensor([100.0]), "y": torch.ones(3)}, 5),
        ClientUpdate(2, {"x": torch.tensor([3.0])}, 20),
    ]
    assert [u.client_id for u in group_by_architecture(ups, clients)["s"]] == [0, 2]
    server = fedavg.aggregate(ctx, ServerState(), ups)
    assert torch.equal(server.per_arch["s"]["x"], torch.tensor([2.0]))  # (0*10 + 3*20) / 30
    assert torch.equal(server.per_arch["m"]["x"], torch.tensor([100.0]))
    payloads = fedavg.configure_round(ctx, server)
    assert set(payloads[1].arrays) == {"x", "y"} and set(payloads[0].arrays) == {"x"}


# --------------------------------------------------------------------------------- with a model


def _run_seed(args: argparse.Namespace, seed: int = 0, *, resume: bool = False, callbacks=()) -> dict:
    plan = plan_from_args(args)
    engine, method = make_engine(plan, seed, Path(args.out) / "work")
    raw = engine.run(method, plan.scenario, seed=seed, resume=resume, callbacks=callbacks)
    return seed_record(seed, plan.scenario, raw, wall_seconds=0.0)


def test_no_progress_also_silences_the_data_build(tiny_scenario: Path, tmp_path: Path, capsys) -> None:
    """A study runs with --no-progress into a log: the data build must not draw its bar there either."""
    plan_from_args(_args(tiny_scenario, tmp_path / "a", "--data-dir", str(tmp_path / "data")))
    assert (tmp_path / "data").is_dir()
    assert "drake build" not in capsys.readouterr().err


@pytest.mark.parametrize("method", ["local", "fedavg"])
def test_same_seed_same_numbers_and_scopes(method: str, tiny_scenario: Path, tmp_path: Path) -> None:
    args = _args(tiny_scenario, tmp_path / "a", "--method", method)
    plan = plan_from_args(args)
    engine, m = make_engine(plan, 0, None)
    sent: list[ClientUpdate] = []
    original = m.client_update

    def spy(ctx, client, payload):
        u = original(ctx, client, payload)
        local = set(client.adapter.names("local"))
        assert not (set(u.arrays) & local), "local parameters left the client"
        sent.append(u)
        return u

    m.client_update = spy  # type: ignore[method-assign]
    raw = engine.run(m, plan.scenario, seed=0)
    first = seed_record(0, plan.scenario, raw, wall_seconds=0.0)
    assert len(sent) == 2 * 3
    for entry in first["rounds"]:
        for scores in entry["eval"].values():
            assert all(0.0 <= v <= 1.0 for v in scores.values())
    if method == "local":
        assert first["comm_bytes"]["total_up"] == 0 and all(not u.arrays for u in sent)
    else:
        assert first["comm_bytes"]["total_up"] > 0
    again = _run_seed(_args(tiny_scenario, tmp_path / "b", "--method", method))
    assert strip_timing(first) == strip_timing(again)


@pytest.mark.parametrize(("method", "shared"), [("fedavg", True), ("fedper", False)])
def test_clients_with_one_model_are_scored_once_with_the_same_numbers(
    method: str, shared: bool, tiny_scenario: Path, tmp_path: Path, monkeypatch
) -> None:
    """eval_key (server protocols only): clients 0 and 2 (same architecture) share FedAvg's global adapter;
    FedPer keeps local keys."""
    from drake.fl.client import ClientRuntime

    calls: list[str] = []
    evaluate = ClientRuntime.evaluate

    def counted(self, task, **kw):
        calls.append(task)
        return evaluate(self, task, **kw)

    monkeypatch.setattr(ClientRuntime, "evaluate", counted)
    server = ("--protocol", "server-global")
    memo = _run_seed(_args(tiny_scenario, tmp_path / "memo", "--method", method, *server))
    n_memo = len(calls)
    calls.clear()
    monkeypatch.setattr(METHODS.get(method), "eval_key", lambda self, ctx, client, server: None)
    plain = _run_seed(_args(tiny_scenario, tmp_path / "plain", "--method", method, *server))
    assert strip_timing(memo) == strip_timing(plain)
    assert all(f["unseen"] and f["unseen_adapted"] for f in memo["final"].values())
    assert (n_memo < len(calls)) == shared


@pytest.mark.parametrize("engine", ["sequential", "processes"])
def test_resume_is_identical_to_an_uninterrupted_run(engine: str, tiny_scenario: Path, tmp_path: Path) -> None:
    full = _run_seed(_args(tiny_scenario, tmp_path / "full"))

    class Killed(Exception):
        pass

    def kill_after_first_round(entry: dict) -> None:
        if entry["round"] == 1:
            raise Killed

    args = _args(tiny_scenario, tmp_path / "resumed", "--engine", engine, "--set", "engine.workers=2")
    with pytest.raises(Killed):
        _run_seed(args, callbacks=[kill_after_first_round])
    assert (tmp_path / "resumed" / "work" / "checkpoint.pt").is_file()
    if engine == "sequential":  # a checkpoint made with other base weights (a re-trained zoo member) is refused
        import shutil

        from drake.errors import DataError

        shutil.copytree(tmp_path / "resumed", tmp_path / "other")
        blob = torch.load(tmp_path / "other" / "work" / "checkpoint.pt", weights_only=False)
        blob["weights"] = {arch: "0" * 64 for arch in blob["weights"]}
        torch.save(blob, tmp_path / "other" / "work" / "checkpoint.pt")
        with pytest.raises(DataError, match="base weights of .* changed"):
            _run_seed(_args(tiny_scenario, tmp_path / "other"), resume=True)
        blob.pop("format")  # what a drake before checkpoint format 2 wrote
        torch.save(blob, tmp_path / "other" / "work" / "checkpoint.pt")
        with pytest.raises(DataError, match="another version of drake .format 1"):
            _run_seed(_args(tiny_scenario, tmp_path / "other"), resume=True)
    resumed = _run_seed(args, resume=True)
    assert strip_timing(resumed) == strip_timing(full)


def test_eval_py_end_to_end_writes_a_valid_result(tiny_scenario: Path, tmp_path: Path, capsys) -> None:
    import eval as eval_script
    from drake.results import load_result, seed_summaries

    out = tmp_path / "out"
    code = eval_script.main(["--method", "fedavg", "--scenario", str(tiny_scenario), "--out", str(out), "--resume", *FAST])
    assert code == 0
    (path,) = out.glob("fedavg--tiny-test--*.json")
    record = load_result(path)  # validates schema + recomputed summary
    assert record["run_info"]["command"].startswith("python eval.py --method fedavg")
    assert record["results"]["summary"]["n_seeds"] == 1
    assert seed_summaries(record)[0]["self"]["a_last"]["n"] == 3  # one Self score per client
    models = record["meta_info"]["models"]  # which base weights ran (a zoo name outlives its weights)
    assert set(models) == set(load_scenario(str(tiny_scenario)).architectures)
    assert len({m["weights_sha256"] for m in models.values()}) == 2
    assert (out / (path.stem + "-curves.png")).is_file()
    printed = capsys.readouterr()
    assert "Self A_last" in printed.out
    assert "note: --resume: no checkpoint under" in printed.err  # nothing to resume: said, then a fresh run


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--method", "fedavgg"], "did you mean 'fedavg'"),
        (["--scenario", "nope"], "unknown scenario"),
        (["--set", "lr=fast"], "expected a number"),
        (["--set", "lrr=1"], "did you mean 'lr'"),
        (["--set", "engine.bogus=1"], "unknown key 'bogus'"),
        # refused before anything loads (the whole run used to go first, then the record was refused)
        (["--seeds", "0", "0"], "--seeds 0 0: expected distinct seeds"),
        (["--threads", "-1"], "--threads -1: expected 1 or more"),
        (["--scale", "nan"], "--scale nan: expected a finite number > 0"),
        (["--device", "tpu"], "--device 'tpu': expected auto, cpu or cuda"),
        (["--set", "lora_r=0"], "method 'fedavg' config (MethodConfig): lora_r 0: expected 1 or more"),
        (["--set", "local_steps=-3"], "local_steps -3: expected 0 or more"),
        (["--set", "lora_targets=foo"], "lora_targets ('foo',): expected one or more of q_proj"),
        (["--set", "engine.self_limit=-1"], "engine settings: self_limit -1: expected 1 or more"),
        (["--scenaro", "smoke"], "unrecognized arguments: --scenaro smoke (did you mean '--scenario'"),
    ],
)
def test_eval_py_bad_input_is_one_line_exit_2(argv: list[str], needle: str, capsys, tmp_path: Path) -> None:
    import eval as eval_script

    defaults = ["--method", "fedavg"] if "--method" not in argv else []
    code = eval_script.main([*defaults, "--out", str(tmp_path), "--scale", "0.1", *argv, "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not any(tmp_path.iterdir()), "nothing is written for a refused run"


def test_out_that_is_a_file_is_refused_up_front(capsys, tmp_path: Path) -> None:
    import eval as eval_script

    (tmp_path / "file").write_text("x")
    assert eval_script.main(["--method", "fedavg", "--out", str(tmp_path / "file"), "--no-progress"]) == 2
    assert capsys.readouterr().err.strip() == f"error: --out {tmp_path / 'file'}: is a file; give a directory (created if missing)"


def test_an_unreadable_checkpoint_is_one_line(tmp_path: Path) -> None:
    from drake.errors import DataError
    from drake.fl.checkpoint import Checkpoint

    for content in (b"", b"not a checkpoint"):
        path = tmp_path / "checkpoint.pt"
        path.write_bytes(content)
        with pytest.raises(DataError, match=r"checkpoint.pt: unreadable checkpoint \(\w+\); delete it"):
            Checkpoint(path).load(seed=0, method="fedavg", weights={})


def test_a_config_class_check_or_missing_field_is_a_spec_error() -> None:
    """A method's own check (``__post_init__`` raising ValueError) and a field without a default are user
    errors (one line, exit code 2), not internal faults."""
    from dataclasses import dataclass

    from drake.config import build_config
    from drake.errors import SpecError

    @dataclass(frozen=True)
    class Checked:
        decay: float
        lr: float = 1e-3

        def __post_init__(self) -> None:
            if not 0 < self.decay <= 1:
                raise ValueError(f"decay must be in (0, 1], got {self.decay}")

    with pytest.raises(SpecError, match=r"^method 'x' config: decay must be in \(0, 1\], got 2.0$"):
        build_config(Checked, {"decay": "2"}, where="method 'x' config")
    with pytest.raises(SpecError, match="^method 'x' config: .*missing 1 required positional argument: 'decay'"):
        build_config(Checked, {"lr": "0.1"}, where="method 'x' config")
    assert build_config(Checked, {"decay": "0.5"}, where="x") == Checked(0.5)


@pytest.mark.parametrize(
    ("method", "config", "needle"),
    [
        ("fedprox", "mu: fast\n", "method 'fedprox' config (FedProxConfig; --config {path}): mu: expected a number"),
        ("fedavg", "lr: [1\nlocal_steps: 2\n", "{path}:2: invalid YAML (expected ',' or ']'"),
        ("fedavg", "engine: 5\n", "--config {path}: 'engine' must be a mapping of engine settings"),
    ],
)
def test_a_bad_config_file_is_one_line_naming_it(method: str, config: str, needle: str, capsys, tmp_path: Path) -> None:
    import eval as eval_script

    path = tmp_path / "my.yaml"
    path.write_text(config)
    code = eval_script.main(["--method", method, "--config", str(path), "--out", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert needle.format(path=path) in err, err
