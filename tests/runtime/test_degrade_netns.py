"""The edge<->cloud link is cut (both veth ends down, as when a cable is pulled) for longer
than the liveness bound: the board trains on without the cloud and uses it again once the
link is back. Real TCP between three network namespaces, CurveZMQ on."""

from __future__ import annotations

import time

import pytest
from degrade_checks import (
    LIVENESS_S,
    SETTINGS,
    SILENT_S,
    check_cloud_lost_and_back,
    wait_for_checkpoints,
)
from tierprocs import join_args, netns_starter, save_train, stop, tier_env

from hiertrain_edge.runtime.demo import write_job_file

pytestmark = pytest.mark.netns

CLOUD_PORT, EDGE_PORT = 47920, 47910
NETNS_STEPS = 160


def test_link_cut_without_cloud_then_readmit(tmp_path, mnist, netns_testbed):
    tb = netns_testbed
    train = mnist.subset(0, 480)
    data = save_train(tmp_path, train)
    # Steps over veth and CurveZMQ are slow enough that fewer leave the cloud time to return.
    job = write_job_file(tmp_path / "job.toml", {**SETTINGS, "steps": NETNS_STEPS})
    env = tier_env({"HIERTRAIN_EDGE_LIVENESS_S": str(LIVENESS_S)})
    start = netns_starter(tb, tmp_path, env)
    report = tmp_path / "report.json"

    cloud_at = tb.address("cloud")
    cloud = start("cloud", "cloud", "--listen", f"tcp://{cloud_at}:{CLOUD_PORT}")
    edge = start(
        "edge",
        "serve",
        "--job",
        str(job),
        "--listen",
        f"tcp://{tb.address('edge')}:{EDGE_PORT}",
        "--cloud",
        f"{cloud_at}:{CLOUD_PORT}",
        "--once",
        "--out",
        str(tmp_path / "edge"),
    )
    edge_at = f"{tb.address('edge')}:{EDGE_PORT}"
    board = start(
        "device", *join_args(edge_at, data, tmp_path / "device", "--report", str(report))
    )
    try:
        deadline = time.monotonic() + 300
        wait_for_checkpoints(tmp_path / "edge" / "checkpoint.pt", deadline)
        tb.set_link("ec", up=False)
        cut = time.monotonic()
        time.sleep(SILENT_S)
        tb.set_link("ec", up=True)
        assert board.wait(timeout=max(1, deadline - time.monotonic())) == 0
    finally:
        for p in (board, edge, cloud):
            stop(p)
    assert time.monotonic() - cut > SILENT_S
    check_cloud_lost_and_back(tmp_path, train, report, NETNS_STEPS)
