"""The zoo as a Hugging Face model repo: ``drake push --zoo REPO`` uploads it, ``load_model("REPO/MEMBER")``
loads a member from it.

The repo mirrors the shipped folder: ``manifest.json`` at the top, one ``save_pretrained`` folder per member
(``tiny-llama-m/config.json``, ``tiny-llama-m/model.safetensors``, ...) and a model card. A member is named
by repo id plus member folder (``you/drake-zoo/tiny-llama-m``) and fetched with ``snapshot_download`` (the
manifest and that folder only), so the HF cache, ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT`` behave as for any
hub model; the downloaded files are checked against the repo's manifest before loading.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from drake.errors import DataError, DrakeError
from drake.models.zoo_manifest import (
    MANIFEST_NAME,
    SHIPPED_DIR,
    read_manifest,
    verify_all,
    verify_folder,
)

CARD_NAME = "README.md"


def is_zoo_hub_id(name: str) -> bool:
    """``org/repo/member``: three non-empty path parts, not a local path."""
    parts = name.split("/")
    return len(parts) == 3 and all(parts) and not name.startswith((".", "~", "/")) and " " not in name


def model_card(manifest: dict[str, Any]) -> str:
    """A README with the Hub's YAML header and one line per member (parameters, shape, held-out accuracy)."""
    lines = [
        "---",
        "license: apache-2.0",
        "library_name: transformers",
        "pipeline_tag: image-text-to-text",
        "tags: [drake, llava, tiny, federated-learning, benchmark]",
        "---",
        "",
        f"# DRAKE tiny zoo {manifest['zoo_version']}",
        "",
        "Tiny LLaVA-style models (`LlavaForConditionalGeneration`) pre-trained from scratch on DRAKE's public "
        "synthetic split; the canonical weights of the DRAKE benchmark. Every file is pinned by sha256 in "
        "`manifest.json`. Load a member with `drake.models.loading.load_model(\"<this repo>/<member>\")` "
        "(or `transformers` with `subfolder=\"<member>\"`).",
        "",
        "| member | role | text | layers x hidden | params | held-out acc |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in sorted(manifest["members"].items()):
        params = (m.get("parameters") or {}).get("total", 0) / 1e6
        acc = (m.get("heldout_accuracy") or {}).get("overall", float("nan"))
        lines.append(f"| {name} | {m.get('role')} | {m.get('family')} | {m.get('text_layers')} x "
                     f"{m.get('text_hidden')} | {params:.2f}M | {acc:.3f} |")  # fmt: skip
    lines += ["", f"Made by `{manifest.get('command')}`; zoo sha256 `{manifest.get('zoo_sha256')}`.", ""]
    return "\n".join(lines)


def zoo_uploads(staging: str | Path, root: str | Path | None = None) -> list[tuple[str, Path]]:
    """``(path in repo, local file)`` for the model card, the manifest and every member file, each file checked
    against its sha256 first (a bad file raises before anything is sent)."""
    base = Path(root or SHIPPED_DIR)
    folders = verify_all(root)
    manifest = read_manifest(root)
    card = Path(staging) / CARD_NAME
    card.write_text(model_card(manifest))
    uploads = [(CARD_NAME, card), (MANIFEST_NAME, base / MANIFEST_NAME)]
    for name, folder in folders.items():
        entry = manifest["members"][name]
        uploads += [(f"{entry['folder']}/{rel}", folder / rel) for rel in sorted(entry["files"])]
    return uploads


def push_zoo(
    repo_id: str,
    staging: str | Path,
    *,
    root: str | Path | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    message: str | None = None,
    api: Any = None,
) -> tuple[str, list[tuple[str, Path]]]:
    """Create the model repo if needed and upload the verified zoo in one commit; returns (commit URL, uploads)."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from huggingface_hub import CommitOperationAdd, HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    uploads = zoo_uploads(staging, root)
    if api is None:
        if constants.is_offline_mode():
            raise DrakeError("HF_HUB_OFFLINE is set: unset it (and log in with `hf auth login` or HF_TOKEN) to push")
        api = HfApi(endpoint=endpoint, token=token)
    version = read_manifest(root)["zoo_version"]
    operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(local)) for p, local in uploads]
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.create_commit(repo_id, operations, commit_message=message or f"DRAKE tiny zoo {version}",
                                 repo_type="model", revision=revision)  # fmt: skip
    except HfHubHTTPError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DrakeError(f"push to model repo {repo_id!r} failed: {first}") from None
    return str(info.commit_url), uploads


def hub_member_folder(
    name: str, *, cache_dir: str | Path | None = None, revision: str | None = None, local_only: bool = False
) -> Path:
    """The local folder of member ``org/repo/member``: downloaded (or found in the HF cache) with
    ``snapshot_download``, then checked against the repo's manifest."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    org, repo, member = name.split("/")
    repo_id = f"{org}/{repo}"
    offline = local_only or constants.is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "0") in ("1", "true")
    try:
        snap = Path(snapshot_download(repo_id, repo_type="model", revision=revision, cache_dir=cache_dir,
                                      allow_patterns=[MANIFEST_NAME, f"{member}/*"], local_files_only=offline))  # fmt: skip
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        hint = " (HF_HUB_OFFLINE is set: download it once online)" if offline else ""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DrakeError(f"cannot fetch zoo member {name!r} from model repo {repo_id!r}: {first}{hint}") from None
    if not (snap / MANIFEST_NAME).is_file():
        raise DataError(f"model repo {repo_id!r} has no {MANIFEST_NAME}: not a DRAKE zoo repo (push one with "
                        "`drake push --zoo REPO`), or load a plain model by its repo id")  # fmt: skip
    manifest = read_manifest(snap)
    entry = manifest["members"].get(member)
    if entry is None:
        raise DataError(f"zoo repo {repo_id!r} has no member {member!r}; members: {', '.join(sorted(manifest['members']))}")
    hint = f"delete the cached snapshot {snap} and download it again"
    return verify_folder(snap / entry["folder"], entry["files"], what=f"zoo repo {repo_id!r}, member {member!r}", hint=hint)
