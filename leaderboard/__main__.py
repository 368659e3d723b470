"""``python -m leaderboard submit|build|push ...``: the same as ``drake submit`` / ``drake leaderboard build`` /
``drake push``, without loading the other ``drake`` commands (so no torch import)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from drake.cli import OneLineErrorParser, guarded

    args = list(sys.argv[1:] if argv is None else argv)
    parser = OneLineErrorParser(prog="python -m leaderboard", description="DRAKE leaderboard: submit, build, push.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in ("submit", "leaderboard", "push"):
        module = importlib.import_module(f"drake.commands.{name}")
        (module.add_parser(sub) or sub.choices[name]).set_defaults(_run=module.run)
    if args and args[0] == "build":
        args = ["leaderboard", *args]
    try:
        ns = parser.parse_args(args)
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed as one line)
        return exc.code if isinstance(exc.code, int) else 2
    if getattr(ns, "_run", None) is None:
        print(
            "error: choose a command: submit, build, push (see `python -m leaderboard --help`)",
            file=sys.stderr,
        )
        return 2
    return guarded(lambda: ns._run(ns))


if __name__ == "__main__":
    sys.exit(main())
