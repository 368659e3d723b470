"""The drake CLI: bad input gives exit code 2 and one `error:` line on stderr, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from drake.cli import main
from drake.data.synth.base import FAMILIES, IMAGE_TOKEN, Sample
from drake.spec import REPO_ROOT

os.environ.setdefault("HF_HUB_OFFLINE", "1")
FAMILY = "drake_test_cli"


def _family(ctx) -> Sample:
    img = Image.new("RGB", (ctx.image_size,) * 2, (ctx.rng.randrange(256), 0, 0))
    answer = ["yes", "no"][ctx.slot(2)]
    return Sample(
        [img] * ctx.n_images, IMAGE_TOKEN * ctx.n_images + f" red? {ctx.rng.random()}", answer, ["yes", "no"]
    )


if FAMILY not in FAMILIES:
    FAMILIES.register(FAMILY, _family)

TASKS = f"""\
schema_version: 1
tasks:
  - name: cli_a
    title: A
    images: 2
    answer: choice
    metric: choice_accuracy
    sources: {{synth: {{family: {FAMILY}}}}}
  - name: cli_b
    title: B
    images: 1
    answer: choice
    metric: choice_accuracy
    groups: [bees]
    sources: {{synth: {{family: {FAMILY}}}}}
"""
SCENARIO = """\
name: cli-smoke
description: one client
mode: dynamic
rounds: 2
pools:
  p: [tiny-llama-s]
clients:
  - {id: 0, tasks: [cli_a, cli_b]}
"""


@pytest.fixture()
def files(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("DRAKE_DEBUG", raising=False)
    (tmp_path / "tasks.yaml").write_text(TASKS)
    (tmp_path / "sc.yaml").write_text(SCENARIO)
    return tmp_path


def _one_error_line(capsys, rc: int, *needles: str) -> str:
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_list_tasks_prints_all_47(capsys):
    assert main(["list", "tasks"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].split()[:3] == ["name", "title", "images"]
    assert out[-1] == "47 tasks" and len(out) == 2 + 47 + 1
    assert any(line.startswith("nlvr2_0 ") for line in out)


def test_list_other_kinds(files, capsys):
    for what in ("methods", "scenarios", "families"):
        assert main(["list", what]) == 0
    out = capsys.readouterr().out
    assert "drake-dynamic" in out and "pair_statement" in out
    assert main(["list", "tasks", "--tasks-file", str(files / "tasks.yaml"), "--groups", "bees"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "1 tasks"


def test_unknown_task(files, capsys):
    rc = main(["build", "--tasks", "vsr_00", "--out", str(files / "out"), "--quiet"])
    _one_error_line(capsys, rc, "unknown task 'vsr_00'", "did you mean 'vsr_0'")


def test_bad_yaml_names_file_and_line(files, capsys):
    bad = files / "bad.yaml"
    bad.write_text("tasks:\n  - name: a\n    title: [oops\n")
    line = _one_error_line(capsys, main(["validate", "--tasks", str(bad)]), "invalid YAML")
    assert line.startswith(f"error: {bad}:")


def test_missing_dir_or_file(files, capsys):
    missing = files / "nope" / "tasks.yaml"
    _one_error_line(
        capsys, main(["build", "--tasks-file", str(missing), "--quiet"]), str(missing), "not found"
    )
    _one_error_line(capsys, main(["list", "tasks", "--tasks-file", str(missing)]), "not found")
    blocker = files / "a-file"
    blocker.write_text("x")
    rc = main(["build", "--tasks-file", str(files / "tasks.yaml"), "--out", str(blocker / "out"), "--quiet"])
    _one_error_line(capsys, rc, "cannot create the data directory")


def test_usage_errors_and_real_data_source(files, capsys):
    _one_error_line(capsys, main(["frobnicate"]), "invalid choice")
    _one_error_line(capsys, main([]), "choose a command")
    rc = main(["build", "--source", "drake", "--from", str(files), "--tasks", "nlvr2_0"])
    _one_error_line(capsys, rc, "NLVR2 not found", "huggingface-cli download SNUMPR/DRAKE NLVR2.tar")


def test_no_traceback_from_a_real_process(files):
    proc = subprocess.run(
        [sys.executable, "-m", "drake", "validate", "--tasks", str(files / "missing.yaml")],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {files / 'missing.yaml'}: file not found"]


def test_validate_reports_every_problem(files, capsys):
    good = ["validate", "--tasks", str(files / "tasks.yaml"), "--scenario", str(files / "sc.yaml")]
    assert main(good) == 0
    out = capsys.readouterr().out
    assert "tiny-llama-s x1" in out and "ok: 2 tasks" in out
    bad = files / "bad_tasks.yaml"
    bad.write_text(
        TASKS.replace(f"family: {FAMILY}", "family: drake_test_clj", 1).replace("choice_accuracy", "acc", 1)
    )
    (files / "bad_sc.yaml").write_text(SCENARIO.replace("tiny-llama-s]", "tiny-lama-s]"))
    assert main(["validate", "--tasks", str(bad), "--scenario", str(files / "bad_sc.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert any("unknown synth family 'drake_test_clj' (did you mean 'drake_test_cli'" in e for e in err)
    assert any("unknown metric 'acc'" in e for e in err)
    assert any("unknown model 'tiny-lama-s'" in e for e in err)
    assert err[-1].startswith("3 problem(s)")


def test_validate_imports_every_registered_method(files, capsys, monkeypatch):
    """A registered method whose module is missing is listed by `drake list methods` (the registry is lazy)
    but caught by `drake validate`."""
    from drake.method_registry import METHODS

    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))  # the registration below is undone
    METHODS.register("drake-test-missing", "baselines.drake_test_missing:Missing")
    argv = ["validate", "--tasks", str(files / "tasks.yaml"), "--scenario", str(files / "sc.yaml"), "--no-samples"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: method 'drake-test-missing': cannot import 'baselines.drake_test_missing:Missing'")
    assert err[-1].startswith("1 problem(s) in 2 tasks") and err[-1].endswith(f"{len(METHODS)} methods")


def test_build_command_prints_table(files, capsys):
    out_dir = files / "out"
    args = [
        "build",
        "--tasks-file",
        str(files / "tasks.yaml"),
        "--scenario",
        str(files / "sc.yaml"),
        "--out",
        str(out_dir),
        "--scale",
        "0.05",
        "--no-extras",
        "--quiet",
        "--workers",
        "1",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "cli_a" in out and "cli-smoke" in out and "3 built" in out
    assert (out_dir / "cli_a" / "train-00000-of-00001.parquet").is_file()
    assert (out_dir / "cli-smoke" / "client_0-00000-of-00001.parquet").is_file()
    assert main(args) == 0
    assert "0 built, 3 up to date" in capsys.readouterr().out
    assert Path(out_dir / "README.md").read_text().startswith("---\n")


# ------------------------------------------------------------------- unexpected (internal) errors


def _boom(*args, **kwargs):
    raise RuntimeError("boom:\nthe second line of a long message")


#: where the one-line message says the fault was raised: the innermost frame outside the standard library
#: and installed packages (pytest runs from the checkout, so the path is relative)
BOOM_AT = f"at tests/test_cli.py:{_boom.__code__.co_firstlineno + 1} in _boom"


def _run_entry(entry: str, extra: list[str]) -> int:
    """eval.py or `drake run`, both on fedsim/smoke (names checked, then ``run_from_args`` is called)."""
    import eval as eval_script

    argv = ["--method", "fedsim", "--scenario", "smoke", *extra]
    return eval_script.main(argv) if entry == "eval.py" else main(["run", *argv])


@pytest.mark.parametrize("entry", ["eval.py", "drake run"])
def test_an_unexpected_error_is_one_line_naming_it_and_the_phase(entry, monkeypatch, capsys):
    monkeypatch.delenv("DRAKE_DEBUG", raising=False)
    monkeypatch.setattr("drake.runner.run_from_args", _boom)
    rc = _run_entry(entry, [])
    out, err = capsys.readouterr()
    assert rc == 1, (out, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.strip() == (
        f"error: unexpected RuntimeError while running fedsim on smoke {BOOM_AT}: boom: the second line of a long "
        "message (rerun with --debug or DRAKE_DEBUG=1 for the traceback)"
    )


@pytest.mark.parametrize(
    ("entry", "extra", "env"),
    [
        ("eval.py", ["--debug"], None),
        ("drake run", ["--debug"], None),
        ("eval.py", [], "1"),
        ("drake run", [], "yes"),
    ],
)
def test_debug_flag_or_env_shows_the_traceback(entry, extra, env, monkeypatch, capsys):
    monkeypatch.delenv("DRAKE_DEBUG", raising=False)
    if env:
        monkeypatch.setenv("DRAKE_DEBUG", env)
    monkeypatch.setattr("drake.runner.run_from_args", _boom)
    rc = _run_entry(entry, extra)
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("Traceback (most recent call last):") and "in _boom" in err, err
    assert "RuntimeError: boom:" in err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith("error: unexpected RuntimeError while running fedsim on smoke")
    )


def test_debug_before_the_subcommand_and_debug_zero(monkeypatch, capsys):
    monkeypatch.setattr("drake.spec.load_tasks", _boom)
    monkeypatch.setenv("DRAKE_DEBUG", "0")  # 0 means off, not "set"
    assert main(["list", "tasks"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"error: unexpected RuntimeError in `drake list` {BOOM_AT}: boom: the second line of a long message "
        "(rerun with --debug or DRAKE_DEBUG=1 for the traceback)"
    ]
    for argv in (["--debug", "list", "tasks"], ["list", "tasks", "--debug"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "Traceback" in err and err.strip().splitlines()[-1].endswith("(traceback above)"), argv


def test_user_errors_and_ctrl_c_keep_their_one_line_and_exit_code(monkeypatch, capsys):
    from drake.errors import DataError

    monkeypatch.delenv("DRAKE_DEBUG", raising=False)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    def bad_data(*args, **kwargs):
        raise DataError("x.parquet: corrupted; rebuild with `drake build`")

    for fn, rc, line in ((interrupt, 130, "error: interrupted"),
                         (bad_data, 2, "error: x.parquet: corrupted; rebuild with `drake build`")):  # fmt: skip
        monkeypatch.setattr("drake.runner.run_from_args", fn)
        assert _run_entry("drake run", []) == rc
        assert capsys.readouterr().err.strip().splitlines() == [line]
        assert _run_entry("eval.py", ["--debug"]) == rc  # --debug adds the traceback, keeps the exit code
        err = capsys.readouterr().err
        assert "Traceback" in err and err.strip().splitlines()[-1] == line


def test_an_unexpected_error_in_a_real_process_is_one_line(tmp_path):
    """The real interpreter, parser and exit code: the fault is injected by a sitecustomize on PYTHONPATH."""
    (tmp_path / "sitecustomize.py").write_text(
        "import drake.runner\n"
        "def _boom(*a, **k):\n    raise ValueError('injected')\n"
        "drake.runner.run_from_args = _boom\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO_ROOT}"}
    env.pop("DRAKE_DEBUG", None)
    cmd = [sys.executable, "eval.py", "--method", "fedavg", "--scenario", "smoke"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: unexpected ValueError while running fedavg on smoke at {tmp_path / 'sitecustomize.py'}:3 in _boom: "
        "injected (rerun with --debug or DRAKE_DEBUG=1 for the traceback)"
    ]
    proc = subprocess.run(
        [*cmd, "--debug"], capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=120
    )
    assert proc.returncode == 1 and "Traceback (most recent call last)" in proc.stderr


def test_building_the_cli_imports_no_torch() -> None:
    """`drake --help` and `drake list` stay instant: no subcommand's parser imports torch (run options live
    in drake/run_options.py, not drake/runner.py)."""
    import subprocess
    import sys

    code = "import sys; from drake.cli import make_parser; make_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_usage_and_board_mistakes_are_one_line(tmp_path, capsys):
    """An unknown option names the subcommand's help and the closest option; a missing board or a file for
    --out is refused before anything is written."""
    cases = [
        (["run", "--scenaro", "smoke"],
         "error: unrecognized arguments: --scenaro smoke (did you mean '--scenario' or '--scale' or '--set'?) "
         "(see `drake run --help`)"),
        (["leaderboard", "build", "--board", str(tmp_path / "none")],
         f"error: --board {tmp_path / 'none'}: no results/ folder of accepted files there; give a leaderboard "
         "directory (`drake submit --board DIR` creates one)"),
        (["leaderboard", "build", "--min-seeds", "0"],
         "error: argument --min-seeds: expected 1 or more, got 0 (see `drake leaderboard build --help`)"),
        (["list", "tasks", "--groups", "qualty"], "error: unknown task group 'qualty' (did you mean 'quality'"),
        (["build", "--workers", "-3"], "error: argument --workers: expected 1 or more, got -3 (see `drake build --help`)"),
        (["audit", "--tolerance", "2"], "error: --tolerance 2.0: expected a fraction in [0, 1)"),
        (["study", "--plan", "--seeds", "0", "0"], "error: --seeds 0 0: expected distinct seeds"),
        (["study", "--sensitivity", "--plan", "--scenarios", "smoke"], "error: study: --scenarios does not apply to --sensitivity"),
        (["study", "--sensitivity", "--plan", "--report", str(tmp_path)], f"error: --report {tmp_path}: is a directory"),
    ]  # fmt: skip
    for argv, line in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(line), (argv, err)
    assert not (tmp_path / "none").exists()


def test_model_folders_pretrain_settings_push_and_readme_mistakes_are_one_line(tmp_path, capsys):
    """The rest of the bad-input audit (notes/INPUT_AUDIT.md): each refused in one line before anything is
    written or staged."""
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "board" / "results").mkdir(parents=True)
    (tmp_path / "no-markers.md").write_text("# a README without the results markers\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "README.md").write_text("card")
    (tmp_path / "data" / "manifest.json").write_text('{"tasks": {"vsr_0": {"key": "k"}}}')
    cases = [
        (["list", "models", "--path", str(tmp_path / "nope")], f"error: {tmp_path / 'nope'}: no such model folder"),
        (["list", "models", "--path", str(tmp_path / "a-file")], "expected a model folder (save_pretrained output), got a file"),
        (["list", "models", "--path", str(tmp_path / "empty")], "no config.json, so this is not a saved model folder"),
        (["build", "--out", str(tmp_path / "a-file"), "--tasks", "vsr_0"], f"error: {tmp_path / 'a-file'}: is a file, not a data directory"),
        (["pretrain", "--model", "tiny-llama-s", "--set", "steps=abc"], "error: model 'tiny-llama-s': steps: expected an integer, got 'abc'"),
        (["pretrain", "--model", "tiny-llama-s", "--set", "lr=-1"], "error: model 'tiny-llama-s': lr=-1.0: expected a positive number"),
        (["pretrain", "--model", "tiny-llama-s", "--set", "tower=foo"], "error: model 'tiny-llama-s': tower='foo': expected none"),
        (["pretrain", "--model", "tiny-llama-s", "--set", "family=gpt"], "error: model 'tiny-llama-s': family must be llama|qwen2"),
        (["push", "--repo", "bad id!!", "--data", "--dry-run"], "error: --repo 'bad id!!': not a Hub repo id (Repo id must use"),
        (["push", "--zoo", "a/b/c", "--dry-run"], "error: --zoo 'a/b/c': not a Hub repo id"),
        (["push", "--repo", "you/x", "--leaderboard", "--board", str(tmp_path / "none"), "--dry-run"],
         f"error: --board {tmp_path / 'none'}: no results/ folder"),
        (["push", "--repo", "you/x", "--data", str(tmp_path / "data"), "--dry-run"],
         f"error: {tmp_path / 'data'}/manifest.json: tasks 'vsr_0' has no 'files' object; rebuild"),
        (["leaderboard", "build", "--board", str(tmp_path / "board"), "--readme", str(tmp_path / "no-markers.md")],
         f"error: {tmp_path / 'no-markers.md'}: expected one generated results block"),
    ]  # fmt: skip
    for argv, line in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and line in err[0], (argv, err)
    assert not (tmp_path / "board" / "site").exists()  # the README's markers are checked before the site is written


def test_a_malformed_manifest_is_rebuilt_not_a_crash(tmp_path, capsys):
    from drake.data.manifest import Manifest, manifest_problem

    assert manifest_problem({"tasks": {"a": {"files": {"train": {"path": "p", "sha256": "s", "rows": 1}}}}}) is None
    assert manifest_problem([]) == "expected a JSON object, got list"
    assert manifest_problem({"tasks": {"a": {"files": {"train": {"path": "p"}}}}}) == (
        "tasks 'a', split 'train': expected path, sha256 and rows"
    )
    (tmp_path / "manifest.json").write_text("[1, 2]")
    assert Manifest.read(tmp_path).configs() == {}
    assert "manifest.json is unreadable; rebuilding what is asked" in capsys.readouterr().err
    good = {"files": {"train": {"path": "p", "sha256": "s", "rows": 1}}}
    (tmp_path / "manifest.json").write_text(json.dumps({"params": {"source": "synth"}, "tasks": {"a": good, "b": {}}}))
    manifest = Manifest.read(tmp_path)  # the malformed entry is dropped, the rest (build params included) kept
    assert list(manifest.configs()) == ["a"] and manifest.data["params"] == {"source": "synth"}
    assert "manifest.json: tasks 'b' has no 'files' object; that config counts as not built" in capsys.readouterr().err
