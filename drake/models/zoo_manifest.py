"""The shipped zoo: the canonical pre-trained weights inside the package, every file pinned by sha256.

Why: pre-training is reproducible on one machine but not across machines, so a zoo that every machine trains
for itself gives every user different models and incomparable numbers. The zoo therefore ships as package data
(``drake/models/zoo_weights/<member>/``: config, safetensors, processor files and the pre-training record)
with ``manifest.json`` listing each file's sha256, the zoo version, each member's spec and recipe, its
held-out accuracy and the commands that made it. ``load_model("tiny-llama-m")`` reads these files after
checking their hashes and never pre-trains; ``drake pretrain`` writes to the cache (``models_home()``) only.

Imports no torch: ``drake list models`` reads this module.

    python -m drake.models.zoo_manifest verify                      # check every shipped file
    python -m drake.models.zoo_manifest ship --zoo-version 4.0      # copy the cache's members in (maintainers)
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import platform
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from drake.errors import DataError, DrakeError
from drake.io import atomic_write_json, sha256_file
from drake.models.folders import META_FILE

SHIPPED_DIR = Path(__file__).resolve().parent / "zoo_weights"
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
WEIGHTS = "model.safetensors"
VOCAB_FILE = Path(__file__).resolve().parent / "vocab.txt"  # tokenizer.VOCAB_FILE, without the import


class ZooIntegrityError(DataError):
    """A shipped zoo file is missing or differs from the sha256 its manifest pins."""


def _restore_hint(path: Path) -> str:
    """How to get the pinned bytes back: git in a checkout, a reinstall otherwise."""
    from drake.paths import REPO_ROOT, in_checkout

    if in_checkout() and path.is_relative_to(REPO_ROOT):
        return f"restore it with `git checkout -- {path.relative_to(REPO_ROOT).as_posix()}`"
    return "restore it by reinstalling the package (`pip install --force-reinstall drake-bench`)"


# ------------------------------------------------------------------------------------------------ reading


def manifest_path(root: str | Path | None = None) -> Path:
    return Path(root or SHIPPED_DIR) / MANIFEST_NAME


def read_manifest(root: str | Path | None = None) -> dict[str, Any]:
    """The zoo manifest of ``root`` (default: the shipped zoo); a missing or broken one is a ZooIntegrityError."""
    path = manifest_path(root)
    try:
        stat = path.stat()
        return _read_manifest_cached(str(path), stat.st_mtime_ns, stat.st_size)
    except FileNotFoundError:
        raise ZooIntegrityError(f"{path}: the zoo manifest is missing; {_restore_hint(path)}") from None
    except (OSError, ValueError) as exc:
        raise ZooIntegrityError(f"{path}: unreadable zoo manifest ({exc}); {_restore_hint(path)}") from None


@functools.lru_cache(maxsize=8)
def _read_manifest_cached(path: str, _mtime_ns: int, _size: int) -> dict[str, Any]:
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("members"), dict):
        raise ValueError("expected a mapping with 'members'")
    return data


def shipped_names() -> list[str]:
    """Members (and the shared tower) the package ships weights for; [] when nothing ships."""
    try:
        return sorted(read_manifest()["members"])
    except ZooIntegrityError:
        return []


def member_entry(name: str, root: str | Path | None = None) -> dict[str, Any] | None:
    """The manifest entry of a shipped member (None: not shipped)."""
    try:
        return read_manifest(root)["members"].get(name)
    except ZooIntegrityError:
        if root is None and not manifest_path().parent.exists():
            return None  # a package built without weights: nothing ships
        raise


@functools.lru_cache(maxsize=256)
def _hash_cached(path: str, _mtime_ns: int, _size: int) -> str:
    return sha256_file(path)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, cached per process until the file changes (size or mtime)."""
    stat = os.stat(path)
    return _hash_cached(str(path), stat.st_mtime_ns, stat.st_size)


def verify_folder(folder: Path, files: Mapping[str, str], *, what: str, hint: str | None = None) -> Path:
    """Check every file of ``files`` ({relative path: sha256}) under ``folder``; one-line error on the first
    missing or changed one (``hint``: how to restore it; default git or reinstall)."""
    for rel, expected in sorted(files.items()):
        path = folder / rel
        if not path.is_file():
            raise ZooIntegrityError(f"{path}: missing ({what}); {hint or _restore_hint(path)}")
        got = file_sha256(path)
        if got != expected:
            raise ZooIntegrityError(
                f"{path}: sha256 {got[:12]}... is not the {expected[:12]}... its manifest pins ({what}); "
                f"{hint or _restore_hint(path)}"
            )
    return folder


def verify_member(name: str, root: str | Path | None = None) -> Path:
    """The folder of shipped member ``name``, after checking every file against the manifest."""
    base = Path(root or SHIPPED_DIR)
    entry = member_entry(name, root)
    if entry is None:
        raise DataError(f"{name!r} is not in the shipped zoo ({manifest_path(root)}); shipped: {shipped_names()}")
    version = read_manifest(root).get("zoo_version")
    return verify_folder(base / entry["folder"], entry["files"], what=f"shipped zoo {version}, member {name!r}")


def verify_all(root: str | Path | None = None) -> dict[str, Path]:
    """Every shipped member's folder, each checked (the first bad file raises)."""
    return {name: verify_member(name, root) for name in sorted(read_manifest(root)["members"])}


def shipped_path(name: str) -> Path | None:
    """The verified folder of a shipped member, or None when ``name`` does not ship."""
    return verify_member(name) if member_entry(name) is not None else None


def shipped_info(name_or_path: str | Path) -> dict[str, Any] | None:
    """Zoo provenance for a result file: ``{"zoo_version", "zoo_sha256", "member", "sha256", "shipped"}``.

    A zoo name gives its shipped entry. A model folder holding ``model.safetensors`` (the shipped folder, a
    cache folder from ``drake pretrain``, a hub snapshot) is hashed: ``shipped`` is True exactly when its bytes
    are those of a shipped member. ``sha256`` is the sha256 of ``model.safetensors``. None for anything else
    (a hub id not on disk, a sharded checkpoint).
    """
    try:
        manifest = read_manifest()
    except ZooIntegrityError:
        manifest = {"members": {}}
    by_sha = {e["files"][WEIGHTS]: n for n, e in manifest["members"].items() if WEIGHTS in e.get("files", {})}

    def info(member: str | None, sha: str, shipped: bool) -> dict[str, Any]:
        return {
            "zoo_version": manifest.get("zoo_version") if shipped else None,
            "zoo_sha256": manifest.get("zoo_sha256") if shipped else None,
            "member": member,
            "sha256": sha,
            "shipped": shipped,
        }

    name = str(name_or_path)
    if name in manifest["members"]:
        return info(name, manifest["members"][name]["files"][WEIGHTS], True)
    folder = Path(name).expanduser()
    if not (folder / WEIGHTS).is_file():
        return None
    sha = file_sha256(folder / WEIGHTS)
    if sha in by_sha:
        return info(by_sha[sha], sha, True)
    meta_file = folder / META_FILE
    member = json.loads(meta_file.read_text()).get("name") if meta_file.is_file() else None
    return info(member, sha, False)


def is_stale(name: str, entry: Mapping[str, Any] | None = None) -> bool | None:
    """True when the zoo's spec/recipe of ``name`` or the vocabulary changed since it shipped (the shipped
    weights then no longer follow the code's recipe: re-train and re-ship); None when ``name`` is not a
    registered member (the shared tower) or not shipped. Torch-free: compares the recorded spec and vocab hash."""
    from drake.models.zoo import ZOO

    entry = entry if entry is not None else member_entry(name)
    if name not in ZOO or entry is None:
        return None
    spec = ZOO[name].to_dict()
    shipped = {**entry.get("spec", {}), "recipe": entry.get("recipe"), "tower": entry.get("tower_spec")}
    vocab = sha256_file(VOCAB_FILE) != read_manifest()["recipe"].get("vocab_sha256")
    return vocab or shipped != spec


# ------------------------------------------------------------------------------------------------ shipping


def _files_of(folder: Path) -> list[str]:
    """Every regular file of a member folder (relative, sorted), temp and hidden files left out."""
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def ship(
    sources: Mapping[str, str | Path],
    *,
    zoo_version: str,
    command: str,
    out: str | Path | None = None,
    notes: str = "",
) -> dict[str, Any]:
    """Copy pre-trained member folders (``{name: cache folder}``) into ``out`` (default: the shipped zoo) and
    write its manifest; returns the manifest. Maintainers only: this replaces the canonical weights."""
    base = Path(out or SHIPPED_DIR)
    base.mkdir(parents=True, exist_ok=True)
    from drake.models.zoo import ZOO

    members: dict[str, Any] = {}
    for name, src in sorted(sources.items()):
        src = Path(src)
        meta_file = src / META_FILE
        if not (src / WEIGHTS).is_file() or not meta_file.is_file():
            raise DataError(f"{src}: not a pre-trained member folder (needs {WEIGHTS} and {META_FILE})")
        meta = json.loads(meta_file.read_text())
        dest = base / name
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        files = {}
        for rel in _files_of(src):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, dest / rel)
            files[rel] = sha256_file(dest / rel)
        spec = meta.get("spec", {})
        members[name] = {
            "folder": name,
            "role": "member" if name in ZOO else "tower",
            "cache_key": meta.get("cache_key"),
            "source_folder": src.name,
            "tower": meta["tower"].rsplit("-", 1)[0] if meta.get("tower") else None,
            "family": spec.get("family"),
            "text_layers": spec.get("text_layers"),
            "text_hidden": spec.get("text_hidden"),
            "spec": {k: v for k, v in spec.items() if k not in ("recipe", "tower")},
            "recipe": spec.get("recipe"),
            "tower_spec": spec.get("tower"),
            "parameters": meta.get("parameters"),
            "heldout_accuracy": meta.get("heldout_accuracy"),
            "train_seconds": meta.get("train_seconds"),
            "sha256": files[WEIGHTS],
            "files": files,
        }
    from drake.spec import fingerprint

    any_meta = json.loads((Path(next(iter(sources.values()))) / META_FILE).read_text())
    manifest = {
        "format": MANIFEST_FORMAT,
        "zoo_version": zoo_version,
        "zoo_sha256": fingerprint({n: m["files"] for n, m in members.items()}),
        "created": dt.date.today().isoformat(),
        "command": command,
        "shipped_with": "python -m drake.models.zoo_manifest ship --zoo-version " + zoo_version,
        "notes": notes,
        "recipe": {
            "versions": any_meta.get("versions"),
            "threads": any_meta.get("threads"),
            "vocab_sha256": sha256_file(VOCAB_FILE),
            "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                        "python": platform.python_version()},  # fmt: skip
        },
        "members": members,
    }
    atomic_write_json(manifest_path(base), manifest)
    manifest_path(base).chmod(0o644)  # a temp file's 0600 would make an installed copy unreadable to others
    return manifest


# ------------------------------------------------------------------------------------------------ CLI


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m drake.models.zoo_manifest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("verify", help="check every shipped file against the manifest")
    s = sub.add_parser("ship", help="copy the cache's pre-trained members in as the shipped zoo (maintainers)")
    s.add_argument("--zoo-version", required=True, help="the new zoo version, e.g. 4.0")
    s.add_argument("--command", default="drake pretrain", dest="made_by", help="the command that trained them")
    s.add_argument("--notes", default="", help="a line for the manifest (where and when)")
    args = p.parse_args(argv)
    try:
        if args.command == "verify":
            folders = verify_all()
            manifest = read_manifest()
            print(f"zoo {manifest['zoo_version']}: {len(folders)} members, every file matches its sha256")
            return 0
        from drake.models.folders import cached_path, is_cached
        from drake.models.zoo import ZOO

        sources = {}
        for name in sorted(ZOO):
            spec = ZOO[name]
            for s_ in (spec, spec.tower):
                if s_ is not None and not is_cached(cached_path(s_)):
                    raise DataError(f"{s_.name} is not pre-trained in {cached_path(s_)}; run `drake pretrain`")
                if s_ is not None:
                    sources[s_.name] = cached_path(s_)
        manifest = ship(sources, zoo_version=args.zoo_version, command=args.made_by, notes=args.notes)
        print(f"shipped zoo {manifest['zoo_version']} ({len(sources)} folders) to {SHIPPED_DIR}")
        return 0
    except DrakeError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
