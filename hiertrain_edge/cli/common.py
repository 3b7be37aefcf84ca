"""Options several subcommands share."""

from __future__ import annotations

import argparse


def add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch threads for this tier (default: torch's choice)",
    )


def set_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)
