"""benchmarks/calibrate_tasks.py: a task's calibration does not depend on which other tasks share its process."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch

from drake.spec import REPO_ROOT


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], ModuleType]:
    """Import a benchmarks/ script by name (importable by name in spawned workers too)."""
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    return importlib.import_module


def test_two_jobs_give_the_numbers_of_one(tmp_path: Path, untrained_models: dict[str, Path], bench) -> None:
    calibrate = bench("calibrate_tasks")
    common = ["--model", str(untrained_models["tiny-llama-s"]), "--tasks", "vsr_0", "irfl_3", "iconqa_2",
              "--steps", "3", "--batch", "4", "--limit", "6", "--seeds", "2", "--scale", "0.05", "--data-dir", str(tmp_path / "data"),
              "--threads", "1"]  # fmt: skip
    for jobs in (1, 2, 4):  # 4 > 3 tasks: a worker left without tasks must not calibrate all 47
        calibrate.main([*common, "--jobs", str(jobs), "--out", str(tmp_path / f"jobs{jobs}.json")])
    one, two, four = (json.loads((tmp_path / f"jobs{j}.json").read_text())["tasks"] for j in (1, 2, 4))
    assert sorted(two) == sorted(four) == ["iconqa_2", "irfl_3", "vsr_0"]
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert {t: strip(r) for t, r in one.items()} == {t: strip(r) for t, r in two.items()} == {t: strip(r) for t, r in four.items()}
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["final_loss"] > 0 for r in one.values())
    for r in one.values():  # the band is judged on the mean over seeds
        assert len(r["accuracy_seeds"]) == 2 and r["accuracy"] == pytest.approx(sum(r["accuracy_seeds"]) / 2)


def test_merge_replaces_re_run_rows_and_refuses_another_budget(
    tmp_path: Path, untrained_models: dict[str, Path], bench
) -> None:
    calibrate = bench("calibrate_tasks")
    out = tmp_path / "table.json"
    common = ["--model", str(untrained_models["tiny-llama-s"]), "--steps", "2", "--batch", "4", "--limit", "4",
              "--seeds", "1", "--scale", "0.05", "--data-dir", str(tmp_path / "data"), "--threads", "1", "--out", str(out)]  # fmt: skip
    calibrate.main([*common, "--tasks", "vsr_0", "irfl_3"])
    table = json.loads(out.read_text())
    table["tasks"]["vsr_0"]["accuracy"] = -1.0  # a marker the re-run must replace
    out.write_text(json.dumps(table))
    calibrate.main([*common, "--tasks", "vsr_0", "--merge", "--why", "redesigned"])
    new = json.loads(out.read_text())
    assert sorted(new["tasks"]) == ["irfl_3", "vsr_0"] and new["tasks"]["irfl_3"] == table["tasks"]["irfl_3"]
    assert new["tasks"]["vsr_0"]["accuracy"] >= 0.0 and new["command"] == table["command"]
    assert [(u["tasks"], u["why"]) for u in new["updated_by"]] == [(["vsr_0"], "redesigned")]
    assert "--merge" in new["updated_by"][0]["command"] and "redesigned" not in new["updated_by"][0]["command"]
    before = out.read_bytes()
    with pytest.raises(SystemExit) as exc:  # another budget would mix two protocols in one table: refused up front
        calibrate.main([*common, "--tasks", "vsr_0", "--merge", "--steps", "3"])
    assert exc.value.code == 2 and out.read_bytes() == before


def test_full_training_moves_the_base_and_puts_it_back(
    tmp_path: Path, untrained_models: dict[str, Path], bench
) -> None:
    calibrate = bench("calibrate_tasks")
    common = ["--model", str(untrained_models["tiny-llama-s"]), "--steps", "3", "--batch", "4", "--limit", "6",
              "--seeds", "1", "--scale", "0.05", "--data-dir", str(tmp_path / "data"), "--threads", "1"]  # fmt: skip
    runs = {
        "adapter": ["--tasks", "irfl_3"],
        "full": ["--tasks", "irfl_3", "--train", "full"],
        "full_after_another": ["--tasks", "vsr_0", "irfl_3", "--train", "full"],
    }
    tables = {}
    for key, extra in runs.items():
        calibrate.main([*common, *extra, "--out", str(tmp_path / f"{key}.json")])
        tables[key] = json.loads((tmp_path / f"{key}.json").read_text())
    row = {k: {f: v for f, v in t["tasks"]["irfl_3"].items() if f != "seconds"} for k, t in tables.items()}
    assert row["full"]["final_loss"] != row["adapter"]["final_loss"]  # the base weights trained too
    assert row["full_after_another"] == row["full"]  # ... and were put back before the next task
    assert tables["full"]["budget"]["train"] == "full" and "train" not in tables["adapter"]["budget"]


def test_learnability_probes_run_like_a_calibration(tmp_path: Path, untrained_models: dict[str, Path], bench) -> None:
    probes = bench("learnability_probes")
    out = tmp_path / "probes.json"
    probes.main(["--model", str(untrained_models["tiny-llama-s"]), "--probes", "tf_color", "pointer4_fixed",
                 "--steps", "2", "--batch", "4", "--seeds", "2", "--out", str(out)])  # fmt: skip
    record = json.loads(out.read_text())
    assert sorted(record["probes"]) == ["pointer4_fixed", "tf_color"]
    assert record["probes"]["pointer4_fixed"]["chance"] == 0.25 and record["probes"]["tf_color"]["chance"] == 0.5
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["what"] for r in record["probes"].values())
    assert all(len(r["accuracy_seeds"]) == 2 for r in record["probes"].values()) and record["budget"]["seeds"] == [0, 1]


@pytest.mark.parametrize("script", ["calibrate_tasks", "learnability_probes"])
def test_seeds_below_one_are_refused_before_any_work(bench, capsys: pytest.CaptureFixture[str], script: str) -> None:
    with pytest.raises(SystemExit) as e:
        bench(script).main(["--seeds", "0", "--out", ""])
    assert e.value.code == 2 and "--seeds: must be >= 1, got 0" in capsys.readouterr().err


def test_linear_probe_reads_what_is_there_and_nothing_else(bench) -> None:
    probe = bench("feature_probes").linear_probe
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 32, generator=g)
    y = (x[:, 3] > 0).long()  # one coordinate decides the label
    assert probe(x[:300], y[:300], x[300:], y[300:]) >= 0.95
    noise = torch.randint(0, 2, (400,), generator=g)  # labels nothing in x predicts
    assert probe(x[:300], noise[:300], x[300:], noise[300:]) <= 0.7


def test_feature_probes_write_one_row_per_kind(tmp_path: Path, untrained_models: dict[str, Path], bench) -> None:
    probes = bench("feature_probes")
    out = tmp_path / "features.json"
    probes.main(["--models", str(untrained_models["tiny-llama-s"]), "--n-train", "24", "--n-test", "8",
                 "--threads", "1", "--out", str(out)])  # fmt: skip
    rows = json.loads(out.read_text())["models"][str(untrained_models["tiny-llama-s"])]
    assert sorted(rows) == sorted([*probes.PUBLIC_KINDS, probes.INTERACTION])
    for r in rows.values():
        assert all(0.0 <= r[k] <= 1.0 for k in ("majority", "pixels", "tower", "projector")) and r["classes"] >= 2
    assert "member" not in rows["color"]  # an untrained folder has no pre-training record to quote
    assert json.loads(out.read_text())["command"].endswith(f"--out {out}")  # the call's own arguments
    with pytest.raises(SystemExit) as e:
        probes.main(["--n-train", "0", "--out", str(out)])
    assert e.value.code == 2
