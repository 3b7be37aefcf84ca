"""The `hiertrain-edge` entry point: collects the subcommands and turns errors into one line."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence

from hiertrain_edge import __version__
from hiertrain_edge.cli.common import set_threads
from hiertrain_edge.cli.logs import add_log_options, setup_logging
from hiertrain_edge.errors import HierTrainError

# Each module defines register(subparsers); its parsers set `func` and `tier`.
COMMAND_MODULES = (
    "hiertrain_edge.cli.train",
    "hiertrain_edge.cli.plan",
    "hiertrain_edge.cli.table",
    "hiertrain_edge.cli.keys",
    "hiertrain_edge.cli.status",
    "hiertrain_edge.cli.timeline",
    "hiertrain_edge.cli.emulate",
    "hiertrain_edge.cli.export",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hiertrain-edge",
        description="Train one model together on a board, an edge PC and a cloud server.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_log_options(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for p in sub.choices.values():
        add_log_options(p, subcommand=True)
    _note_parsers(parser)
    return parser


def _note_parsers(parser: argparse.ArgumentParser) -> None:
    """Give every (sub)command's parser itself as a default, so that an unknown flag is
    reported with that command's usage: the innermost command's default wins."""
    parser.set_defaults(command_parser=parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _note_parsers(sub)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _run(argv)
    except BrokenPipeError:
        # The reader of stdout went away (`... | head`): stop quietly, as a Unix tool killed
        # by SIGPIPE does. Point stdout at /dev/null so that the flush at interpreter exit
        # does not raise again (the Python docs' note on SIGPIPE, module `signal`).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    # argparse reports flags no parser took with the top-level usage; the command's own
    # usage says what that command accepts.
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    setup_logging(args.log_level, getattr(args, "tier", args.command), args.log_format)
    set_threads(getattr(args, "threads", None))
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not after main has returned
        return status
    except HierTrainError as exc:
        print(f"hiertrain-edge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hiertrain-edge {args.command}: interrupted", file=sys.stderr)
        return 130
