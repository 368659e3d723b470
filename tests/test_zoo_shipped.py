"""The shipped zoo (drake/models/zoo_weights): pinned, verified on load, never pre-trained; package data and
the data root outside a checkout; `drake list models`; `drake pretrain --compare`; a slow fresh-venv install."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

import drake.models.zoo_manifest as zm
from drake.errors import DataError, DrakeError
from drake.models.zoo import ZOO
from drake.paths import PACKAGE_DIR, REPO_ROOT, drake_home, in_checkout

MEMBERS = ("tiny-llama-m", "tiny-llama-s", "tiny-qwen-m", "tiny-qwen-s")
TOWER = "tiny-siglip-captioner"


@pytest.fixture
def zoo_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the shipped zoo, made the shipped one for this test (the real files are never touched)."""
    copy = tmp_path / "zoo_weights"
    shutil.copytree(zm.SHIPPED_DIR, copy)
    monkeypatch.setattr(zm, "SHIPPED_DIR", copy)
    return copy


@pytest.fixture
def no_pretraining(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An empty cache, and any call into the recipe fails the test."""
    import drake.models.pretrain as P

    def boom(*a, **k):
        raise AssertionError("pre-training was started")

    monkeypatch.setenv("DRAKE_HOME", str(tmp_path / "empty-home"))
    monkeypatch.setattr(P, "pretrain", boom)
    monkeypatch.setattr(P, "pretrain_many", boom)


# ------------------------------------------------------------------------------------------------ manifest


def test_manifest_pins_every_shipped_file_and_matches_the_recipe(monkeypatch):
    from drake.models.folders import cache_key
    from drake.models.tokenizer import default_vocab
    from drake.spec import fingerprint

    manifest = zm.read_manifest()
    assert set(manifest["members"]) == {*MEMBERS, TOWER} == set(ZOO) | {TOWER}
    assert manifest["zoo_version"] and manifest["command"].startswith("drake pretrain")
    assert manifest["zoo_sha256"] == fingerprint({n: m["files"] for n, m in manifest["members"].items()})
    vocab = default_vocab()
    for name, entry in manifest["members"].items():
        folder = zm.SHIPPED_DIR / entry["folder"]
        on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        assert on_disk == set(entry["files"]), f"{name}: unlisted or missing files"
        assert {"model.safetensors", "config.json", "tokenizer.json", "drake_pretrain.json"} <= on_disk
        assert entry["sha256"] == entry["files"]["model.safetensors"]
        assert 0.5 < entry["heldout_accuracy"]["overall"] <= 1 and entry["recipe"]["steps"] > 0
        if name in ZOO:  # not stale: the code's spec + recipe + vocab give the shipped cache key
            assert entry["cache_key"] == cache_key(ZOO[name], vocab) and zm.is_stale(name) is False
            assert entry["tower"] == TOWER and entry["role"] == "member"
    assert manifest["members"][TOWER]["role"] == "tower"
    assert sorted(zm.verify_all()) == sorted([*MEMBERS, TOWER])  # every byte as pinned
    total = sum((zm.SHIPPED_DIR / e["folder"] / f).stat().st_size
                for e in manifest["members"].values() for f in e["files"])  # fmt: skip
    assert total < 30e6, f"the shipped zoo grew to {total / 1e6:.1f} MB"
    monkeypatch.setitem(ZOO, "tiny-llama-s", ZOO["tiny-llama-s"].with_overrides(steps=451))
    assert zm.is_stale("tiny-llama-s") is True and zm.is_stale("tiny-qwen-s") is False  # a recipe edit shows


def test_load_model_reads_the_shipped_weights_and_never_pretrains(no_pretraining):
    from drake.models.loading import load_model, resolve
    from drake.runner import check_models

    check_models(["tiny-llama-s", "tiny-qwen-m"], progress=False)  # the runner's check: no training
    assert resolve("tiny-llama-m") == ("tiny-llama-m", str(zm.SHIPPED_DIR / "tiny-llama-m"))
    loaded = load_model("tiny-qwen-s", device="cpu", progress=False)
    entry = zm.member_entry("tiny-qwen-s")
    assert loaded.path == str(zm.SHIPPED_DIR / "tiny-qwen-s") and loaded.family == "qwen2"
    assert loaded.num_layers == ZOO["tiny-qwen-s"].text_layers
    assert loaded.meta["heldout_accuracy"] == entry["heldout_accuracy"]
    assert loaded.zoo == {"zoo_version": zm.read_manifest()["zoo_version"], "member": "tiny-qwen-s",
                          "zoo_sha256": zm.read_manifest()["zoo_sha256"], "sha256": entry["sha256"],
                          "shipped": True}  # fmt: skip
    assert not Path(os.environ["DRAKE_HOME"]).exists(), "loading wrote nothing into the cache"


def test_a_flipped_byte_or_a_missing_file_is_one_line_naming_the_file(zoo_copy, no_pretraining, capsys):
    from drake.models.loading import load_model

    victim = zoo_copy / "tiny-llama-m" / "model.safetensors"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    with pytest.raises(zm.ZooIntegrityError) as info:
        load_model("tiny-llama-m", device="cpu")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{victim}: sha256 ") and "tiny-llama-m" in msg
    assert "pip install --force-reinstall drake-bench" in msg  # a copy outside the checkout: reinstall
    assert isinstance(info.value, DataError)
    assert load_model("tiny-llama-s", device="cpu").zoo["shipped"]  # the other members still load
    (zoo_copy / "tiny-qwen-s" / "tokenizer.json").unlink()
    with pytest.raises(zm.ZooIntegrityError, match=r"tiny-qwen-s/tokenizer.json: missing \(shipped zoo .*, member 'tiny-qwen-s'\)"):
        load_model("tiny-qwen-s")
    assert zm.main(["verify"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "tiny-llama-m/model.safetensors" in err
    # in the checkout, the hint is the git command restoring exactly that file
    hint = zm._restore_hint(REPO_ROOT / "drake/models/zoo_weights/tiny-llama-m/model.safetensors")
    assert hint == "restore it with `git checkout -- drake/models/zoo_weights/tiny-llama-m/model.safetensors`"


def test_shipped_info_tells_shipped_bytes_from_others(zoo_copy, tmp_path):
    info = zm.shipped_info("tiny-llama-s")
    assert info["shipped"] and info["member"] == "tiny-llama-s" and len(info["sha256"]) == 64
    assert zm.shipped_info(zoo_copy / "tiny-llama-s") == info  # the folder: hashed, same bytes
    other = tmp_path / "retrained"
    shutil.copytree(zoo_copy / "tiny-llama-s", other)
    blob = bytearray((other / "model.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (other / "model.safetensors").write_bytes(bytes(blob))
    mine = zm.shipped_info(other)
    assert mine["shipped"] is False and mine["zoo_version"] is None and mine["member"] == "tiny-llama-s"
    assert mine["sha256"] != info["sha256"]
    assert zm.shipped_info("llava-hf/llava-interleave-qwen-0.5b-hf") is None


def test_pretrain_writes_to_the_cache_never_into_the_shipped_zoo(tmp_path, monkeypatch):
    from drake.models.pretrain import pretrain

    spec = ZOO["tiny-llama-s"].with_overrides(steps=1, tower=None)
    before = {p: p.stat().st_mtime_ns for p in zm.SHIPPED_DIR.rglob("*") if p.is_file()}
    with pytest.raises(DrakeError, match="inside the shipped zoo"):
        pretrain(spec, home=zm.SHIPPED_DIR / "cache", progress=False)
    monkeypatch.setenv("DRAKE_HOME", str(zm.SHIPPED_DIR))  # models_home() = zoo_weights/models: refused too
    with pytest.raises(DrakeError, match="inside the shipped zoo"):
        pretrain(spec, progress=False)
    assert {p: p.stat().st_mtime_ns for p in zm.SHIPPED_DIR.rglob("*") if p.is_file()} == before


def test_pretrain_compare_sets_fresh_beside_shipped(tmp_path, monkeypatch, capsys):
    """A cache holding this zoo's exact bytes (what `drake pretrain` makes on the machine that shipped it)
    compares as identical; a member whose re-run scored lower shows the difference. Nothing is trained."""
    from drake.cli import main
    from drake.models.folders import cached_path

    monkeypatch.setenv("DRAKE_HOME", str(tmp_path / "home"))
    for name in ("tiny-llama-s", "tiny-qwen-s"):
        shutil.copytree(zm.SHIPPED_DIR / name, cached_path(name))
    meta_file = cached_path("tiny-qwen-s") / "drake_pretrain.json"
    meta = json.loads(meta_file.read_text())
    shipped_acc = meta["heldout_accuracy"]["overall"]
    meta["heldout_accuracy"]["overall"] = shipped_acc - 0.05
    meta_file.write_text(json.dumps(meta))
    assert main(["pretrain", "--model", "tiny-llama-s", "tiny-qwen-s", "--compare", "--quiet"]) == 0
    out = capsys.readouterr().out.split("fresh held-out")[1]  # the comparison table, after the usual one
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith("tiny-")}
    acc = f"{zm.member_entry('tiny-llama-s')['heldout_accuracy']['overall']:.3f}"
    assert rows["tiny-llama-s"] == [acc, acc, "+0.000", "yes", "yes"]
    assert rows["tiny-qwen-s"][2:] == ["-0.050", "yes", "yes"]
    assert rows[TOWER] == ["-", f"{zm.member_entry(TOWER)['heldout_accuracy']['overall']:.3f}", "-", "yes", "-"]


# ------------------------------------------------------------------------------------------ list models


def test_list_models_shows_the_zoo_without_torch(tmp_path, monkeypatch, capsys):
    from drake.cli import main

    copy = tmp_path / "mine"
    shutil.copytree(zm.SHIPPED_DIR / "tiny-llama-m", copy)
    (copy / "drake_pretrain.json").unlink()
    monkeypatch.setenv("DRAKE_HOME", str(tmp_path / "home"))
    assert main(["list", "models", "--path", str(copy)]) == 0
    out = capsys.readouterr().out
    version = zm.read_manifest()["zoo_version"]
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith(("tiny-", "mine"))}
    for name in MEMBERS:
        entry = zm.member_entry(name)
        row = lines[name]
        assert f"shipped, zoo {version}" in row and f"{entry['heldout_accuracy']['overall']:.3f}" in row
        assert f"{entry['parameters']['total'] / 1e6:.2f}M" in row
        assert f"{entry['text_layers']} x {entry['text_hidden']}" in row and entry["family"] in row
    assert "tower" in lines[TOWER]
    # a folder without a pre-training record: params read from the safetensors header, bytes recognised
    assert f"{zm.member_entry('tiny-llama-m')['parameters']['total'] / 1e6:.2f}M" in lines["mine"]
    assert "same bytes as shipped tiny-llama-m" in lines["mine"]
    # the listing itself imports no torch (drake.models.catalog and what it reads)
    code = ("import sys; from drake.models.catalog import describe_models; rows = describe_models(); "
            "print(len(rows), 'torch' in sys.modules)")  # fmt: skip
    env = {**os.environ, "DRAKE_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
                          check=False)  # fmt: skip
    assert proc.stdout.split() == [str(len(MEMBERS) + 1), "False"], proc.stderr


# ------------------------------------------------------------------------------------- package data, home


def test_package_data_is_inside_the_package_and_declared_in_pyproject():
    from importlib.resources import files

    from drake.spec import SCENARIOS_DIR, TASKS_PATH, list_scenarios

    assert TASKS_PATH == PACKAGE_DIR / "tasks.yaml" and SCENARIOS_DIR == PACKAGE_DIR / "scenarios"
    assert Path(str(files("drake") / "tasks.yaml")).resolve() == TASKS_PATH.resolve()
    assert "smoke" in list_scenarios()
    # the checkout's top-level names still work (symlinks into the package)
    assert (REPO_ROOT / "tasks.yaml").resolve() == TASKS_PATH.resolve()
    assert (REPO_ROOT / "scenarios" / "smoke.yaml").resolve() == (SCENARIOS_DIR / "smoke.yaml").resolve()
    patterns = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    declared = {p.resolve() for pattern in patterns["drake"] for p in PACKAGE_DIR.glob(pattern) if p.is_file()}
    # every data file in the package (what the code reads: tasks, scenarios, configs, vocab, schema, weights)
    needed = [p for p in PACKAGE_DIR.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")]
    assert TASKS_PATH in needed and zm.manifest_path() in needed and PACKAGE_DIR / "models/vocab.txt" in needed
    for entry in zm.read_manifest()["members"].values():
        assert {zm.SHIPPED_DIR / entry["folder"] / f for f in entry["files"]} <= set(needed)
    missing = [str(p.relative_to(PACKAGE_DIR)) for p in needed if p.resolve() not in declared]
    assert not missing, f"not in [tool.setuptools.package-data]: {missing}"


def test_data_root_outside_a_checkout(tmp_path, monkeypatch):
    import drake.paths
    from drake.data.build import default_data_dir
    from drake.models.zoo import models_home

    monkeypatch.delenv("DRAKE_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert in_checkout() and drake_home() == REPO_ROOT / ".drake"  # this checkout: as before
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.setattr(drake.paths, "REPO_ROOT", site)  # what an installed wheel sees above the package
    assert not in_checkout() and drake_home() == tmp_path / "xdg" / "drake"
    assert models_home() == tmp_path / "xdg" / "drake" / "models"
    assert default_data_dir() == tmp_path / "xdg" / "drake" / "data" / "drake-synth-s1-px32-seed0"
    monkeypatch.setenv("DRAKE_HOME", str(tmp_path / "mine"))
    assert drake_home() == tmp_path / "mine" and models_home() == tmp_path / "mine" / "models"


# ------------------------------------------------------------------------------------------ slow: install


def _copy_tree(dest: Path) -> None:
    """The files git tracks plus the untracked, non-ignored ones (what a commit of this tree would hold)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for rel in filter(None, listed):
        src = REPO_ROOT / rel
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree
        if any((REPO_ROOT / parent).is_symlink() for parent in Path(rel).parents if parent != Path(".")):
            continue  # tracked under a folder that is now a symlink (scenarios/ -> drake/scenarios/)
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dest / rel)
        elif src.is_file():
            shutil.copy2(src, dest / rel)


@pytest.mark.slow
def test_pip_install_into_a_fresh_venv_runs_outside_the_checkout(tmp_path):
    """`pip install .` (not editable) into a new venv, then list / build / run from another directory: tasks,
    scenarios and weights come from the installed package, data goes under ~/.cache/drake. (~5-10 min)"""
    src, venv, work = tmp_path / "src", tmp_path / "venv", tmp_path / "work"
    _copy_tree(src)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True, timeout=900)
    subprocess.run([*pip, str(src)], check=True, timeout=900)
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("DRAKE_HOME", "PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HOME=str(tmp_path / "home"), XDG_CACHE_HOME=str(tmp_path / "cache"), HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", DRAKE_ENGINE="sequential")  # fmt: skip
    py, drake = str(venv / "bin" / "python"), str(venv / "bin" / "drake")

    def run(*cmd: str) -> str:
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=900, check=False)
        assert proc.returncode == 0, f"{cmd}: {proc.stderr[-2000:]}"
        return proc.stdout

    where = run(py, "-c", "import drake, drake.models.zoo_manifest as z; print(drake.__file__); print(z.SHIPPED_DIR)")
    assert str(venv) in where and str(REPO_ROOT) not in where
    assert "47 tasks" in run(py, "-m", "drake", "list", "tasks")
    run(drake, "build", "--scenario", "smoke", "--scale", "0.1", "--no-extras", "--quiet")
    assert (tmp_path / "cache" / "drake" / "data" / "drake-synth-s0.1-px32-seed0" / "manifest.json").is_file()
    run(drake, "run", "--method", "fedavg", "--scenario", "smoke", "--scale", "0.1", "--set", "local_steps=2",
        "--out", "runs", "--no-progress")  # fmt: skip
    (result,) = (work / "runs").glob("*.json")
    record = json.loads(result.read_text())
    paths = json.dumps(record)
    assert "zoo_weights/tiny-llama-s" in paths and str(REPO_ROOT) not in paths
    assert not (tmp_path / "cache" / "drake" / "models").exists() or not any(
        p.name.startswith("tiny-") for p in (tmp_path / "cache" / "drake" / "models").iterdir()
    ), "nothing was pre-trained"
