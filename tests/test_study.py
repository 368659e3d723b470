"""``drake study``: the plan, and a resumable run that lands on the leaderboard once."""

from __future__ import annotations

from pathlib import Path

import pytest

from drake.cli import main
from drake.errors import SpecError
from drake.method_registry import METHODS
from drake.study import StudyRun, default_plan, run_study, seed_seconds

FAST = ["--scale", "0.1", "--set", "local_steps=2", "--set", "batch_size=4", "--set", "engine.self_limit=4",
        "--set", "engine.others_limit=4", "--set", "engine.unseen_limit=4", "--set", "engine.unseen_adapt_steps=0"]  # fmt: skip


def test_the_plan_puts_the_dynamic_protocol_comparison_first() -> None:
    plan = default_plan()
    first = [r.name for r in plan[:6]]
    assert first == ["fedavg", "fedmosaic", "local", "ditto", "feddpa", "fedprox"]
    per_scenario = {s: [r.name for r in plan if r.scenario == s] for s in ("drake-dynamic", "drake-static")}
    # the protocol shift (FedAvg scored on the server's average) is measured on drake-dynamic alone, at its end
    shift = plan[len(per_scenario["drake-dynamic"]) - 1]
    assert (shift.name, shift.method, shift.scenario, shift.sets) == (
        "fedavg+server-global", "fedavg", "drake-dynamic", ("engine.protocol=server-global",))
    assert per_scenario["drake-dynamic"][:-1] == per_scenario["drake-static"]
    assert [r.scenario for r in plan] == sorted((r.scenario for r in plan), key=["drake-dynamic", "drake-static", "hetrank"].index)
    # the rank table: the rank-heterogeneous methods beside rank-uniform references, last
    assert [r.key for r in plan if r.scenario == "hetrank"] == [
        f"{m}--hetrank-homo" for m in ("fedavg", "fedmosaic", "local", "hetlora", "flexlora")]
    homo = next(r for r in plan if r.name == "fedmosaic+homo")
    assert (homo.method, homo.pool, homo.config) == ("fedmosaic", "homo", "fedmosaic-homo")
    # then the seed systems and cross-architecture baselines, the other methods, and FedMosaic's ablations last
    static = per_scenario["drake-static"]
    assert static[6:14] == ["fedms", "fedamole", "mosaic", "feddf", "fedmkt", "takfl", "hetlora", "flexlora"]
    ablations = [n for n in static if "+" in n]
    assert len(ablations) == 5 and static[-5:] == ablations
    assert set(static[:-5]) == set(METHODS.names())
    assert len({r.key for r in plan}) == len(plan)
    narrow = default_plan(["fedavg", "fedmosaic+no-rela"], ["drake-static"])
    assert [(r.name, r.scenario) for r in narrow] == [("fedavg", "drake-static"), ("fedmosaic+no-rela", "drake-static")]
    with pytest.raises(SpecError, match="fedmosaic\\+no-rela"):
        default_plan(["fedmosaic+no-rella"])
    assert {r.pool for r in plan} == {"hetero", "homo"}  # the study's scenarios default to hetero
    # a scenario without a hetero pool runs on its own default (the rank-heterogeneous table)
    ranks = default_plan(["hetlora", "fedmosaic+homo"], ["hetrank"])
    assert [(r.key, r.config) for r in ranks] == [("hetlora--hetrank-homo", None),
                                                  ("fedmosaic+homo--hetrank-homo", "fedmosaic-homo")]


def test_a_study_runs_once_and_lands_on_the_board(tiny_scenario: Path, tmp_path: Path, capsys) -> None:
    broken = StudyRun("fedavg+bad", "fedavg", str(tiny_scenario), "test", sets=("no_such_key=1",))
    plan = [StudyRun("fedavg", "fedavg", str(tiny_scenario), "test")]
    board = tmp_path / "board"
    lines: list[str] = []
    # a run that fails is logged (one line, the traceback beside it) and the study goes on
    first = run_study([broken, *plan], [0, 1, 2], tmp_path / "study", board=board, extra=FAST, progress=False,
                      log=lines.append)  # fmt: skip
    assert first[0]["status"] == "failed" and "no_such_key" in first[0]["error"] and "board" not in first[0]
    assert (tmp_path / "study" / broken.key / "error.txt").is_file() and "failed" in lines[0]
    first = first[1:]
    assert first[0]["status"] == "ran" and first[0]["board"].startswith("accepted")
    assert len(list((board / "results").glob("*.json"))) == 1 and (board / "site" / "leaderboard.md").is_file()
    again = run_study(plan, [0, 1, 2], tmp_path / "study", board=board, extra=FAST, progress=False, log=lines.append)
    assert again[0]["status"] == "done before" and again[0]["board"] == "already on the board"
    assert len((tmp_path / "study" / "study.jsonl").read_text().splitlines()) == 3
    # another session (a fresh output folder) finds the recipe on the board and does not run it again
    elsewhere = run_study(plan, [0, 1], tmp_path / "other", board=board, extra=FAST, progress=False, log=lines.append)
    assert elsewhere[0]["status"] == "on the board" and "board" not in elsewhere[0]
    assert not any((tmp_path / "other").glob("*/*.json"))
    # --plan estimates a run from its method's recorded seed wall times (a stray file is no sample)
    (board / "results" / "notes.json").write_text("[]")
    walls = seed_seconds([board / "results"])
    assert set(walls) == {("fedavg", "tiny"), ("fedavg", None)} and walls["fedavg", None] > 0
    walls = ("fedavg", walls["fedavg", None])
    assert main(["study", "--plan", "--methods", "fedavg", "ditto", "--scenarios", "drake-static", "--board", str(board)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[-3:] for line in out.splitlines() if "--drake-static" in line}
    assert rows["fedavg--drake-static-hetero"] == ["run", f"{walls[1] * 3:.0f}", "s"]  # 3 seeds
    assert rows["ditto--drake-static-hetero"] == ["to", "run", "-"]
    assert "to run: about" in out and "plus 1 runs of methods with no recorded time" in out


def test_a_sweep_keeps_its_results_and_skips_those_kept(tiny_scenario: Path, tmp_path: Path) -> None:
    """``kept`` (the sensitivity sweep): no board; each result copied to the folder, which later runs skip."""
    plan = [StudyRun("fedavg+lr", "fedavg", str(tiny_scenario), "test", sets=("lr=0.0002",))]
    kept = tmp_path / "kept"
    first = run_study(plan, [0], tmp_path / "a", board=None, kept=kept, extra=FAST, progress=False, log=print)
    assert first[0]["status"] == "ran" and "board" not in first[0]
    assert [p.name for p in kept.iterdir()] == [Path(first[0]["result"]).name]
    again = run_study(plan, [0], tmp_path / "b", board=None, kept=kept, extra=FAST, progress=False, log=print)
    assert again[0]["status"] == "kept before" and not any((tmp_path / "b").glob("*/*.json"))


def test_a_resumed_seed_is_estimated_from_its_phase_times(tmp_path: Path) -> None:
    """A resumed seed's wall_seconds covers the rounds after the resume only; its phase times cover them all."""
    import json

    seeds = [{"wall_seconds": 39.0, "extra": {"wall_by_phase": {"train": 256.0, "eval": 174.0, "train_s_per_example": 0.5}}},
             {"wall_seconds": 500.0, "extra": {"wall_by_phase": {"train": 300.0}}}]  # fmt: skip
    record = {"run_info": {"method": {"name": "local"}, "scenario": {"name": "drake-static"}},
              "results": {"per_seed": seeds}}  # fmt: skip
    (tmp_path / "local--drake-static-hetero--0.json").write_text(json.dumps(record))
    assert seed_seconds([tmp_path]) == {("local", "drake-static"): 465.0, ("local", None): 465.0}
