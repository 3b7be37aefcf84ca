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


def add_checkpoints(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        metavar="STEPS",
        help="price the job's snapshot every STEPS steps in each step, SGD with momentum "
        "(a job's checkpoint_every, 50 by default; the edge prices its job's own); "
        "default 0: not priced",
    )
    p.add_argument(
        "--no-mirror",
        action="store_true",
        help="with --checkpoint-every: the job has device_fallback = false (no mirror)",
    )


def checkpoints(args: argparse.Namespace):
    """The cost model's Checkpoints for --checkpoint-every / --no-mirror, or None."""
    from hiertrain_edge.errors import ConfigError
    from hiertrain_edge.planning.cost import Checkpoints

    if args.checkpoint_every < 0:
        raise ConfigError(f"--checkpoint-every must be >= 0 steps, got {args.checkpoint_every}")
    if not args.checkpoint_every:
        if args.no_mirror:
            raise ConfigError("--no-mirror needs --checkpoint-every STEPS (> 0): no snapshot")
        return None
    return Checkpoints(args.checkpoint_every, opt_copies=1, mirror=not args.no_mirror)


def describe_checkpoints(ck: dict | None) -> str:
    """One line on whether and how a plan or table priced the job's snapshot."""
    if not ck:
        return "snapshot: not priced (--checkpoint-every to price it)"
    mirror = "with the board's mirror" if ck["mirror"] else "no mirror"
    return (
        f"snapshot: every {ck['every']} steps, {mirror}, {ck['opt_copies']} optimizer "
        "tensor(s) per parameter, priced per step"
    )
