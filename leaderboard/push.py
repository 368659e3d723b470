"""Publish a DRAKE-synth build and/or the leaderboard to a Hugging Face dataset repo, in one commit.

Only verified bytes leave the machine: every built file must match its sha256 in ``manifest.json`` (the
README's ``configs:`` make the repo loadable with ``datasets.load_dataset(repo, task)``), and every accepted
result passes the leaderboard's checks again; the site is rebuilt from exactly those results. The build is
uploaded file by file rather than through ``Dataset.push_to_hub``, which would re-encode the parquet and
break the recorded sha256s that results point to.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drake.data.manifest import manifest_problem
from drake.errors import DataError, DrakeError
from drake.io import sha256_file
from drake.spec import TaskTable

LEADERBOARD_PREFIX = "leaderboard"


@dataclass(frozen=True)
class Upload:
    """One file of a push: where it goes in the repo and where it is here."""

    path_in_repo: str
    local: Path


def data_files(data_dir: str | Path) -> list[Upload]:
    """README.md, manifest.json, every file the manifest lists (each checked against its sha256) and the
    dataset card's image grids (grids/*.png, linked from README.md)."""
    root = Path(data_dir)
    try:
        manifest = json.loads((root / "manifest.json").read_text())
    except FileNotFoundError:
        raise DataError(
            f"{root}: no manifest.json; build the data first (`drake build --out {root}`)"
        ) from None
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{root}/manifest.json: unreadable ({exc}); rebuild with `drake build --out {root}`"
        ) from None
    problem = manifest_problem(manifest)
    if problem:
        raise DataError(f"{root}/manifest.json: {problem}; rebuild with `drake build --out {root}`")
    if not (root / "README.md").is_file():
        raise DataError(
            f"{root}: no README.md (it names the configs); rebuild with `drake build --out {root}`"
        )
    uploads = [Upload("README.md", root / "README.md"), Upload("manifest.json", root / "manifest.json")]
    for section in ("tasks", "extras", "scenarios"):
        for name, entry in sorted((manifest.get(section) or {}).items()):
            for split, f in sorted(entry["files"].items()):
                local = root / f["path"]
                if not local.is_file() or sha256_file(local) != f["sha256"]:
                    state = "missing" if not local.is_file() else "changed since the build"
                    raise DataError(f"{local}: {state} ({section[:-1]} {name!r}, split {split}); "
                                    f"rebuild with `drake build --out {root}` before pushing")  # fmt: skip
                uploads.append(Upload(f["path"], local))
    uploads += [Upload(f"grids/{p.name}", p) for p in sorted((root / "grids").glob("*.png"))]
    return uploads


def leaderboard_files(
    board: str | Path, staging: str | Path, *, tasks: TaskTable | None = None, min_seeds: int = 3
) -> list[Upload]:
    """The accepted results (verified) and a site rebuilt from them into ``staging``, under ``leaderboard/``."""
    from leaderboard.build import build
    from leaderboard.submit import accepted_files

    site = Path(staging) / "site"
    written = build(board, site, tasks=tasks, min_seeds=min_seeds)  # verifies every accepted file first
    uploads = [Upload(f"{LEADERBOARD_PREFIX}/results/{p.name}", p) for p in accepted_files(board)]
    uploads += [Upload(f"{LEADERBOARD_PREFIX}/site/{p.relative_to(site).as_posix()}", p) for p in written]
    return uploads


def push(
    repo_id: str,
    uploads: Sequence[Upload],
    *,
    token: str | None = None,
    endpoint: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    message: str = "Upload DRAKE data/leaderboard",
    api: Any = None,
) -> str:
    """Create the dataset repo if needed and add ``uploads`` in one commit; returns the commit URL."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")  # no extra requests beyond the upload itself
    from huggingface_hub import CommitOperationAdd, HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    if not uploads:
        raise DrakeError("nothing to push: give --data DIR and/or --leaderboard")
    paths = [u.path_in_repo for u in uploads]
    if len(set(paths)) != len(paths):
        raise DrakeError(
            f"two files would land on the same repo path: {sorted({p for p in paths if paths.count(p) > 1})}"
        )
    if api is None:
        if constants.is_offline_mode():
            raise DrakeError(
                "HF_HUB_OFFLINE is set: unset it (and log in with `hf auth login` or HF_TOKEN) to push"
            )
        api = HfApi(endpoint=endpoint, token=token)
    operations = [
        CommitOperationAdd(path_in_repo=u.path_in_repo, path_or_fileobj=str(u.local)) for u in uploads
    ]
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        info = api.create_commit(
            repo_id, operations, commit_message=message, repo_type="dataset", revision=revision
        )
    except HfHubHTTPError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DrakeError(f"push to dataset repo {repo_id!r} failed: {first}") from None
    return str(info.commit_url)
