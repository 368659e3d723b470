"""``drake push``: real huggingface_hub calls against a fake Hub mocked only at the HTTP boundary.

huggingface_hub sends every request through one ``httpx2.Client``; ``set_client_factory`` swaps in a client
whose transport is ``FakeHub`` below, which implements the four endpoints a dataset push uses (create repo,
validate README YAML, preupload, NDJSON commit) and keeps the committed files, so the test compares the
bytes that arrived with the local files. Nothing reaches a network.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from huggingface_hub import constants, set_client_factory
from huggingface_hub.utils._http import default_client_factory

from drake.errors import DataError, DrakeError
from leaderboard.push import Upload, data_files, leaderboard_files, push

ENDPOINT = "http://hub.test"


class FakeHub:
    """Just enough of the Hub's HTTP API for ``create_repo`` + ``create_commit`` of a dataset or model repo."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.repos: dict[str, dict[str, Any]] = {}
        self.files: dict[str, dict[str, bytes]] = {}
        self.commits: list[dict[str, Any]] = []
        self.fail_commit: int | None = None

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        self.requests.append((request.method, str(url)))
        if url.path == "/api/agent-harnesses":  # huggingface_hub's best-effort telemetry registry
            return httpx2.Response(404, json={"error": "not here"})
        if f"{url.scheme}://{url.host}" != ENDPOINT:
            raise AssertionError(f"request outside the fake hub: {request.method} {url}")
        if request.headers.get("authorization") != "Bearer hf_test_token":
            return httpx2.Response(401, json={"error": "Invalid credentials"})
        if url.path == "/api/repos/create" and request.method == "POST":
            body = json.loads(request.content)
            repo = f"{body['organization']}/{body['name']}"
            self.repos[repo] = body
            self.files.setdefault(repo, {})
            return httpx2.Response(200, json={"url": f"{ENDPOINT}/datasets/{repo}", "name": repo})
        if url.path == "/api/validate-yaml":
            content = json.loads(request.content)["content"]  # the README; the Hub checks its YAML header
            header = re.match(r"^---\n(.*?)\n---\n", content, re.S)
            if header is None or not isinstance(yaml.safe_load(header.group(1)), dict):
                return httpx2.Response(400, json={"errors": [{"message": "bad YAML header"}], "warnings": []})
            return httpx2.Response(200, json={"errors": [], "warnings": []})
        parts = url.path.split("/")  # /api/<datasets|models>/<org>/<name>/<preupload|commit>/<revision>
        if len(parts) == 7 and parts[:2] == ["", "api"] and parts[2] in ("datasets", "models"):
            repo, action, revision = f"{parts[3]}/{parts[4]}", parts[5], parts[6]
            if repo not in self.repos:
                return httpx2.Response(404, json={"error": "Repository not found"})
            if action == "preupload":
                files = json.loads(request.content)["files"]
                return httpx2.Response(200, json={"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                            for f in files]})  # fmt: skip
            if action == "commit":
                if self.fail_commit:
                    return httpx2.Response(
                        self.fail_commit, json={"error": "You don't have the rights to push here"}
                    )
                lines = [json.loads(line) for line in request.content.decode().splitlines() if line.strip()]
                header = next(x["value"] for x in lines if x["key"] == "header")
                added = {
                    x["value"]["path"]: base64.b64decode(x["value"]["content"])
                    for x in lines
                    if x["key"] == "file"
                }
                self.files[repo].update(added)
                self.commits.append(
                    {"repo": repo, "revision": revision, "summary": header["summary"], "paths": sorted(added)}
                )
                oid = f"{len(self.commits):040x}"
                kind = "datasets/" if parts[2] == "datasets" else ""
                return httpx2.Response(200, json={"commitUrl": f"{ENDPOINT}/{kind}{repo}/commit/{oid}",
                                                  "commitOid": oid, "pullRequestUrl": None})  # fmt: skip
        return httpx2.Response(404, json={"error": f"no route {request.method} {url.path}"})


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    fake = FakeHub()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # conftest sets offline; the fake is the network
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(fake)))
    yield fake
    set_client_factory(default_client_factory)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny) DRAKE-synth build: two tasks at scale 0.1."""
    from drake.data.build import build
    from drake.spec import load_tasks

    tasks = load_tasks()
    out = tmp_path_factory.mktemp("data")
    build([tasks["vsr_0"], tasks["vizwiz_0"]], out, scale=0.1, extras=False, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def board(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A leaderboard store with one accepted 3-seed entry (built like tests/test_leaderboard.py does)."""
    from test_leaderboard import make, write  # the record factory of the leaderboard tests

    from leaderboard.submit import submit

    smoke = tmp_path_factory.mktemp("smoke-data")
    _build_smoke(smoke)
    board = tmp_path_factory.mktemp("board")
    submit(write(tmp_path_factory.mktemp("src") / "r.json", make(smoke)), board, data_dir=smoke)
    return board


def _build_smoke(out: Path) -> None:
    from drake.data.build import build
    from drake.spec import load_scenario, load_tasks

    tasks, scenario = load_tasks(), load_scenario("smoke")
    build(
        [tasks[t] for t in (*scenario.tasks, *scenario.unseen)],
        out,
        scale=0.1,
        extras=False,
        workers=1,
        progress=False,
    )


def test_data_files_are_the_manifest_files_verified(built: Path) -> None:
    uploads = data_files(built)
    paths = [u.path_in_repo for u in uploads]
    assert paths[:2] == ["README.md", "manifest.json"]
    assert sorted(paths[2:]) == sorted(
        [f"{t}/{s}-00000-of-00001.parquet" for t in ("vsr_0", "vizwiz_0") for s in ("train", "test")]
        + [f"grids/{t}.png" for t in ("vsr_0", "vizwiz_0")]  # the card's image grids
    )
    assert ".build.lock" not in paths and not any(p.startswith(".") for p in paths)


def test_push_data_and_leaderboard_in_one_commit(
    built: Path, board: Path, tmp_path: Path, hub: FakeHub
) -> None:
    uploads = data_files(built) + leaderboard_files(board, tmp_path / "staging")
    url = push("me/drake-synth", uploads, endpoint=ENDPOINT, private=True, message="DRAKE-synth s0.1")
    assert url == f"{ENDPOINT}/datasets/me/drake-synth/commit/{1:040x}"
    assert hub.repos["me/drake-synth"] == {
        "name": "drake-synth",
        "organization": "me",
        "type": "dataset",
        "visibility": "private",
    }
    assert len(hub.commits) == 1 and hub.commits[0]["summary"] == "DRAKE-synth s0.1"
    received = hub.files["me/drake-synth"]
    assert received == {u.path_in_repo: u.local.read_bytes() for u in uploads}  # byte-exact
    (result,) = [p for p in received if p.startswith("leaderboard/results/")]
    assert result.endswith(".json") and result.split("/")[-1].startswith("fedavg--smoke-hetero--")
    assert {"leaderboard/site/index.html", "leaderboard/site/leaderboard.md", "leaderboard/site/leaderboard.csv",
            "leaderboard/site/leaderboard.json"} <= set(received)  # fmt: skip
    assert any(p.startswith("leaderboard/site/plots/") and p.endswith(".png") for p in received)
    assert "configs:" in received["README.md"].decode()


def test_corrupted_build_is_refused_before_any_request(built: Path, tmp_path: Path, hub: FakeHub) -> None:
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(built, copy)
    victim = copy / "vsr_0" / "test-00000-of-00001.parquet"
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(DataError, match=r"vsr_0/test-00000-of-00001.parquet: changed since the build"):
        data_files(copy)
    victim.unlink()
    with pytest.raises(DataError, match="missing"):
        data_files(copy)
    with pytest.raises(DataError, match="no manifest.json"):
        data_files(tmp_path / "nothing")
    assert hub.requests == []


def test_http_errors_and_offline_mode_are_one_line(
    built: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.fail_commit = 403
    with pytest.raises(DrakeError) as info:
        push("me/x", data_files(built), endpoint=ENDPOINT)
    assert "push to dataset repo 'me/x' failed" in str(info.value) and "\n" not in str(info.value)
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(DrakeError, match="failed"):
        push("me/x", data_files(built), endpoint=ENDPOINT)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    n = len(hub.requests)
    with pytest.raises(DrakeError, match="HF_HUB_OFFLINE is set"):
        push("me/x", data_files(built), endpoint=ENDPOINT)
    assert len(hub.requests) == n
    with pytest.raises(DrakeError, match="same repo path"):
        push(
            "me/x",
            [Upload("a.txt", built / "README.md"), Upload("a.txt", built / "manifest.json")],
            api=object(),
        )


def test_cli_push(built: Path, board: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    from leaderboard.__main__ import main

    assert (
        main(
            [
                "push",
                "--repo",
                "me/lb",
                "--data",
                str(built),
                "--leaderboard",
                "--board",
                str(board),
                "--dry-run",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "README.md" in out and "leaderboard/site/index.html" in out and "dry run:" in out
    assert hub.requests == []
    assert (
        main(["push", "--repo", "me/lb", "--leaderboard", "--board", str(board), "--endpoint", ENDPOINT]) == 0
    )
    assert "pushed" in capsys.readouterr().out
    assert all(p.startswith("leaderboard/") for p in hub.files["me/lb"])
    assert main(["push", "--repo", "me/lb"]) == 2
    assert "nothing to push" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- the model zoo


def test_push_zoo_then_load_a_member_from_a_local_hub_mirror(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`drake push --zoo` sends the verified shipped zoo to a model repo; a local mirror of that repo in the
    HF cache layout then loads through the real snapshot_download path, offline, checked file by file."""
    import torch

    from drake.cli import main
    from drake.models.loading import load_model
    from drake.models.zoo_manifest import SHIPPED_DIR, ZooIntegrityError, read_manifest

    assert main(["push", "--zoo", "me/drake-zoo", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "tiny-llama-m/model.safetensors" in out and "would go to model repo me/drake-zoo" in out
    assert hub.requests == []
    assert main(["push", "--zoo", "me/drake-zoo", "--endpoint", ENDPOINT, "--private"]) == 0
    assert "to model repo me/drake-zoo" in capsys.readouterr().out
    assert hub.repos["me/drake-zoo"]["name"] == "drake-zoo" and len(hub.commits) == 1
    received = hub.files["me/drake-zoo"]
    manifest = read_manifest()
    assert json.loads(received["manifest.json"]) == manifest
    expected = {f"{e['folder']}/{f}" for e in manifest["members"].values() for f in e["files"]}
    assert set(received) == expected | {"manifest.json", "README.md"}
    assert all(received[p] == (SHIPPED_DIR / p).read_bytes() for p in expected)  # byte-exact
    assert "library_name: transformers" in received["README.md"].decode()
    assert main(["push", "--zoo", "me/x", "--repo", "me/y"]) == 2

    cache = tmp_path / "hf"
    repo = cache / "models--me--drake-zoo"
    snap = repo / "snapshots" / ("a" * 40)
    for path, blob in received.items():
        (snap / path).parent.mkdir(parents=True, exist_ok=True)
        (snap / path).write_bytes(blob)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = load_model("me/drake-zoo/tiny-llama-s", device="cpu", cache_dir=cache)
    assert loaded.name == "me/drake-zoo/tiny-llama-s" and loaded.path == str(snap / "tiny-llama-s")
    assert loaded.zoo["shipped"] and loaded.zoo["member"] == "tiny-llama-s"
    shipped = load_model("tiny-llama-s", device="cpu").model.state_dict()
    assert all(torch.equal(v, shipped[k]) for k, v in loaded.model.state_dict().items())
    with pytest.raises(DataError, match="has no member 'tiny-llama-x'; members: tiny-llama-m"):
        load_model("me/drake-zoo/tiny-llama-x", cache_dir=cache)
    with pytest.raises(DrakeError, match="cannot fetch zoo member 'me/absent/tiny-llama-s'.*HF_HUB_OFFLINE"):
        load_model("me/absent/tiny-llama-s", cache_dir=cache)
    victim = snap / "tiny-llama-s" / "config.json"
    victim.write_text(victim.read_text().replace('"llama"', '"qwen2"', 1))
    with pytest.raises(ZooIntegrityError) as info:
        load_model("me/drake-zoo/tiny-llama-s", cache_dir=cache)
    assert str(info.value).startswith(f"{victim}: sha256") and "delete the cached snapshot" in str(info.value)
    assert "\n" not in str(info.value)
