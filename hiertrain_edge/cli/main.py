"""The `hiertrain-edge` entry point: collects the subcommands and turns errors into one line."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from hiertrain_edge import __version__
from hiertrain_edge.cli.common import set_threads
from hiertrain_edge.errors import HierTrainError

# Each module defines register(subparsers); its parsers set `func` and `tier`.
COMMAND_MODULES = (
    "hiertrain_edge.cli.train",
    "hiertrain_edge.cli.emulate",
    "hiertrain_edge.cli.export",
)


def _setup_logging(level: str, tier: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format=f"%(asctime)s %(levelname)s [{tier}] %(name)s: %(message)s",
        stream=sys.stderr,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hiertrain-edge",
        description="Train one model together on a board, an edge PC and a cloud server.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.log_level, getattr(args, "tier", args.command))
    set_threads(getattr(args, "threads", None))
    try:
        return int(args.func(args) or 0)
    except HierTrainError as exc:
        print(f"hiertrain-edge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hiertrain-edge {args.command}: interrupted", file=sys.stderr)
        return 130
