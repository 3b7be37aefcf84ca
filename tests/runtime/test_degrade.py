"""A cloud that falls silent is declared lost within the liveness bound; the board trains
on without it and takes the cloud back when it answers again.

The same checks run on a cut veth link in test_degrade_netns.py, in the default run;
this frozen-process variant runs with the slow suites."""

from __future__ import annotations

import signal
import time

import pytest
from degrade_checks import (
    LIVENESS_S,
    SETTINGS,
    SILENT_S,
    check_cloud_lost_and_back,
    wait_for_checkpoints,
)
from tierprocs import free_port, join_args, save_train, stop, tier_process

from hiertrain_edge.runtime.demo import write_job_file


@pytest.mark.slow
def test_degrade_without_cloud_then_readmit(tmp_path, mnist):
    train = mnist.subset(0, 480)
    data = save_train(tmp_path, train)
    job = write_job_file(tmp_path / "job.toml", SETTINGS)
    cloud_port, edge_port = free_port(), free_port()
    env = {"HIERTRAIN_EDGE_LIVENESS_S": str(LIVENESS_S)}
    report = tmp_path / "report.json"
    cloud = tier_process(
        "cloud",
        "--listen",
        f"tcp://127.0.0.1:{cloud_port}",
        "--threads",
        "1",
        log=tmp_path / "cloud.log",
        env=env,
    )
    edge = tier_process(
        "serve",
        "--job",
        str(job),
        "--listen",
        f"tcp://127.0.0.1:{edge_port}",
        "--cloud",
        f"127.0.0.1:{cloud_port}",
        "--once",
        "--threads",
        "1",
        "--out",
        str(tmp_path / "edge"),
        log=tmp_path / "edge.log",
        env=env,
    )
    board = tier_process(
        *join_args(f"127.0.0.1:{edge_port}", data, tmp_path / "device", "--report", str(report)),
        "--threads",
        "1",
        log=tmp_path / "device.log",
        env=env,
    )
    try:
        deadline = time.monotonic() + 300
        wait_for_checkpoints(tmp_path / "edge" / "checkpoint.pt", deadline)
        cloud.send_signal(signal.SIGSTOP)  # the cloud freezes: no replies, no heartbeats
        stopped = time.monotonic()
        time.sleep(SILENT_S)
        cloud.send_signal(signal.SIGCONT)
        assert board.wait(timeout=max(1, deadline - time.monotonic())) == 0
    finally:
        for p in (board, edge, cloud):
            stop(p)
    assert time.monotonic() - stopped > SILENT_S
    check_cloud_lost_and_back(tmp_path, train, report)
