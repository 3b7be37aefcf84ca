"""Helpers for tests that start tier processes on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tier_argv(*args: str) -> list[str]:
    """`hiertrain-edge ARGS` as a command line."""
    return [sys.executable, "-m", "hiertrain_edge", *args]


def save_train(folder: Path, train) -> Path:
    """Write `train` as the board's data file (float32 x, as a board loads it)."""
    import numpy as np

    path = folder / "train.npz"
    np.savez(path, x=train.x.numpy(), y=train.y.numpy())
    return path


def join_args(edge_at: str, data: Path, out: Path, *extra: str) -> tuple[str, ...]:
    """`join` arguments: a board at `edge_at` (host:port) training on every sample of
    `data`, writing under `out`."""
    return (
        "join",
        edge_at,
        "--data",
        str(data),
        "--test-fraction",
        "0",
        "--out",
        str(out),
        *extra,
    )


def tier_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a tier process: unbuffered output, one torch thread."""
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
        **(env or {}),
    }


def tier_process(
    *args: str, log: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """Start `hiertrain-edge ARGS` as its own process, one torch thread."""
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(
        tier_argv(*args), stdout=out, stderr=subprocess.STDOUT, env=tier_env(env)
    )


def netns_starter(testbed, tmp_path: Path, env: dict[str, str]):
    """A function that starts `hiertrain-edge ARGS` as tier TIER inside the testbed's
    namespace of that name: one torch thread, keys made here, output in TIER.log."""
    from hiertrain_edge.emulate.runner import make_keys

    keys = make_keys(tmp_path / "keys", env)

    def start(tier: str, *args: str) -> subprocess.Popen:
        log = open(tmp_path / f"{tier}.log", "w")  # noqa: SIM115
        argv = tier_argv(*args, "--threads", "1", *keys[tier])
        return testbed.popen(tier, argv, stdout=log, stderr=subprocess.STDOUT, env=env)

    return start


def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
