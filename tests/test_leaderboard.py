"""The leaderboard: every rejection class of ``drake submit``, a crash-safe store, a deterministic build, and
the HTML page in a real headless Chromium (no console errors, no outside requests, sorting, screenshot).

Records are built with ``drake.results.make_record`` on the smoke scenario, with the data sha256s of a real
(tiny) DRAKE-synth build, so the data-hash check runs against a manifest written by ``drake.data.build``.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from drake.cli import main as drake_main
from drake.errors import DataError
from drake.models.zoo_manifest import shipped_info
from drake.protocol import PROTOCOLS
from drake.results import load_result, make_record, recompute_summary, result_filename
from drake.spec import REPO_ROOT, load_scenario, load_tasks
from leaderboard.build import build, mean_relevance
from leaderboard.submit import (
    SubmissionRejected,
    accepted_files,
    check_record,
    results_dir,
    submit,
    verify,
)

ENV = {"drake_version": "0.1.0", "git_commit": "0" * 40, "packages": {"torch": "2.13.0"},
       "hardware": {"cpu": "test cpu", "gpu": None, "threads": 2}}  # fmt: skip
DATA = {"source": "synth", "scale": 0.1, "image_size": 32, "seed": 0}


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may see (or be checked against) a real default build under the repository's .drake/."""
    monkeypatch.setenv("DRAKE_HOME", str(tmp_path_factory.mktemp("drake-home")))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real DRAKE-synth build of the smoke scenario's tasks (scale 0.1: about two seconds)."""
    from drake.data.build import build as build_data

    tasks, scenario = load_tasks(), load_scenario("smoke")
    out = tmp_path_factory.mktemp("data")
    build_data([tasks[t] for t in (*scenario.tasks, *scenario.unseen)], out, scale=0.1, extras=False, workers=1,
               progress=False)  # fmt: skip
    return out


def task_meta(data_dir: Path, names: list[str]) -> dict[str, Any]:
    """What the runner records: task fingerprints and the built files' sha256 (``drake.runner.task_meta``)."""
    manifest, tasks = json.loads((data_dir / "manifest.json").read_text()), load_tasks()
    return {t: {"fingerprint": tasks[t].fingerprint(),
                "data_sha256": {f["path"]: f["sha256"] for f in manifest["tasks"][t]["files"].values()}}
            for t in names}  # fmt: skip


def seed_entry(
    seed: int, own: dict[int, list[str]], *, quality: float, relevance: bool, ratio: float | None
) -> dict[str, Any]:
    """Client c's own-task score at round r is quality * (c + 1) * r / 6 (+ 0.01 seed); others half that."""
    everything = [t for ts in own.values() for t in ts]
    rounds = []
    for r in (1, 2):
        ev = {str(c): {t: round(min(1.0, quality * (c + 1) * r / 6 * (1 if t in own[c] else 0.5) + 0.01 * seed), 6)
                       for t in everything} for c in own}  # fmt: skip
        rounds.append(
            {
                "round": r,
                "eval": ev,
                "train": {str(c): {"loss": 1.0 / r, "steps": 2, "examples": 8} for c in own},
            }
        )
    final = {str(c): {"own": {t: {"metric": "choice_accuracy", "score": rounds[-1]["eval"][str(c)][t], "n": 8} for t in own[c]},
                      "others": {}, "unseen": {}} for c in own}  # fmt: skip
    entry: dict[str, Any] = {
        "seed": seed, "status": "success", "error": None, "final": final, "rounds": rounds,
        "comm_bytes": {"total_up": 1000 * (seed + 1), "total_down": 2000,
                       "per_round": [{"round": 1, "up": 500 * (seed + 1), "down": 1000}, {"round": 2, "up": 500 * (seed + 1), "down": 1000}]},
        "wall_seconds": 1.0, "extra": {},
    }  # fmt: skip
    if relevance:
        entry["relevance"] = [{"round": 2, "clients": [0, 1, 2],
                               "matrix": [[1.0, 0.1 * seed, 0.2], [0.3, 1.0, 0.1], [0.2, 0.4, 1.0]]}]  # fmt: skip
    if ratio is not None:
        entry["extra"]["compute_ratio_to_local"] = ratio + 0.1 * seed
    return entry


def make(
    built: Path,
    method: str = "fedavg",
    seeds: tuple[int, ...] = (0, 1, 2),
    *,
    lr: float = 0.001,
    quality: float = 1.0,
    relevance: bool = False,
    ratio: float | None = None,
    created_at: str = "2026-11-25T00:00:00+00:00",
    protocol: str = "official",
    weights: str = "shipped",
) -> dict[str, Any]:
    scenario = load_scenario("smoke")
    own = {c.id: list(c.tasks) for c in scenario.clients}
    models = {}
    for arch in scenario.architectures:  # the canonical zoo, as a run records it (drake/runner.py model_meta)
        zoo = shipped_info(arch)
        if weights != "shipped":
            zoo = {**zoo, "shipped": False, "zoo_version": None, "zoo_sha256": None, "member": None, "sha256": "1" * 64}
        models[arch] = {"path": arch, "weights_sha256": "0" * 64, "zoo": zoo}
    return make_record(
        command=f"python eval.py --method {method} --scenario smoke --seeds {' '.join(map(str, seeds))} --set lr={lr}",
        engine="sequential",
        method=method,
        method_config={"lr": lr, "local_steps": 2},
        scenario=scenario,
        data=DATA,
        per_seed=[seed_entry(s, own, quality=quality, relevance=relevance, ratio=ratio) for s in seeds],
        tasks=task_meta(built, [*scenario.tasks, *scenario.unseen]),
        env=ENV,
        created_at=created_at,
        models=models,
        protocol=PROTOCOLS.get(protocol).record(scenario),
    )


def write(path: Path, record: Any) -> Path:
    path.write_text(json.dumps(record, indent=2))  # NaN/inf are written as the NaN/Infinity tokens
    return path


def rejected(path: Path, board: Path, **kw: Any) -> SubmissionRejected:
    before = sorted(p.name for p in results_dir(board).glob("*")) if results_dir(board).is_dir() else []
    with pytest.raises(SubmissionRejected) as info:
        submit(path, board, **kw)
    after = sorted(p.name for p in results_dir(board).glob("*")) if results_dir(board).is_dir() else []
    assert after == before, "a rejected submit must not touch the store"
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    return info.value


# ------------------------------------------------------------------------------------------- accepting


def test_valid_record_is_accepted_once_byte_exact_and_data_checked(built: Path, tmp_path: Path) -> None:
    record = make(built)
    src = write(tmp_path / "run.json", record)
    accepted = submit(src, tmp_path / "board", data_dir=built)
    assert accepted.path == results_dir(tmp_path / "board") / result_filename(record)
    assert accepted.manifest_dir == built
    assert accepted.path.read_text() == json.dumps(record, indent=2, sort_keys=True) + "\n"
    assert load_result(accepted.path) == record  # schema + recomputed summary
    assert [p.name for p in accepted_files(tmp_path / "board")] == [accepted.path.name]
    assert not list(results_dir(tmp_path / "board").glob(".*"))  # no temp file, no lock file left


def test_default_build_of_the_runs_settings_is_found(
    built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from drake.data.build import default_data_dir

    home = tmp_path / "home"
    monkeypatch.setenv("DRAKE_HOME", str(home))
    shutil.copytree(built, default_data_dir(0.1, 32, 0))
    accepted = submit(write(tmp_path / "r.json", make(built)), tmp_path / "board")
    assert accepted.manifest_dir == default_data_dir(0.1, 32, 0)


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(r: dict[str, Any]) -> None:
        node = r
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


def _bump_summary(r: dict[str, Any]) -> None:
    r["results"]["summary"]["self"]["a_last"]["mean"] += 0.01


def _edit_score_keep_summary(r: dict[str, Any]) -> None:
    r["results"]["per_seed"][0]["rounds"][1]["eval"]["0"]["vsr_0"] = 1.0


def _drop_task_meta(r: dict[str, Any]) -> None:
    del r["meta_info"]["tasks"]["vsr_0"]


def _unknown_task_meta(r: dict[str, Any]) -> None:
    r["meta_info"]["tasks"]["no_such_task"] = dict(r["meta_info"]["tasks"]["vsr_0"])


def _wrong_file_hash(r: dict[str, Any]) -> None:
    r["meta_info"]["tasks"]["vizwiz_0"]["data_sha256"]["vizwiz_0/test-00000-of-00001.parquet"] = "a" * 64


def _unbuilt_file(r: dict[str, Any]) -> None:
    r["meta_info"]["tasks"]["vsr_0"]["data_sha256"]["vsr_0/extra-00000-of-00001.parquet"] = "b" * 64


def _other_data_settings(r: dict[str, Any]) -> None:
    # a run on a different build: the recipe changes too, so recompute the hash like eval.py would
    from drake.results import config_hash

    info = r["run_info"]
    info["data"]["image_size"] = 64
    info["config_hash"] = config_hash(info["method"]["config"], info["scenario"]["fingerprint"], info["data"])


REJECTIONS = [
    ("schema_version", _set(("schema_version",), "0.9"), "schema_version '0.9' is not supported"),
    ("non_finite", _set(("results", "per_seed", 0, "rounds", 0, "eval", "1", "irfl_3"), math.nan),
     "results.per_seed[0].rounds[0].eval.1.irfl_3: nan is not allowed"),
    ("non_finite", _set(("results", "summary", "others", "a_auc", "std"), math.inf), "results.summary.others.a_auc.std: inf is not allowed"),
    ("out_of_range", _set(("results", "per_seed", 1, "rounds", 1, "eval", "2", "wcvqa_0"), 1.5),
     "results.per_seed[1].rounds[1].eval.2.wcvqa_0: 1.5 is greater than the maximum of 1"),
    ("out_of_range", _set(("results", "per_seed", 0, "comm_bytes", "total_up"), -5), "total_up: -5 is less than the minimum"),
    ("out_of_range", _set(("results", "per_seed", 0, "extra", "compute_ratio_to_local"), 0), "compute_ratio_to_local 0"),
    ("schema", _set(("run_info", "command"), None), "run_info.command: None is not of type 'string'"),
    ("tampered", _bump_summary, "results.summary.self.a_last.mean = "),
    ("tampered", _edit_score_keep_summary, "but the per-seed data give"),
    ("tampered", _set(("results", "per_seed", 1, "final", "0", "own", "vsr_0", "score"), 1.0),
     "results.per_seed[1].final.0.own.vsr_0.score = 1 but the last evaluated round gives 0."),
    ("tampered", _set(("run_info", "method", "config", "lr"), 0.1), "run_info.config_hash"),
    ("tampered", _set(("run_info", "scenario", "spec", "rounds"), 3), "scenario.fingerprint: does not match"),
    ("inconsistent", _set(("run_info", "seeds"), [0, 1, 3]), "do not match run_info.seeds"),
    ("fingerprint", _set(("meta_info", "tasks", "iconqa_2", "fingerprint"), "f" * 64), "task 'iconqa_2': fingerprint ffffffffffff"),
    ("fingerprint", _drop_task_meta, "task 'vsr_0': the scenario uses it but meta_info.tasks has no fingerprint"),
    ("fingerprint", _unknown_task_meta, "task 'no_such_task': not in"),
    ("data_hash", _wrong_file_hash, "task 'vizwiz_0', file vizwiz_0/test-00000-of-00001.parquet: sha256 aaaaaaaaaaaa"),
    ("data_hash", _unbuilt_file, "task 'vsr_0', file vsr_0/extra-00000-of-00001.parquet: not in the build manifest"),
    ("data_hash", _set(("meta_info", "tasks", "dreamsim_0", "data_sha256"), None), "task 'dreamsim_0': no data sha256"),
    ("data_hash", _other_data_settings, "other data settings than the run (image_size=64 vs 32)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "edit", "needle"), REJECTIONS, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(REJECTIONS)]
)
def test_each_rejection_class_has_a_one_line_reason(
    built: Path, tmp_path: Path, kind: str, edit: Callable[[dict[str, Any]], None], needle: str
) -> None:
    record = make(built)
    edit(record)
    exc = rejected(write(tmp_path / "bad.json", record), tmp_path / "board", data_dir=built)
    first = exc.rejections[0]
    assert (first.kind, needle in first.message) == (kind, True), str(exc)
    assert f"[{kind}] " in str(exc)


def test_unreadable_files(built: Path, tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text('{"schema_version": "1.0",')
    assert "invalid JSON" in str(rejected(tmp_path / "broken.json", tmp_path / "board"))
    (tmp_path / "list.json").write_text("[1, 2]")
    assert rejected(tmp_path / "list.json", tmp_path / "board").rejections[0].kind == "unreadable"
    assert "file not found" in str(rejected(tmp_path / "missing.json", tmp_path / "board"))
    # a JSON object far from a record is a schema rejection (one line), for submit and --check alike
    (tmp_path / "bare.json").write_text('{"schema_version": "1.0", "run_info": {"seeds": 3}}')
    assert rejected(tmp_path / "bare.json", tmp_path / "board").rejections[0].kind == "schema"
    with pytest.raises(SubmissionRejected, match=r"\[schema\]"):
        verify(tmp_path / "bare.json", tmp_path / "board")


def test_one_digest_per_task_is_the_fingerprint_of_its_files(built: Path, tmp_path: Path) -> None:
    from drake.spec import fingerprint

    record = make(built)
    files = record["meta_info"]["tasks"]["vsr_0"]["data_sha256"]
    record["meta_info"]["tasks"]["vsr_0"]["data_sha256"] = fingerprint(files)
    assert check_record(record, manifest_dir=built) == []
    record["meta_info"]["tasks"]["vsr_0"]["data_sha256"] = "c" * 64
    (problem,) = check_record(record, manifest_dir=built)
    assert problem.kind == "data_hash" and "task 'vsr_0': data sha256 cccccccccccc" in problem.message


def test_seeds_minimum_and_unofficial_entries(built: Path, tmp_path: Path) -> None:
    path = write(tmp_path / "two.json", make(built, seeds=(0, 1)))
    exc = rejected(path, tmp_path / "board")
    assert (
        exc.rejections[0].kind == "seeds"
        and "2 successful seed(s) [0, 1]" in str(exc)
        and "at least 3" in str(exc)
    )
    assert submit(path, tmp_path / "board", min_seeds=2).path.is_file()  # a board may lower the bar
    failed = make(built, method="local", seeds=(0, 1, 2))
    failed["results"]["per_seed"][2].update(status="failed", error="RuntimeError: boom", final={}, rounds=[])
    failed["results"]["summary"] = recompute_summary(failed)
    exc = rejected(write(tmp_path / "failed.json", failed), tmp_path / "board")
    assert "(seeds [2] failed)" in str(exc)
    assert submit(tmp_path / "failed.json", tmp_path / "board", unofficial=True).path.is_file()


def test_tasks_yaml_change_rejects_old_runs(built: Path, tmp_path: Path) -> None:
    import yaml

    doc = yaml.safe_load((REPO_ROOT / "tasks.yaml").read_text())
    (entry,) = [t for t in doc["tasks"] if t["name"] == "vsr_0"]
    entry["version"] = entry.get("version", 1) + 1
    (tmp_path / "tasks.yaml").write_text(yaml.safe_dump(doc))
    tasks = load_tasks(tmp_path / "tasks.yaml")
    exc = rejected(write(tmp_path / "r.json", make(built)), tmp_path / "board", tasks=tasks)
    assert (
        [r.kind for r in exc.rejections] == ["fingerprint"]
        and "'vsr_0'" in str(exc)
        and "re-run it" in str(exc)
    )


def test_duplicates_and_second_seed_sets(built: Path, tmp_path: Path) -> None:
    board = tmp_path / "board"
    first = submit(write(tmp_path / "a.json", make(built)), board).path
    exc = rejected(tmp_path / "a.json", board)
    assert exc.rejections[0].kind == "duplicate" and first.name in str(exc) and "seeds [0, 1, 2]" in str(exc)
    exc = rejected(write(tmp_path / "b.json", make(built, seeds=(2, 3, 4))), board)  # seed 2 again
    assert exc.rejections[0].kind == "duplicate" and "seeds [2]" in str(exc)
    second = submit(write(tmp_path / "c.json", make(built, seeds=(3, 4, 5))), board).path
    assert second.name == first.name.removesuffix(".json") + "--seeds-3-4-5.json"
    # another method with the very same config (so the same config_hash) is not a duplicate
    other = make(built, method="local")
    assert other["run_info"]["config_hash"] == make(built)["run_info"]["config_hash"]
    assert submit(write(tmp_path / "d.json", other), board).path.name.startswith("local--smoke-hetero--")
    assert first.read_text() == json.dumps(make(built), indent=2, sort_keys=True) + "\n"  # never edited


def test_check_verifies_and_compares_with_the_recipe_on_the_board(
    built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`drake submit --check` stores nothing; a rerun of an accepted recipe is compared with it seed by seed."""
    board = tmp_path / "board"
    accepted = submit(write(tmp_path / "a.json", make(built)), board, data_dir=built).path
    store = sorted(results_dir(board).iterdir())
    on_board = verify(accepted, board, data_dir=built)
    assert (on_board.name, on_board.on_board, on_board.differences) == (accepted.name, True, [])
    rerun = make(built, created_at="2026-12-07T00:00:00+00:00")  # same recipe, another day and folder
    rerun["run_info"]["command"] += " --out elsewhere/"
    rerun["results"]["per_seed"][0]["wall_seconds"] = 99.0
    same = verify(write(tmp_path / "rerun.json", rerun), board, data_dir=built)
    assert (same.name, same.on_board, same.differences) == (accepted.name, False, [])
    rerun["results"]["per_seed"][2]["rounds"][0]["train"]["1"]["loss"] = 0.25
    differs = verify(write(tmp_path / "differs.json", rerun), board, data_dir=built)
    assert differs.differences == ["seed 2: rounds.0.train.1.loss 0.25 vs 1.0"]
    new = verify(write(tmp_path / "new.json", make(built, lr=0.01)), board, data_dir=built)
    assert (new.on_board, new.differences) == (False, None) and new.name == result_filename(make(built, lr=0.01))
    with pytest.raises(SubmissionRejected, match=r"\[tampered\]"):
        bad = make(built, lr=0.01)
        _bump_summary(bad)
        verify(write(tmp_path / "bad.json", bad), board, data_dir=built)
    assert sorted(results_dir(board).iterdir()) == store, "--check must not store anything"
    cli = ["submit", "--check", "--board", str(board), "--data-dir", str(built)]
    assert drake_main([*cli, str(tmp_path / "rerun.json"), str(tmp_path / "differs.json")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"valid: {tmp_path / 'rerun.json'} reproduces {accepted.name}: every score")
    assert out[1] == (f"valid, but {tmp_path / 'differs.json'} does NOT reproduce {accepted.name} (1 number differs: "
                      "seed 2: rounds.0.train.1.loss 0.25 vs 1.0)")
    assert sorted(results_dir(board).iterdir()) == store


def test_reproduce_lines_name_the_commit_and_a_command_to_rerun(built: Path, tmp_path: Path) -> None:
    """The page shows each entry's commit (and whether its code had uncommitted changes) and its command
    into runs/ without --resume; the CSV keeps the exact stored command."""
    board = tmp_path / "board"
    record = make(built)
    record["run_info"]["command"] = "python eval.py --method fedavg --scenario smoke --out '/tmp/wt/runs/my study' --resume"
    record["run_info"]["git_dirty"] = True
    submit(write(tmp_path / "a.json", record), board, data_dir=built)
    build(board, tmp_path / "site")
    md = (tmp_path / "site" / "leaderboard.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("- #1 **fedavg**"))
    assert line.endswith(f"commit {'0' * 10} + uncommitted changes): `python eval.py --method fedavg --scenario smoke --out runs/`")
    item = (tmp_path / "site" / "index.html").read_text().split("Reproduce an entry")[1].split("</summary>")[1]
    assert "--out runs/</code></li>" in item and "--resume" not in item and "uncommitted changes" in item
    rows = list(csv.DictReader(io.StringIO((tmp_path / "site" / "leaderboard.csv").read_text())))
    assert (rows[0]["command"], rows[0]["git_dirty"]) == (record["run_info"]["command"], "true")


def test_all_problems_are_listed_structural_ones_stop_the_check(built: Path) -> None:
    record = make(built, seeds=(0,))
    _bump_summary(record)
    _wrong_file_hash(record)
    kinds = [r.kind for r in check_record(record, manifest_dir=built)]
    assert kinds == ["tampered", "seeds", "data_hash"]
    record["schema_version"] = "2.0"
    assert [r.kind for r in check_record(record, manifest_dir=built)] == ["schema_version"]


# ------------------------------------------------------------------------------------------ crash safety


def test_interrupted_submit_leaves_a_valid_store(
    built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import leaderboard.submit as sub

    board = tmp_path / "board"
    submit(write(tmp_path / "a.json", make(built)), board)
    before = {p.name: p.read_bytes() for p in accepted_files(board)}

    def interrupted(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(sub.os, "link", interrupted)
    with pytest.raises(KeyboardInterrupt):
        submit(write(tmp_path / "b.json", make(built, method="local")), board)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in accepted_files(board)} == before
    assert sorted(p.name for p in results_dir(board).iterdir()) == sorted(before)
    assert submit(tmp_path / "b.json", board).path.is_file()


def test_killed_submit_leaves_only_an_ignored_temp_file(built: Path, tmp_path: Path) -> None:
    """SIGKILL at the worst moment (temp file written and fsynced, not yet linked): no partial accepted file."""
    board = tmp_path / "board"
    src = write(tmp_path / "a.json", make(built))
    script = (
        "import os, sys, signal\n"
        "import leaderboard.submit as sub\n"
        "sub.os.link = lambda a, b: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"sub.submit({str(src)!r}, {str(board)!r})\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=REPO_ROOT, capture_output=True, timeout=120
    )
    assert done.returncode == -9, done.stderr.decode()[-500:]
    leftovers = list(results_dir(board).iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".") and leftovers[0].name.endswith(".tmp")
    assert accepted_files(board) == []
    build(board, tmp_path / "site")  # the store is valid: it builds (empty)
    accepted = submit(src, board)
    assert [p.name for p in results_dir(board).iterdir()] == [
        accepted.path.name
    ]  # the stale temp file is gone


def test_edited_accepted_file_stops_the_build(built: Path, tmp_path: Path) -> None:
    board = tmp_path / "board"
    path = submit(write(tmp_path / "a.json", make(built)), board).path
    record = json.loads(path.read_text())
    record["results"]["summary"]["others"]["a_last"]["mean"] = 0.99
    path.write_text(json.dumps(record))
    with pytest.raises(
        DataError, match=r"\[tampered\] results.summary.others.a_last.mean = 0.99.*never be edited"
    ):
        build(board, tmp_path / "site")


# ----------------------------------------------------------------------------------------------- build


@pytest.fixture(scope="module")
def board(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four accepted entries on smoke: three official (one with relevance and a compute ratio), one not."""
    board, src = tmp_path_factory.mktemp("board"), tmp_path_factory.mktemp("src")
    records = [
        make(built, "fedavg", quality=1.0, ratio=1.5, created_at="2026-11-20T10:00:00+00:00"),
        make(built, "local", quality=0.8, created_at="2026-11-21T10:00:00+00:00"),
        make(
            built, "fedmosaic", quality=1.2, relevance=True, ratio=1.1, created_at="2026-11-22T10:00:00+00:00"
        ),
        make(built, "ditto", seeds=(0, 1), quality=0.9, created_at="2026-11-23T10:00:00+00:00"),
    ]
    for i, record in enumerate(records):
        submit(write(src / f"{i}.json", record), board, unofficial=record["run_info"]["seeds"] == [0, 1])
    return board


def _read_outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_build_is_deterministic_and_path_independent(board: Path, tmp_path: Path) -> None:
    first = build(board, tmp_path / "one")
    copy_of_board = tmp_path / "elsewhere" / "board"
    shutil.copytree(board, copy_of_board)
    build(copy_of_board, tmp_path / "two")
    a, b = _read_outputs(tmp_path / "one"), _read_outputs(tmp_path / "two")
    assert a == b
    assert sorted(a) == sorted(str(p.relative_to(tmp_path / "one")) for p in first)
    assert {"leaderboard.md", "leaderboard.csv", "leaderboard.json", "index.html"} <= set(a)
    assert sum(name.endswith(".png") for name in a) == 4  # scatter, curves, cost, one relevance heatmap
    for blob in a.values():
        assert str(tmp_path).encode() not in blob and str(board).encode() not in blob


def test_build_numbers_are_recomputed_and_ranked(board: Path, tmp_path: Path) -> None:
    build(board, tmp_path / "site")
    rows = list(csv.DictReader(io.StringIO((tmp_path / "site" / "leaderboard.csv").read_text())))
    assert [r["method"] for r in rows] == ["fedmosaic", "fedavg", "ditto", "local"]  # by Self A_last
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4"]
    assert [r["official"] for r in rows] == ["true", "true", "false", "true"]
    for row in rows:
        record = json.loads((results_dir(board) / row["file"]).read_text())
        summary = recompute_summary(record)
        for target in ("self", "others"):
            for stat in ("a_last", "a_auc"):
                assert float(row[f"{target}_{stat}_mean"]) == summary[target][stat]["mean"]
                assert float(row[f"{target}_{stat}_std"]) == summary[target][stat]["std"]
        assert row["command"] == record["run_info"]["command"]
    fedavg = rows[1]
    assert (
        fedavg["comm_up_bytes"] == "2000" and fedavg["comm_down_bytes"] == "2000"
    )  # mean of 1000, 2000, 3000
    assert float(fedavg["compute_ratio_to_local"]) == pytest.approx(1.6)  # mean of 1.5, 1.6, 1.7
    assert rows[3]["compute_ratio_to_local"] == ""
    md = (tmp_path / "site" / "leaderboard.md").read_text()
    assert "## smoke (pool hetero, scenario" in md and "newest run: 2026-11-23T10:00:00+00:00" in md
    assert "| 2 | fedavg | tiny-llama-s, tiny-llama-m |" in md and "3.91 KiB | 1.60x | 3 | yes |" in md
    assert "| 3 (+0) |" not in md and "| 2 | no |" in md  # ditto: two seeds, unofficial
    assert "`python eval.py --method local --scenario smoke --seeds 0 1 2 --set lr=0.001`" in md
    doc = json.loads((tmp_path / "site" / "leaderboard.json").read_text())
    (group,) = doc["scenarios"]
    assert group["plots"]["relevance"][0]["method"] == "fedmosaic"
    assert [e["method"] for e in group["entries"]] == [r["method"] for r in rows]


def test_mean_relevance_averages_seeds(board: Path) -> None:
    (name,) = [p for p in accepted_files(board) if p.name.startswith("fedmosaic")]
    rnd, clients, matrix, n = mean_relevance(json.loads(name.read_text()))  # type: ignore[misc]
    assert (rnd, clients, n) == (2, [0, 1, 2], 3)
    assert matrix[0][1] == pytest.approx(0.1)  # seeds give 0.0, 0.1, 0.2


def test_empty_store_and_stale_plots(board: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    build(board, out)
    assert len(list((out / "plots").glob("*.png"))) == 4
    build(tmp_path / "empty-board", out)
    assert list((out / "plots").glob("*.png")) == []  # a plot of a removed entry does not linger
    assert "No accepted results yet" in (out / "leaderboard.md").read_text()
    assert "No accepted results yet" in (out / "index.html").read_text()


def test_plots_beside_the_table_in_percent(board: Path, tmp_path: Path) -> None:
    """Every table has its scatter, learning curves, cost plot (and FedMosaic's heatmap) in the Markdown and
    the HTML, each captioned; the HTML sorts on the numbers it prints (percent, not fractions)."""
    import re

    out = tmp_path / "site"
    build(board, out)
    doc = json.loads((out / "leaderboard.json").read_text())
    (group,) = doc["scenarios"]
    plots = [group["plots"][k] for k in ("scatter", "curves", "cost")] + [r["plot"] for r in group["plots"]["relevance"]]
    assert all((out / p).is_file() for p in plots) and len(set(plots)) == 4
    md, page = (out / "leaderboard.md").read_text(), (out / "index.html").read_text()
    for p in plots:
        assert md.count(f"]({p})") == 1 and page.count(f'src="{p}"') == 1
    assert "MiB communicated per seed" in md and "relative to Local" in md and "next task" in md
    cells = re.findall(r'<td class=num data-v="([^"]*)">([^<]*)</td>', page)
    stats = [(v, text) for v, text in cells if " ± " in text]
    assert len(stats) >= 4 * 4
    for v, text in stats:  # the sort value is the printed mean, unrounded
        assert f"{float(v):.1f}" == text.split(" ± ")[0]


# ------------------------------------------------------------------------------------------------- CLI


def test_cli_submit_and_build(built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from leaderboard.__main__ import main as lb_main

    board = tmp_path / "board"
    good = write(tmp_path / "good.json", make(built))
    bad = make(built, method="local")
    _bump_summary(bad)
    bad_path = write(tmp_path / "bad.json", bad)
    code = drake_main(["submit", str(good), str(bad_path), "--board", str(board), "--data-dir", str(built)])
    out, err = capsys.readouterr()
    assert code == 2
    assert f"accepted {good} -> {results_dir(board) / result_filename(make(built))}" in out
    assert f"data sha256 checked against {built}" in out
    assert err.count("\n") == 1 and err.startswith(f"error: rejected {bad_path}: [tampered] ")
    assert lb_main(["submit", str(good), "--board", str(board)]) == 2
    assert "[duplicate]" in capsys.readouterr().err
    assert lb_main(["build", "--board", str(board), "--out", str(tmp_path / "site")]) == 0
    assert "wrote 4 pages and 3 plots" in capsys.readouterr().out  # scatter, curves, cost
    assert drake_main(["leaderboard", "build", "--board", str(board), "--out", str(tmp_path / "site2")]) == 0
    assert (tmp_path / "site2" / "index.html").read_bytes() == (tmp_path / "site" / "index.html").read_bytes()
    assert lb_main(["bogus"]) == 2


# --------------------------------------------------------------------------------------------- browser


@pytest.fixture(scope="module")
def chromium() -> str:
    from tests.browser import find_chromium

    path, why = find_chromium()
    if path is None:
        pytest.skip(f"no headless browser for the HTML test: {why}")
    return path


def test_html_page_in_a_real_browser(board: Path, tmp_path: Path, chromium: str) -> None:
    from tests.browser import Browser

    out = tmp_path / "site"
    build(board, out)
    with Browser(chromium) as page:
        page.goto((out / "index.html").as_uri())
        assert page.problems() == []
        requests = page.requests()
        assert requests and all(u.startswith(out.as_uri() + "/") for u in requests), (
            requests
        )  # nothing leaves
        assert len(requests) == 1 + 4  # the page and its four plots
        images = page.eval(
            "Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth,"
            " i.naturalHeight, i.getBoundingClientRect().width, i.closest('figure').querySelector('figcaption')"
            ".textContent])"
        )
        assert [src.rsplit("--", 1)[-1] for src, *_ in images] == ["scatter.png", "curves.png", "cost.png",
                                                                   "relevance.png"]  # fmt: skip
        for src, complete, width, height, shown, caption in images:  # every plot loads, is drawn and labelled
            assert complete and width >= 400 and height >= 300 and 0 < shown <= 1280, src
            assert len(caption) > 40, src
        assert "relevance heatmap" in images[3][5] and "fedmosaic" in images[3][5]

        def column(n: int) -> list[str]:
            return page.eval(
                f"Array.from(document.querySelectorAll('table.lb tbody tr')).map(r => r.cells[{n}].textContent)"
            )

        assert column(1) == ["fedmosaic", "fedavg", "ditto", "local"]
        page.click("th[data-key=method]")  # text: ascending first
        assert column(1) == ["ditto", "fedavg", "fedmosaic", "local"]
        assert (
            page.eval("document.querySelector('th[data-key=method]').getAttribute('aria-sort')")
            == "ascending"
        )
        page.click("th[data-key=method]")
        assert column(1) == ["local", "fedmosaic", "fedavg", "ditto"]
        page.click("th[data-key=Others-A_AUC]")  # numbers: highest first
        values = [float(v.split(" ± ")[0]) for v in column(6)]
        assert values == sorted(values, reverse=True) and column(1)[0] == "fedmosaic"
        page.click("th[data-key=compute-vs-local]")  # "-" (no ratio) sorts last either way
        assert column(8)[-2:] == ["-", "-"]
        page.click("th[data-key=compute-vs-local]")
        assert column(8) == ["1.20x", "1.60x", "-", "-"]  # ascending now; "-" still last
        page.click("th[data-key=rank]")
        assert column(0) == ["4", "3", "2", "1"]
        assert page.problems() == []
        shot = page.screenshot(tmp_path / "leaderboard.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    keep = os.environ.get("DRAKE_TEST_ARTIFACTS")
    if keep:  # e.g. DRAKE_TEST_ARTIFACTS=/tmp/shots to look at the page
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "leaderboard.png")


def test_a_page_with_an_outside_request_would_fail(board: Path, tmp_path: Path, chromium: str) -> None:
    """The browser check is not vacuous: an injected outside image is seen (and blocked by the page's CSP)."""
    from tests.browser import Browser

    out = tmp_path / "site"
    build(board, out)
    page_html = (
        (out / "index.html").read_text().replace("<h1>", '<img src="http://example.invalid/x.png"><h1>', 1)
    )
    (out / "index.html").write_text(page_html)
    with Browser(chromium) as page:
        page.goto((out / "index.html").as_uri())
        assert "http://example.invalid/x.png" in page.requests()
        assert any("Content Security Policy" in p for p in page.problems())


def test_copy_of_record_helpers_is_not_shared(built: Path) -> None:
    a = make(built)
    b = copy.deepcopy(a)
    _bump_summary(b)
    assert a != b and check_record(a, manifest_dir=built) == []


# ------------------------------------------------------------------------------- crafted names (security)


def reseal(record: dict[str, Any]) -> dict[str, Any]:
    """What an attacker would do after editing a name: recompute every digest the checks recompute."""
    from drake.results import config_hash
    from drake.spec import fingerprint

    info, scen = record["run_info"], record["run_info"]["scenario"]
    for key in ("name", "pool"):
        if key in scen["spec"]:
            scen["spec"][key] = scen[key]
    scen["fingerprint"] = fingerprint(scen["spec"])
    info["config_hash"] = config_hash(info["method"]["config"], scen["fingerprint"], info["data"])
    record["results"]["summary"] = recompute_summary(record)
    return record


def _set_name(field: str, value: str) -> Callable[[dict[str, Any]], None]:
    def edit(r: dict[str, Any]) -> None:
        info = r["run_info"]
        if field == "method":
            info["method"]["name"] = value
        elif field == "model":
            info["scenario"]["spec"]["clients"][1]["model"] = value
        else:
            info["scenario"][field] = value

    return edit


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a sha256 of each file's bytes ("dir" for a folder, the target of a link)."""
    import hashlib

    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = ("link:" + os.readlink(p) if p.is_symlink() else "dir" if p.is_dir()
                    else hashlib.sha256(p.read_bytes()).hexdigest())  # fmt: skip
    return out


HOSTILE = {
    "traversal": "../../../../escaped",
    "absolute": "/tmp/drake-escaped",
    "separator": "a/b",
    "backslash": "a\\b",
    "dots": "..",
    "markup": "</script><script>alert(1)</script>",
    "newline": "smoke\n",
    "long": "a" * 65,
}
# a client's model is shown by name: a local path is fine (its folder name is shown), a hub id has one '/'
MODEL_HOSTILE = {
    "markup": "<img src=x onerror=alert(1)>",
    "markup-folder": "/models/<b>x</b>",
    "traversal": "org/../../x",
    "separator": "org/a/b",
}
CASES = [(f, k, v) for f in ("method", "name", "pool") for k, v in HOSTILE.items()]
CASES += [("model", k, v) for k, v in MODEL_HOSTILE.items()]


@pytest.fixture
def live_board(built: Path, tmp_path: Path) -> Path:
    """A board with one accepted result and a built site, inside ``tmp_path/world`` (which a write through
    ``..`` or an absolute path inside it would change)."""
    board = tmp_path / "world" / "board"
    submit(write(tmp_path / "first.json", make(built)), board)
    build(board)
    return board


@pytest.mark.parametrize(("field", "kind", "value"), CASES, ids=[f"{f}-{k}" for f, k, _ in CASES])
def test_a_hostile_name_is_refused_and_nothing_is_written(
    built: Path, tmp_path: Path, live_board: Path, field: str, kind: str, value: str
) -> None:
    record = make(built, method="local")
    _set_name(field, value)(record)
    src = write(tmp_path / "hostile.json", reseal(record))
    before = snapshot(tmp_path / "world")
    with pytest.raises(SubmissionRejected) as info:
        submit(src, live_board)
    assert snapshot(tmp_path / "world") == before, "a refused submit changed the board"
    assert not Path("/tmp/drake-escaped").exists() and not (tmp_path / "escaped").exists()
    first = info.value.rejections[0]
    assert first.kind == "unsafe_name" and "is not a plain name" in first.message, str(info.value)
    assert "\n" not in str(info.value)
    where = {"method": "run_info.method.name", "model": "run_info.scenario.spec.clients[1].model"}
    assert where.get(field, f"run_info.scenario.{field}") in first.message
    # the same record, hand-placed in the store under a plain name, stops the build naming the file
    planted = results_dir(live_board) / "local--planted.json"
    planted.write_text(json.dumps(record))
    with pytest.raises(DataError, match=r"local--planted\.json: \[unsafe_name\]"):
        build(live_board, tmp_path / "site")
    assert not (tmp_path / "site").exists()


def test_the_unattacked_record_is_accepted(built: Path, tmp_path: Path, live_board: Path) -> None:
    """The hostile cases above differ from this one only in the name: the refusal is the name's doing."""
    record = reseal(make(built, method="local"))
    record["run_info"]["scenario"]["spec"]["clients"][1]["model"] = (
        "/models/tiny-llama-m"  # a local path: fine
    )
    assert submit(write(tmp_path / "ok.json", reseal(record)), live_board).path.parent == results_dir(
        live_board
    )
    build(live_board, tmp_path / "site")
    assert "| local | tiny-llama-s, tiny-llama-m |" in (tmp_path / "site" / "leaderboard.md").read_text()


def test_the_store_path_is_checked_before_writing(tmp_path: Path) -> None:
    from leaderboard.submit import store_path

    store = tmp_path / "results"
    store.mkdir()
    assert (
        store_path(store, "fedavg--smoke-hetero--0123abcd.json")
        == store / "fedavg--smoke-hetero--0123abcd.json"
    )
    (tmp_path / "outside").mkdir()
    (store / "link.json").symlink_to(tmp_path / "outside" / "x.json")
    for name in ("../x.json", "/tmp/x.json", "a/b.json", "..json", "link.json", "x.txt", "a" * 300 + ".json"):
        with pytest.raises(DataError, match="not a plain file name inside"):
            store_path(store, name)


def test_cli_submit_refuses_a_traversal_in_one_line(
    built: Path, tmp_path: Path, live_board: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = make(built, method="local")
    _set_name("name", "../../../../../../tmp/x")(record)
    src = write(tmp_path / "x.json", reseal(record))
    before = snapshot(tmp_path / "world")
    assert drake_main(["submit", str(src), "--board", str(live_board)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        f"error: rejected {src}: [unsafe_name] run_info.scenario.name"
    )
    assert snapshot(tmp_path / "world") == before


def _planted_in_subfolder(store: Path) -> None:
    """Where a scenario named ``</script>`` used to land: ``fedavg--<`` / ``script>-hetero--<hash>.json``."""
    (store / "fedavg--<").mkdir()
    (store / "fedavg--<" / "script>-hetero--0123abcd.json").write_text("{}")


@pytest.mark.parametrize("stray", ["folder", "markup-folder", "text", "link", "renamed", "odd-temp"])
def test_build_refuses_a_file_it_cannot_attribute(live_board: Path, tmp_path: Path, stray: str) -> None:
    store = results_dir(live_board)
    (accepted,) = accepted_files(live_board)
    made = {
        "folder": lambda: (store / "sub").mkdir(),
        "markup-folder": lambda: _planted_in_subfolder(store),
        "text": lambda: (store / "notes.txt").write_text("hi"),
        "link": lambda: (store / "other.json").symlink_to(accepted),
        "renamed": lambda: accepted.rename(store / "renamed.json"),  # a valid record under a foreign name
        "odd-temp": lambda: (store / ".x.tmp").write_text("{"),
    }
    made[stray]()
    (entry,) = set(store.iterdir()) - {accepted}
    with pytest.raises(DataError) as info:
        build(live_board, tmp_path / "site")
    message = str(info.value)
    assert message.startswith(f"{entry}: cannot be attributed") and "\n" not in message
    assert not (tmp_path / "site").exists()


def test_a_killed_submits_temp_file_and_gitkeep_are_not_strays(live_board: Path, tmp_path: Path) -> None:
    store = results_dir(live_board)
    (store / ".gitkeep").write_text("")
    (store / ".fedavg--smoke-hetero--0123abcd.json.k3j_x9.tmp").write_text(
        "{"
    )  # drake.io's temp-file pattern
    assert build(live_board, tmp_path / "site")


def test_free_text_is_escaped_in_the_page_and_markdown(built: Path, tmp_path: Path) -> None:
    """The stored command is free text: in HTML it is escaped, in Markdown it stays inside its code span."""
    board = tmp_path / "board"
    record = make(built)
    record["run_info"]["command"] = "python eval.py `--x` ``</code><script>alert(1)</script>"
    submit(write(tmp_path / "a.json", record), board)
    build(board, tmp_path / "site")
    page = (tmp_path / "site" / "index.html").read_text()
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<script>") == 1  # the page's own sorting script
    md = (tmp_path / "site" / "leaderboard.md").read_text()
    assert "``` python eval.py `--x` ``</code><script>alert(1)</script> ```" in md


# ---------------------------------------------------------------------------- protocol and canonical zoo


def test_a_record_without_a_protocol_is_refused(built: Path, tmp_path: Path) -> None:
    record = make(built)
    del record["run_info"]["protocol"]
    record["results"]["summary"] = recompute_summary(record)  # the scenario's eval_rounds then count
    exc = rejected(write(tmp_path / "old.json", record), tmp_path / "board")
    assert [r.kind for r in exc.rejections] == ["protocol"] and "rerun it" in str(exc)


def test_other_weights_are_refused_unless_unofficial_and_ranked_apart(built: Path, tmp_path: Path) -> None:
    board = tmp_path / "board"
    other = write(tmp_path / "other.json", make(built, method="fedprox", weights="retrained"))
    exc = rejected(other, board)
    assert [r.kind for r in exc.rejections] == ["zoo"] and "not the shipped weights of zoo" in str(exc)
    assert not (board / "results").exists() or not list((board / "results").glob("*.json"))
    submit(other, board, unofficial=True)
    submit(write(tmp_path / "fedavg.json", make(built)), board)
    submit(write(tmp_path / "legacy.json", make(built, method="ditto", protocol="server-global")), board)
    build(board, tmp_path / "site")
    doc = json.loads((tmp_path / "site" / "leaderboard.json").read_text())
    tables = [(g["protocol"], g["canonical_zoo"], [e["method"] for e in g["entries"]]) for g in doc["scenarios"]]
    assert tables == [("official", True, ["fedavg"]), ("server-global", True, ["ditto"]), ("official", False, ["fedprox"])]
    assert not doc["scenarios"][2]["entries"][0]["official"]
    md = (tmp_path / "site" / "leaderboard.md").read_text()
    assert "protocol server-global)" in md and "unofficial: not the canonical zoo's weights" in md


def test_a_zoo_member_without_provenance_is_not_canonical(built: Path) -> None:
    from leaderboard.submit import zoo_problems

    record = make(built)
    assert zoo_problems(record) == []
    del record["meta_info"]["models"]["tiny-llama-s"]["zoo"]
    assert zoo_problems(record) == ["tiny-llama-s: no zoo provenance recorded (a result from before the zoo shipped); rerun it"]
    record["meta_info"]["models"]["tiny-llama-m"]["zoo"]["zoo_version"] = "3.0"
    assert any("zoo 3.0, this board ranks zoo" in p for p in zoo_problems(record))


# ----------------------------------------------------------------------------------- README results


@pytest.mark.parametrize("doc", ["README.md", "docs/results.md"])
def test_the_readme_results_block_is_what_the_store_gives(doc: str) -> None:
    """The README's table is generated from leaderboard/results: any difference (a typed number, a result
    landed without rebuilding) fails here; fix with `drake leaderboard build --readme README.md docs/results.md`."""
    from drake.spec import REPO_ROOT
    from leaderboard.build import rank, verified_records
    from leaderboard.readme import BEGIN, END, results_block

    text = (REPO_ROOT / doc).read_text()
    block = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert block == results_block(rank(verified_records(REPO_ROOT / "leaderboard")))


def test_readme_sync_writes_percent_tables_of_the_official_protocol(built: Path, tmp_path: Path) -> None:
    from drake.errors import DataError
    from leaderboard.build import rank, verified_records
    from leaderboard.readme import BEGIN, END, replace_block, sync_readme

    board = tmp_path / "board"
    submit(write(tmp_path / "a.json", make(built)), board)
    submit(write(tmp_path / "b.json", make(built, method="ditto", protocol="server-global")), board)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{BEGIN}\nold\n{END}\n\nafter\n")
    groups = rank(verified_records(board))
    assert sync_readme(readme, groups) and not sync_readme(readme, groups)
    text = readme.read_text()
    assert text.startswith("# x\n\n") and text.endswith("\n\nafter\n") and "old" not in text
    fedavg = next(line for line in text.splitlines() if line.startswith("| fedavg |"))
    mean = recompute_summary(make(built))["self"]["a_last"]["mean"]
    assert f"| {100 * mean:.1f} ± " in fedavg and "ditto" not in text  # server-global is not in the README
    with pytest.raises(DataError, match="markers"):
        replace_block("no markers", "x")


def test_an_ablation_row_is_labelled_with_its_named_config() -> None:
    """Study ablations run as `--config fedmosaic-no-rela`: the board must not show them as `fedmosaic`."""
    from leaderboard.build import method_label

    run = "python eval.py --method fedmosaic --scenario drake-dynamic --config {} --seeds 0 1 2"
    assert method_label({"method": {"name": "fedmosaic"}, "command": run.format("fedmosaic-no-rela")}) == "fedmosaic+no-rela"
    assert method_label({"method": {"name": "fedmosaic"}, "command": run.format("my.yaml")}) == "fedmosaic"
    assert method_label({"method": {"name": "fedavg"}, "command": "python eval.py --method fedavg"}) == "fedavg"
