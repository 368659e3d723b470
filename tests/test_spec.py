"""Spec loading errors (one line: what, where, how to fix) and the generic Registry."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from drake.errors import DrakeError, SpecError, UnknownNameError
from drake.registry import Registry
from drake.spec import load_scenario, load_tasks

TASK = """\
  - name: {name}
    title: A task
    images: 1
    answer: choice
    metric: choice_accuracy
    sources:
      synth: {{family: tiny, params: {{}}}}
"""


def _tasks_file(tmp_path: Path, body: str, name: str = "tasks.yaml") -> Path:
    path = tmp_path / name
    path.write_text("schema_version: 1\ntasks:\n" + body)
    return path


def test_load_tasks_ok(tmp_path):
    table = load_tasks(_tasks_file(tmp_path, TASK.format(name="a") + TASK.format(name="b")))
    assert list(table) == ["a", "b"]
    assert table["a"].sources["synth"].family == "tiny"
    assert table["a"].fingerprint() != table["b"].fingerprint()


def test_unknown_key_suggests_the_right_one(tmp_path):
    path = _tasks_file(tmp_path, TASK.format(name="a").replace("images: 1", "imagez: 1"))
    with pytest.raises(SpecError) as err:
        load_tasks(path)
    msg = str(err.value)
    assert str(path) in msg and "'imagez'" in msg and "did you mean 'images'" in msg
    assert "\n" not in msg


def test_missing_key_is_named(tmp_path):
    path = _tasks_file(tmp_path, TASK.format(name="a").replace("    metric: choice_accuracy\n", ""))
    with pytest.raises(SpecError, match="missing required key 'metric'"):
        load_tasks(path)


def test_bad_answer_kind_and_duplicate_names(tmp_path):
    with pytest.raises(SpecError, match="did you mean 'choice'"):
        load_tasks(_tasks_file(tmp_path, TASK.format(name="a").replace("answer: choice", "answer: choise")))
    with pytest.raises(SpecError, match="duplicate task name 'a'"):
        load_tasks(_tasks_file(tmp_path, TASK.format(name="a") * 2))


def test_bad_yaml_reports_file_and_line(tmp_path):
    path = tmp_path / "tasks.yaml"
    path.write_text("schema_version: 1\ntasks:\n  - name: a\n    title: [unclosed\n    images: 1\n")
    with pytest.raises(SpecError) as err:
        load_tasks(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:") and "invalid YAML" in msg
    line = int(msg[len(str(path)) + 1 :].split(":")[0])
    assert 4 <= line <= 6


def test_missing_tasks_file(tmp_path):
    with pytest.raises(SpecError, match="file not found"):
        load_tasks(tmp_path / "nope.yaml")


SCENARIO = """\
name: s
description: test
mode: dynamic
rounds: 4
rounds_per_task: 2
pools:
  p: [m1, m2]
clients:
  - {id: 0, tasks: [a, b]}
  - {id: 1, tasks: [b, a]}
"""


def test_scenario_stages_and_unknown_task(tmp_path):
    tasks = load_tasks(_tasks_file(tmp_path, TASK.format(name="a") + TASK.format(name="b")))
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO)
    sc = load_scenario(path, tasks=tasks)
    assert [(s.tasks, s.start_round, s.end_round) for s in sc.clients[1].stages] == [
        (("b",), 0, 2),
        (("a",), 2, 4),
    ]
    assert sc.architectures == ("m1", "m2")
    path.write_text(SCENARIO.replace("tasks: [b, a]", "tasks: [b, aa]"))
    with pytest.raises(SpecError, match=r"client 1: unknown task 'aa' \(did you mean 'a'"):
        load_scenario(path, tasks=tasks)


def test_scenario_pool_length_mismatch(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO.replace("p: [m1, m2]", "p: [m1, m2, m3]"))
    with pytest.raises(SpecError, match="pools.p lists 3 models for 2 clients"):
        load_scenario(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("rounds: 4\nrounds_per_task: 2", "rounds: 1"), "'rounds_per_task' must be >= 1 (rounds 1 for 2 tasks"),
        (("rounds_per_task: 2", "rounds_per_task: -1"), "'rounds_per_task' must be >= 1"),
        (("rounds_per_task: 2", "rounds_per_task: 4"), "client 0's task 2 of 2 would arrive in round 5 of 4"),
        (("rounds: 4", "rounds: 4\neval_rounds: 5"), "'eval_rounds' must be list, got int 5"),
        (("rounds: 4", "rounds: 4\neval_rounds: [abc]"), "eval_rounds must lie in 1..4"),
        (("tasks: [a, b]", "tasks: 5"), "clients[0]: 'tasks' must be"),
    ],
)
def test_malformed_scenario_values_are_one_spec_error(tmp_path, edit, message):
    """Wrong types and ranges in a scenario file are SpecErrors naming the key, never a TypeError."""
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO.replace(*edit, 1))
    with pytest.raises(SpecError, match=re.escape(message)):
        load_scenario(path)


def test_tasks_file_shapes(tmp_path):
    """A tasks list that is not a list, and a directory given for the file, are one line each."""
    bad = tmp_path / "tasks.yaml"
    bad.write_text("tasks: 5\n")
    with pytest.raises(SpecError, match="'tasks' must be list, got int 5"):
        load_tasks(bad)
    with pytest.raises(SpecError, match="is a directory; give a YAML file"):
        load_tasks(tmp_path)
    with pytest.raises(UnknownNameError, match=r"unknown task group 'qualty' \(did you mean 'quality'"):
        load_tasks().select(groups=["qualty"])


def test_scenario_unknown_key_and_name(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO + "roundz: 3\n")
    with pytest.raises(SpecError, match="did you mean 'rounds'"):
        load_scenario(path)
    with pytest.raises(UnknownNameError, match="did you mean 'smoke'"):
        load_scenario("smok")


# ------------------------------------------------------------------------------------------------ registry


def test_registry_lazy_target_is_imported_on_first_get():
    reg: Registry = Registry("widget")
    name = "drake_test_lazy_mod"
    assert name not in sys.modules
    reg.register("dumper", "json:dumps", summary="dump json")
    reg.register("lazy", f"{name}:thing")
    assert "lazy" in reg and reg.names() == ["dumper", "lazy"]
    assert reg.get("dumper") is json.dumps
    assert reg.summary("dumper") == "dump json"
    with pytest.raises(DrakeError, match=f"cannot import '{name}:thing'"):
        reg.get("lazy")  # listing never imported it; the failure shows only on use


def test_registry_import_error_in_the_module_says_where(tmp_path, monkeypatch):
    """A method file that fails while it is imported (here: a dataclass field without a default after one
    with a default) is one DrakeError naming the exception and the file and line, not an 'unexpected' fault."""
    (tmp_path / "drake_test_broken_method.py").write_text(
        "from dataclasses import dataclass\n\n\n@dataclass\nclass Config:\n    lr: float = 1.0\n    decay: float\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    reg: Registry = Registry("method")
    reg.register("broken", "drake_test_broken_method:Config")
    with pytest.raises(DrakeError) as info:
        reg.get("broken")
    message = str(info.value)
    assert message.startswith("method 'broken': cannot import 'drake_test_broken_method:Config' (TypeError at "
                              "drake_test_broken_method.py:4 in <module>: non-default argument 'decay'"), message


def test_a_method_class_must_carry_its_registered_name():
    """A subclass that forgets ``name`` would write result files, and reach the board, as its parent."""
    from baselines.fedavg import FedAvg
    from drake.method_registry import METHODS, check_method

    class Forgetful(FedAvg):
        pass

    with pytest.raises(DrakeError, match="whose name is 'fedavg': set `name = 'drake-test-forgetful'`"):
        METHODS.register("drake-test-forgetful", Forgetful)
    assert "drake-test-forgetful" not in METHODS
    Forgetful.name = "drake-test-forgetful"
    lazy: Registry = Registry("method", check=check_method)  # a lazy line is checked when first imported
    lazy.register("fedprox", "baselines.fedavg:FedAvg")
    with pytest.raises(DrakeError, match=r"method 'fedprox' is registered as baselines\.fedavg\.FedAvg, whose name is 'fedavg'"):
        lazy.get("fedprox")


def test_registry_duplicates_bad_names_and_did_you_mean():
    reg: Registry = Registry("widget")

    @reg.register("alpha")
    def alpha():
        """First line of the doc.

        More."""

    assert reg.get("alpha") is alpha and reg.summary("alpha") == "First line of the doc."
    with pytest.raises(DrakeError, match="registered twice"):
        reg.register("alpha", alpha)
    with pytest.raises(DrakeError, match="invalid widget name"):
        reg.register("Bad Name", alpha)
    with pytest.raises(DrakeError, match="must look like"):
        reg.register("beta", "no_colon_here")
    with pytest.raises(UnknownNameError) as err:
        reg.get("alpah")
    assert "did you mean 'alpha'" in str(err.value) and "known: alpha" in str(err.value)
    assert isinstance(err.value, KeyError)  # callers may catch it as a KeyError too


def test_registry_check_runs_on_resolution():
    def must_be_callable(name, obj):
        if not callable(obj):
            raise DrakeError(f"{name} is not callable")

    reg: Registry = Registry("widget", check=must_be_callable)
    reg.register("sep", "os:sep")
    with pytest.raises(DrakeError, match="sep is not callable"):
        reg.get("sep")


def test_repository_specs_load():
    tasks = load_tasks()
    assert len(tasks) == 47
    for name in ("drake-dynamic", "drake-static", "smoke"):
        sc = load_scenario(name, tasks=tasks)
        assert all(t in tasks for t in sc.tasks + sc.unseen)


@pytest.mark.parametrize(
    ("partition", "message"),
    [
        ("{kind: iid}", "partition.kind must be 'dirichlet'"),
        ("{kind: dirichlet}", "partition.alpha must be a number > 0"),
        ("{kind: dirichlet, alpha: 0}", "partition.alpha must be a number > 0"),
        ("{kind: dirichlet, alpha: 1, alhpa: 2}", "unknown key partition.alhpa"),
    ],
)
def test_bad_partition_is_refused(tmp_path: Path, partition: str, message: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO + f"partition: {partition}\n")
    with pytest.raises(SpecError, match=message):
        load_scenario(path)


def test_dirichlet_partition_is_loaded(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO + "partition: {kind: dirichlet, alpha: 0.5}\n")
    assert load_scenario(path).partition == {"kind": "dirichlet", "alpha": 0.5}
