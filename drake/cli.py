"""The ``drake`` command line: one module per subcommand in drake/commands, registered by one line below.

A command module exposes ``add_parser(subparsers)`` and ``run(args) -> int`` and imports heavy libraries
(torch, datasets) inside ``run`` only, so ``drake --help`` and ``drake list`` stay instant. User errors
(``DrakeError``, a missing file, Ctrl-C) print one ``error: ...`` line on stderr (exit code 2; 130 for
Ctrl-C), never a traceback. Any other exception is a bug or a broken environment: one line naming the
exception, the phase it happened in and how to see more (exit code 1). ``--debug`` (on ``drake``, on every
subcommand and on eval.py) or ``DRAKE_DEBUG=1`` prints the full traceback first.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn

from drake.errors import DrakeError, did_you_mean, where_raised

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
    "study",
)


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage error is one ``error:`` line pointing at --help (exit code 2), with the closest
    option for a mistyped one."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}{option_hint(message, self)} (see `{self.prog} --help`)\n")


def option_hint(message: str, parser: argparse.ArgumentParser) -> str:
    """`` (did you mean '--scenario'?)`` for an "unrecognized arguments: --scenaro ..." message."""
    words = message.removeprefix("unrecognized arguments:").split() if message.startswith("unrecognized") else []
    options = [w.split("=", 1)[0] for w in words if w.startswith("--")]
    return did_you_mean(options[0], parser._option_string_actions) if options else ""


def make_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="drake", description="DRAKE: benchmark and harness for multi-modal personalized FL."
    )
    parser.add_argument("--debug", dest="_debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"drake.commands.{name}")
        sub_parser = module.add_parser(sub) or sub.choices[name]
        sub_parser.set_defaults(_run=module.run, _parser=sub_parser)
        add_debug_argument(sub_parser)
    return parser


DEBUG_HELP = "on an unexpected error, print the full traceback (same as DRAKE_DEBUG=1)"


def add_debug_argument(parser: argparse.ArgumentParser) -> None:
    """``--debug`` on a (sub)command parser, unless it already has one; read it back with ``wants_debug``."""
    if "--debug" not in parser._option_string_actions:
        parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)


def wants_debug(args: argparse.Namespace | None = None) -> bool:
    """``--debug`` given (before or after the subcommand), or DRAKE_DEBUG set to anything but 0/false/no/off."""
    env = os.environ.get("DRAKE_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off")
    return env or bool(getattr(args, "debug", False) or getattr(args, "_debug", False))


def run_phase(method: str, scenario: str) -> str:
    """The phase of ``drake run`` and eval.py, as the one-line message of an unexpected error names it."""
    return f"while running {method} on {scenario}"


def phase_of(args: argparse.Namespace) -> str:
    """What the command was doing, for the one-line message of an unexpected error."""
    if args.command == "run":
        return run_phase(args.method, args.scenario)
    return f"in `drake {args.command}`"


def _fail(message: object, code: int = 2) -> int:
    text = " ".join(str(message).split()) or "unknown error"
    print(f"error: {text}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``drake`` and ``python -m drake``; returns the exit code."""
    parser = make_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # the subcommand's unknown options: its own --help and closest option, not the top level's
            sub = getattr(args, "_parser", parser)
            sub.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed as one line)
        return exc.code if isinstance(exc.code, int) else 2
    run = getattr(args, "_run", None)
    if run is None:
        return _fail(f"choose a command: {', '.join(COMMANDS)} (see `drake --help`)")
    return guarded(lambda: run(args), phase=phase_of(args), debug=wants_debug(args))


def guarded(fn: Callable[[], int | None], *, phase: str = "", debug: bool | None = None) -> int:
    """Run ``fn`` and turn any exception into one ``error:`` line and an exit code.

    User errors (``DrakeError``, a missing file) exit 2, Ctrl-C 130, anything else 1 with the exception's
    type, ``phase`` ("while running fedsim on smoke") and a pointer to ``--debug``. With ``debug`` (default:
    DRAKE_DEBUG) the traceback is printed before the line.
    """
    debug = wants_debug() if debug is None else debug
    try:
        return int(fn() or 0)
    except BrokenPipeError:  # `drake list tasks | head`: the reader left; exit quietly like other tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except DrakeError as exc:
        _traceback(debug)
        return _fail(exc)
    except FileNotFoundError as exc:
        _traceback(debug)
        return _fail(f"{exc.filename}: file not found" if exc.filename else exc)
    except KeyboardInterrupt:
        _traceback(debug)
        return _fail("interrupted", 130)
    except Exception as exc:  # a bug (ours or a library's) or a broken environment: say so in one line
        _traceback(debug)
        where = " ".join(filter(None, (phase, where_raised(exc))))
        where = f" {where}" if where else ""
        detail = " ".join(str(exc).split())
        detail = f": {detail[:300]}{'...' if len(detail) > 300 else ''}" if detail else ""
        more = "traceback above" if debug else "rerun with --debug or DRAKE_DEBUG=1 for the traceback"
        return _fail(f"unexpected {type(exc).__name__}{where}{detail} ({more})", 1)


def _traceback(debug: bool) -> None:
    if debug:
        traceback.print_exc(file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
