"""The `hiertrain-edge` entry point: collects the subcommands and turns errors into one line."""

from __future__ import annotations

import argparse
import importlib
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level, getattr(args, "tier", args.command), args.log_format)
    set_threads(getattr(args, "threads", None))
    try:
        return int(args.func(args) or 0)
    except HierTrainError as exc:
        print(f"hiertrain-edge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hiertrain-edge {args.command}: interrupted", file=sys.stderr)
        return 130
