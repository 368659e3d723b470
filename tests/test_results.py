"""drake.results and drake.plots: schema 1.0 records validate, round-trip, reject tampering; plots render."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from drake.errors import DataError
from drake.plots import mean_curves, plot_client_bars, plot_learning_curves, plot_relevance
from drake.results import (
    config_hash,
    environment_info,
    load_result,
    make_record,
    recompute_summary,
    result_filename,
    validate_result,
    write_result,
)
from drake.spec import load_scenario

ENV = {
    "drake_version": "0.1.0",
    "git_commit": None,
    "packages": {"torch": "2.13.0", "flwr": None},
    "hardware": {"cpu": "test cpu", "gpu": None, "threads": 2},
}
DATA = {"source": "synth", "scale": "tiny", "image_size": 32, "seed": 0}
TASK_FP = "0" * 64


def _seed_entry(seed: int, scenario: Any, status: str = "success") -> dict[str, Any]:
    """Client c scores 0.1 * (c + 1) * round on own tasks, half that elsewhere (+ 0.01 * seed)."""
    own = {c.id: list(c.tasks) for c in scenario.clients}
    everything = [t for ts in own.values() for t in ts]
    rounds = []
    for r in (1, 2):
        ev = {
            c: {t: round(min(1.0, (0.1 * (c + 1) * r) * (1 if t in own[c] else 0.5) + 0.01 * seed), 6) for t in everything}
            for c in own
        }
        train = {c: {"loss": 1.0 / r, "steps": 4, "examples": 16} for c in own}
        rounds.append({"round": r, "eval": ev, "train": train})
    last = rounds[-1]["eval"]
    final = {
        c: {
            "own": {t: {"metric": "choice_accuracy", "score": last[c][t], "n": 8} for t in own[c]},
            "others": {t: {"metric": "choice_accuracy", "score": last[c][t], "n": 8} for t in everything if t not in own[c]},
            "unseen": {"dreamsim_0": {"metric": "choice_accuracy", "score": 0.5, "n": 8}},
        }
        for c in own
    }
    return {
        "seed": seed,
        "status": status,
        "error": None if status == "success" else "RuntimeError: boom",
        "final": final if status == "success" else {},
        "rounds": rounds if status == "success" else [],
        "comm_bytes": {"total_up": 200, "total_down": 300,
                       "per_round": [{"round": 1, "up": 100, "down": 150}, {"round": 2, "up": 100, "down": 150}]},
        "wall_seconds": 1.5,
        "relevance": [{"round": 2, "clients": [0, 1, 2], "matrix": [[1.0, 0.2, 0.1], [0.2, 1.0, 0.3], [0.1, 0.3, 1.0]]}],
        "extra": {"note": "synthetic"},
    }


def _record(seeds: tuple[int, ...] = (0, 1), method_config: dict | None = None, **kw: Any) -> dict[str, Any]:
    scenario = load_scenario("smoke")
    return make_record(
        command="python eval.py --method fedavg --scenario smoke --seeds " + " ".join(map(str, seeds)),
        engine="sequential",
        method="fedavg",
        method_config=method_config if method_config is not None else {"lr": 0.001, "local_steps": 4},
        scenario=scenario,
        data=DATA,
        per_seed=[_seed_entry(s, scenario) for s in seeds],
        tasks={t: {"fingerprint": TASK_FP, "data_sha256": "1" * 64} for t in scenario.tasks},
        env=ENV,
        created_at="2026-11-25T00:00:00+00:00",
        **kw,
    )


@pytest.fixture(scope="module")
def record() -> dict[str, Any]:
    return _record()


def test_valid_record_validates_and_round_trips(record: dict[str, Any], tmp_path: Path) -> None:
    assert validate_result(record) == []
    pool = record["run_info"]["scenario"]["pool"]
    assert result_filename(record) == f"fedavg--smoke-{pool}--{record['run_info']['config_hash'][:8]}.json"
    path = write_result(tmp_path / result_filename(record), record)
    loaded = load_result(path)
    assert loaded == record
    assert recompute_summary(loaded) == record["results"]["summary"]
    assert "NaN" not in path.read_text()


def test_summary_numbers(record: dict[str, Any]) -> None:
    # smoke: clients 0..2, own-task score at round r = 0.1 (c+1) r (+0.01 seed); others half of it
    s = record["results"]["summary"]
    assert s["n_seeds"] == 2
    # A_last Self per client (seed 0): 0.2, 0.4, 0.6 -> 0.4; seed 1 adds 0.01 -> mean over seeds 0.405
    assert s["self"]["a_last"]["mean"] == pytest.approx(0.405)
    assert s["self"]["a_last"]["std"] == pytest.approx(0.005)
    # A_AUC Self (seed 0): per client (0.1+0.2)/2 (c+1) -> mean 0.3; Others: half -> 0.15
    assert s["self"]["a_auc"]["mean"] == pytest.approx(0.305)
    assert s["others"]["a_auc"]["mean"] == pytest.approx(0.155)
    assert s["self"]["a_last"]["worst_client"] == pytest.approx(0.205)


def test_config_hash_stable_and_seed_independent() -> None:
    a = config_hash({"lr": 0.001, "local_steps": 4}, "f" * 64, DATA)
    b = config_hash({"local_steps": 4, "lr": 0.001}, "f" * 64, dict(reversed(list(DATA.items()))))
    assert a == b and len(a) == 16 and int(a, 16) >= 0
    assert config_hash({"lr": 0.01, "local_steps": 4}, "f" * 64, DATA) != a
    assert config_hash({"lr": 0.001, "local_steps": 4}, "e" * 64, DATA) != a
    assert config_hash({"lr": 0.001, "local_steps": 4}, "f" * 64, {**DATA, "seed": 1}) != a
    assert _record(seeds=(0,))["run_info"]["config_hash"] == _record(seeds=(0, 1, 2))["run_info"]["config_hash"]


def _problems(record: dict[str, Any], edit: Any) -> list[str]:
    bad = copy.deepcopy(record)
    edit(bad)
    return validate_result(bad)


def test_rejects_tampered_summary(record: dict[str, Any]) -> None:
    problems = _problems(record, lambda r: r["results"]["summary"]["self"]["a_last"].update(mean=0.99))
    assert problems == ["results.summary.self.a_last.mean = 0.99 but the per-seed data give 0.405"]
    # a per-seed score edited without updating the summary is caught too
    problems = _problems(record, lambda r: r["results"]["per_seed"][0]["rounds"][1]["eval"]["0"].update(vsr_0=1.0))
    assert problems and all(p.startswith("results.summary.self.") for p in problems)
    # a final score edited alone (the summary comes from the rounds) no longer copies the last round
    problems = _problems(record, lambda r: r["results"]["per_seed"][0]["final"]["0"]["own"]["vsr_0"].update(score=1.0))
    assert len(problems) == 1 and problems[0].startswith("results.per_seed[0].final.0.own.vsr_0.score = 1 but the last")
    # a missing evaluation round makes the summary impossible to recompute
    problems = _problems(record, lambda r: r["results"]["per_seed"][1]["rounds"].pop())
    assert problems == ["results.per_seed: cannot recompute the summary (seed 1: summarize_run: eval rounds [2] "
                        "have no scores; rounds present: [1])"]


def test_rejects_nan_and_inf(record: dict[str, Any]) -> None:
    problems = _problems(record, lambda r: r["results"]["per_seed"][0].update(wall_seconds=float("nan")))
    assert problems == ["results.per_seed[0].wall_seconds: nan is not allowed "
                        "(NaN/inf is never a valid score or count; record null or fail the seed)"]
    problems = _problems(record, lambda r: r["results"]["per_seed"][1]["rounds"][0]["train"]["2"].update(loss=float("inf")))
    assert problems[0].startswith("results.per_seed[1].rounds[0].train.2.loss: inf is not allowed")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda r: r["run_info"].pop("seeds"), "run_info: 'seeds' is a required property"),
        (lambda r: r["run_info"].update(engine_name="x"), "run_info: Additional properties are not allowed"),
        (lambda r: r.update(schema_version="0.9"), "schema_version '0.9' is not supported"),
        (lambda r: r["results"]["per_seed"][0].update(status="ok"), "results.per_seed[0].status: 'ok' is not one of"),
        (lambda r: r["results"]["per_seed"][0]["rounds"][0]["eval"]["1"].update(vsr_0=1.5),
         "results.per_seed[0].rounds[0].eval.1.vsr_0: 1.5 is greater than the maximum of 1"),
        (lambda r: r["run_info"].update(config_hash="0123456789abcdef"), "run_info.config_hash: 0123456789abcdef !="),
        (lambda r: r["run_info"]["method"]["config"].update(lr=0.5), "run_info.config_hash:"),
        (lambda r: r["run_info"]["scenario"]["spec"].update(rounds=20), "run_info.scenario.fingerprint: does not match"),
        (lambda r: r["run_info"].update(seeds=[0, 1, 2]), "results.per_seed: seeds [0, 1] do not match run_info.seeds"),
        (lambda r: r["run_info"].update(created_at="yesterday"), "run_info.created_at: 'yesterday' is not an ISO 8601"),
        (lambda r: r["results"]["per_seed"][0]["relevance"][0]["matrix"].pop(), "results.per_seed[0].relevance[0].matrix: must be 3 x 3"),
        (lambda r: r["results"]["per_seed"][0].update(status="failed"), "results.per_seed[0].error: None is not of type 'string'"),
        (lambda r: r["meta_info"]["tasks"]["vsr_0"].update(fingerprint="abc"), "meta_info.tasks.vsr_0.fingerprint: 'abc' does not match"),
    ],
)
def test_rejects_bad_records_with_readable_messages(record: dict[str, Any], edit: Any, expected: str) -> None:
    problems = _problems(record, edit)
    assert problems, "the edited record should be invalid"
    assert any(p.startswith(expected) for p in problems), problems


def test_failed_seed_is_recorded_and_excluded() -> None:
    scenario = load_scenario("smoke")
    rec = _record(seeds=(0,))
    rec["results"]["per_seed"].append(_seed_entry(7, scenario, status="failed"))
    rec["run_info"]["seeds"].append(7)
    assert validate_result(rec) == []  # summary still equals the one-seed recompute
    assert rec["results"]["summary"]["n_seeds"] == 1


def test_write_is_atomic_and_refuses_invalid(record: dict[str, Any], tmp_path: Path) -> None:
    path = write_result(tmp_path / "r.json", record)
    before = path.read_bytes()
    bad = copy.deepcopy(record)
    bad["results"]["per_seed"][0]["wall_seconds"] = float("nan")
    with pytest.raises(DataError, match=r"r\.json: invalid result record: results\.per_seed\[0\]\.wall_seconds"):
        write_result(path, bad)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # no temp file left behind
    with pytest.raises(DataError):
        write_result(tmp_path / "new.json", {"schema_version": "1.0"})
    assert not (tmp_path / "new.json").exists()


def test_int_keys_are_written_as_strings(record: dict[str, Any], tmp_path: Path) -> None:
    rec = copy.deepcopy(record)
    rec["results"]["per_seed"][0]["rounds"][0]["train"] = {
        int(k): v for k, v in rec["results"]["per_seed"][0]["rounds"][0]["train"].items()
    }
    assert validate_result(rec) == []
    assert load_result(write_result(tmp_path / "r.json", rec)) == record


def test_load_result_errors(record: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(DataError, match="result file not found"):
        load_result(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema_version": "1.0",\n  "run_info": }')
    with pytest.raises(DataError, match=r"broken\.json:2:\d+: invalid JSON"):
        load_result(broken)
    tampered = copy.deepcopy(record)
    tampered["results"]["summary"]["others"]["a_auc"]["mean"] = 0.0
    path = tmp_path / "tampered.json"
    path.write_text(json.dumps(tampered))
    with pytest.raises(DataError, match=r"invalid result record: results\.summary\.others\.a_auc\.mean"):
        load_result(path)
    assert load_result(path, validate=False)["schema_version"] == "1.0"
    nan = tmp_path / "nan.json"
    nan.write_text(path.read_text().replace('"wall_seconds": 1.5', '"wall_seconds": NaN', 1))
    with pytest.raises(DataError, match="nan is not allowed"):
        load_result(nan)


def test_environment_info() -> None:
    env = environment_info()
    assert set(env) >= {"drake_version", "git_commit", "packages", "hardware"}
    assert env["packages"]["transformers"] and env["packages"]["python"]
    assert env["git_commit"] is None or len(env["git_commit"]) == 40
    assert env["hardware"]["threads"] >= 1 and env["hardware"]["cpu"]


def test_plots_write_deterministic_pngs(record: dict[str, Any], tmp_path: Path) -> None:
    other = _record(method_config={"lr": 0.01, "local_steps": 4})
    curves = mean_curves(record)
    assert curves["self"] == {1: pytest.approx(0.205), 2: pytest.approx(0.405)}
    made = [
        plot_learning_curves([record, other], tmp_path / "curves.png"),
        plot_client_bars(record, tmp_path / "bars.png"),
        plot_relevance([[1.0, 0.2], [0.3, 1.0]], tmp_path / "rel.png", clients=[3, 7], title="round 2"),
    ]
    for path in made:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
        assert b"Software" not in data
    again = plot_client_bars(record, tmp_path / "bars2.png")
    assert again.read_bytes() == (tmp_path / "bars.png").read_bytes()
    with pytest.raises(DataError, match="square"):
        plot_relevance([[1.0, 0.2]], tmp_path / "bad.png")
    with pytest.raises(DataError, match="no records"):
        plot_learning_curves([], tmp_path / "none.png")


def test_git_dirty_flags_uncommitted_code_but_not_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run from edited or new code cannot be reproduced from its commit: the record says so (run_info.git_dirty);
    result files, docs and ignored folders do not count."""
    import subprocess

    import drake.results as R

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / ".gitignore").write_text("runs/\n")
    (tmp_path / "method.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
    monkeypatch.setattr(R, "REPO_ROOT", tmp_path)
    assert R.environment_info()["git_dirty"] is False
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "new.py").write_text("ignored\n")
    (tmp_path / "result.json").write_text("{}\n")
    (tmp_path / "notes.md").write_text("notes\n")
    assert R.environment_info()["git_dirty"] is False
    (tmp_path / "mine.py").write_text("y = 2\n")  # a new method file, not committed
    assert R.environment_info()["git_dirty"] is True
    (tmp_path / "mine.py").unlink()
    (tmp_path / "method.py").write_text("x = 2\n")
    assert R.environment_info()["git_dirty"] is True
    monkeypatch.setattr(R, "REPO_ROOT", tmp_path / "runs")  # inside the repo but ignored: still the repo's state
    assert R.environment_info()["git_dirty"] is True
