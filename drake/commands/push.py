"""``drake push --repo ID``: upload a DRAKE-synth build and/or the leaderboard to a Hugging Face dataset repo;
``drake push --zoo ID``: upload the shipped model zoo to a model repo (``load_model("ID/tiny-llama-m")``)."""

from __future__ import annotations

import argparse
from typing import Any

from drake.commands import add_board_arguments, existing_board

DEFAULT_MESSAGE = "Upload DRAKE data/leaderboard"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "push", help="upload a built DRAKE-synth directory and/or the leaderboard (or --zoo: the models) to the Hub"
    )
    p.add_argument("--repo", metavar="ID", help="dataset repo id for --data/--leaderboard, e.g. you/drake-synth")
    p.add_argument("--zoo", metavar="ID", help="model repo id to upload the shipped zoo to, e.g. you/drake-zoo "
                   "(every file checked against its sha256 first)")  # fmt: skip
    p.add_argument("--data", nargs="?", const="", default=None, metavar="DIR",
                   help="a built data directory (alone: the default build, scale 1, 32 px, seed 0)")  # fmt: skip
    p.add_argument(
        "--leaderboard", action="store_true", help="the accepted results plus the site rebuilt from them"
    )
    add_board_arguments(p, tasks_file=False)
    p.add_argument(
        "--private", action="store_true", help="create the repo private (when it does not exist yet)"
    )
    p.add_argument("--revision", metavar="BRANCH", help="branch to commit to (default: main)")
    p.add_argument("--endpoint", metavar="URL", help="Hub endpoint (default: HF_ENDPOINT or huggingface.co)")
    p.add_argument("--message", default=DEFAULT_MESSAGE, help="commit message")
    p.add_argument(
        "--dry-run", action="store_true", help="verify and list what would be uploaded, upload nothing"
    )
    return p


def run(args: argparse.Namespace) -> int:
    import tempfile

    from drake.commands import table
    from drake.errors import DrakeError
    from leaderboard.push import data_files, leaderboard_files, push

    for option, repo in (("--repo", args.repo), ("--zoo", args.zoo)):
        _check_repo_id(option, repo)
    if args.zoo:
        return _push_zoo(args)
    if args.data is None and not args.leaderboard:
        raise DrakeError(
            "nothing to push: give --repo ID with --data [DIR] and/or --leaderboard, or --zoo ID (see `drake push --help`)"
        )
    if not args.repo:
        raise DrakeError("--data/--leaderboard need --repo ID (the dataset repo to upload to)")
    with tempfile.TemporaryDirectory(prefix="drake-push-") as staging:
        uploads = []
        if args.data is not None:
            from drake.data.build import default_data_dir

            uploads += data_files(args.data or default_data_dir())
        if args.leaderboard:
            uploads += leaderboard_files(existing_board(args.board), staging, min_seeds=args.min_seeds)
        size = sum(u.local.stat().st_size for u in uploads)
        if args.dry_run:
            print(
                table(("path in repo", "bytes"), [(u.path_in_repo, u.local.stat().st_size) for u in uploads])
            )
            print(f"dry run: {len(uploads)} files, {size} bytes would go to dataset repo {args.repo}")
            return 0
        url = push(args.repo, uploads, endpoint=args.endpoint, private=args.private or None,
                   revision=args.revision, message=args.message)  # fmt: skip
    print(f"pushed {len(uploads)} files ({size} bytes) to dataset repo {args.repo}: {url}")
    return 0


def _check_repo_id(option: str, repo: str | None) -> None:
    """A repo id the Hub would refuse, refused before anything is verified or staged (dry runs included)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    from drake.errors import DrakeError

    if repo is None:
        return
    try:
        validate_repo_id(repo)
    except HFValidationError as exc:
        why = str(exc).split(": '")[0]  # the Hub's rule, without the id repeated
        raise DrakeError(f"{option} {repo!r}: not a Hub repo id ({why}); e.g. you/drake-synth") from None


def _push_zoo(args: argparse.Namespace) -> int:
    import tempfile

    from drake.commands import table
    from drake.errors import DrakeError
    from drake.models.zoo_hub import push_zoo, zoo_uploads

    if args.repo or args.data is not None or args.leaderboard:
        raise DrakeError("--zoo pushes the models alone: push data and the leaderboard with a separate --repo call")
    with tempfile.TemporaryDirectory(prefix="drake-push-zoo-") as staging:
        if args.dry_run:
            uploads = zoo_uploads(staging)
            print(table(("path in repo", "bytes"), [(p, f.stat().st_size) for p, f in uploads]))
            size = sum(f.stat().st_size for _, f in uploads)
            print(f"dry run: {len(uploads)} files, {size} bytes would go to model repo {args.zoo}")
            return 0
        message = None if args.message == DEFAULT_MESSAGE else args.message
        url, uploads = push_zoo(args.zoo, staging, endpoint=args.endpoint, private=args.private or None,
                                revision=args.revision, message=message)  # fmt: skip
        size = sum(f.stat().st_size for _, f in uploads)
    print(f"pushed {len(uploads)} files ({size} bytes) to model repo {args.zoo}: {url}")
    return 0
