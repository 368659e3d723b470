"""The ``drake`` command line: one module per subcommand in drake/commands, registered by one line below.

A command module exposes ``add_parser(subparsers)`` and ``run(args) -> int`` and imports heavy libraries
(torch, datasets) inside ``run`` only, so ``drake --help`` and ``drake list`` stay instant. User errors
(``DrakeError``, a missing file, Ctrl-C) print one ``error: ...`` line on stderr, never a traceback
(set DRAKE_DEBUG=1 to see it).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from drake.errors import DrakeError

# One line per subcommand: the module drake.commands.<name>.
COMMANDS: tuple[str, ...] = (
    "list",
    "validate",
    "build",
    "audit",
    "pretrain",
    "run",
    "submit",
    "leaderboard",
    "push",
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one ``error:`` line pointing at --help (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="drake", description="DRAKE: benchmark and harness for multi-modal personalized FL."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"drake.commands.{name}")
        sub_parser = module.add_parser(sub) or sub.choices[name]
        sub_parser.set_defaults(_run=module.run)
    return parser


def _fail(message: object, code: int = 2) -> int:
    text = " ".join(str(message).split()) or "unknown error"
    print(f"error: {text}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``drake`` and ``python -m drake``; returns the exit code."""
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed as one line)
        return exc.code if isinstance(exc.code, int) else 2
    run = getattr(args, "_run", None)
    if run is None:
        return _fail(f"choose a command: {', '.join(COMMANDS)} (see `drake --help`)")
    return guarded(lambda: run(args))


def guarded(fn: Callable[[], int | None]) -> int:
    """Run ``fn`` and turn user errors into one ``error:`` line and an exit code (no traceback)."""
    debug = bool(os.environ.get("DRAKE_DEBUG"))
    try:
        return int(fn() or 0)
    except DrakeError as exc:
        if debug:
            raise
        return _fail(exc)
    except FileNotFoundError as exc:
        if debug:
            raise
        return _fail(f"{exc.filename}: file not found" if exc.filename else exc)
    except KeyboardInterrupt:
        if debug:
            raise
        return _fail("interrupted", 130)
    except BrokenPipeError:  # `drake list tasks | head`: the reader left; exit quietly like other tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141

if __name__ == "__main__":
    sys.exit(main())
