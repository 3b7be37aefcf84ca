"""Tiers killed with SIGKILL at random moments come back and training ends exactly as an
uninterrupted run would."""

from __future__ import annotations

import random
import signal
import time

import pytest
import torch
from tierprocs import free_port, join_args, save_train, stop, tier_process

from hiertrain_edge.runtime.checkpoint import load_model_file
from hiertrain_edge.runtime.demo import write_job_file
from hiertrain_edge.runtime.job import job_from_dict
from hiertrain_edge.runtime.reference import train_reference

KILLS = 20
STEPS = 120
REL_TOL = 1e-5


@pytest.mark.parametrize(
    "fallback", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["waits", "alone"]
)
def test_chaos_kill_every_tier_and_resume(tmp_path, mnist, fallback):
    """`fallback` False: a board that loses the edge waits for it; True: it trains alone
    meanwhile and hands its state to the restarted edge, so fewer kills fit in the run."""
    rng = random.Random(11)
    train = mnist.subset(0, 480)
    data = save_train(tmp_path, train)
    settings = {
        # SGD with momentum, whose state moves with every rollback. A low rate: the edge
        # sums two groups' gradients before the board adds its own, an order one process
        # does not reproduce, and at lr 0.005 that rounding grew to 2e-5 over the run.
        "model": "small_cnn",
        "batch_size": 48,
        "steps": STEPS,
        "optimizer": "sgd",
        "lr": 0.001,
        "momentum": 0.5,
        "seed": 6,
        "checkpoint_every": 1,
        "step_timeout_s": 8.0,
        "rejoin_patience_s": 120.0,
        # Waiting for a lost edge, the board leaves steps for all 20 kills; training alone
        # it races through the steps while the edge restarts (see tests/runtime/
        # test_device_alone.py for that path in detail).
        "device_fallback": fallback,
        "schedule": {
            "groups": [
                {"n": 16, "cuts": [6, 6]},
                {"n": 16, "cuts": [2, 6]},
                {"n": 16, "cuts": [2, 4]},
            ]
        },
    }
    job = write_job_file(tmp_path / "job.toml", settings)
    cloud_port, edge_port = free_port(), free_port()
    commands = {
        "cloud": ["cloud", "--listen", f"tcp://127.0.0.1:{cloud_port}", "--threads", "1"],
        "edge": [
            "serve",
            "--job",
            str(job),
            "--listen",
            f"tcp://127.0.0.1:{edge_port}",
            "--cloud",
            f"127.0.0.1:{cloud_port}",
            "--out",
            str(tmp_path / "edge"),
            "--once",
            "--threads",
            "1",
        ],
        "device": [
            *join_args(f"127.0.0.1:{edge_port}", data, tmp_path / "device"),
            "--board-id",
            "chaos-board",
            "--threads",
            "1",
        ],
    }
    logs = {name: tmp_path / f"{name}.log" for name in commands}
    restarts = dict.fromkeys(commands, 0)

    def start(name: str):
        restarts[name] += 1
        log = logs[name].with_suffix(f".{restarts[name]}.log")
        return tier_process(*commands[name], log=log)

    checkpoint = tmp_path / "edge" / "checkpoint.pt"

    def progressed_since(mark: float) -> bool:
        return checkpoint.exists() and checkpoint.stat().st_mtime > mark

    procs = {name: start(name) for name in commands}
    kills = []
    try:
        deadline = time.monotonic() + 900
        mark = 0.0
        while procs["device"].poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            if len(kills) >= KILLS or not progressed_since(mark):
                continue
            # Training is moving again (the edge wrote a step's checkpoint): strike at a
            # random moment of one of the next steps. Soon, so that all the kills fit in the
            # run where steps are fast.
            time.sleep(rng.uniform(0.0, 0.1))
            if procs["device"].poll() is not None:
                break  # the run ended meanwhile (and the edge with it): nothing to restart
            mark = time.time()
            name = rng.choice(sorted(commands))
            procs[name].send_signal(signal.SIGKILL)
            procs[name].wait()
            kills.append(name)
            procs[name] = start(name)
        assert procs["device"].wait(timeout=max(1, deadline - time.monotonic())) == 0
    finally:
        for p in procs.values():
            stop(p)
    print(f"chaos: {len(kills)} kills: {', '.join(kills)}")
    if fallback:
        assert "edge" in kills
    else:
        assert len(kills) == KILLS
        assert set(kills) == {"device", "edge", "cloud"}

    # One process with the batch in the run's three groups (a board alone runs one; at
    # this rate the two agree to 4e-8): the weights of an uninterrupted run.
    hybrid = load_model_file(tmp_path / "device" / "model.pt")
    torch.set_num_threads(1)
    job = job_from_dict(settings)
    reference = train_reference(job, train, STEPS, [16, 16, 16]).state_dict()
    for key, want in reference.items():
        err = float((hybrid["state"][key] - want).norm() / want.norm())
        assert err <= REL_TOL, f"{key}: relative error {err:.2e}"
