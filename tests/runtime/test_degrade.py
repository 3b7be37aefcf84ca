"""A cloud that falls silent is declared lost within the liveness bound; the board trains
on without it and takes the cloud back when it answers again."""

from __future__ import annotations

import json
import signal
import time

import numpy as np
import torch
from tierprocs import free_port, regrouping_noise, stop, tier_process

from hiertrain_edge.planning.schedule import Schedule
from hiertrain_edge.runtime.checkpoint import load_model_file
from hiertrain_edge.runtime.demo import write_job_file
from hiertrain_edge.runtime.job import job_from_dict
from hiertrain_edge.runtime.reference import train_reference

STEPS = 160
NOISE_FLOOR = 2e-6  # the run must not be chaotic (see regrouping_noise)
LIVENESS_S = 3.0
SILENT_S = 2 * LIVENESS_S  # the cloud stays silent well past the bound


def test_degrade_without_cloud_then_readmit(tmp_path, mnist):
    train = mnist.subset(0, 480)
    data = tmp_path / "train.npz"
    np.savez(data, x=train.x.numpy(), y=train.y.numpy())
    settings = {
        "model": "small_cnn",
        "batch_size": 48,
        "steps": STEPS,
        "optimizer": "sgd",
        "lr": 0.005,
        "momentum": 0.5,
        "seed": 6,
        "checkpoint_every": 2,
        "step_timeout_s": 60.0,
        "schedule": {"groups": [{"n": 24, "cuts": [2, 4]}, {"n": 24, "cuts": [6, 6]}]},
    }
    job = write_job_file(tmp_path / "job.toml", settings)
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
        "join",
        f"127.0.0.1:{edge_port}",
        "--data",
        str(data),
        "--test-fraction",
        "0",
        "--out",
        str(tmp_path / "device"),
        "--report",
        str(report),
        "--threads",
        "1",
        log=tmp_path / "device.log",
        env=env,
    )
    checkpoint = tmp_path / "edge" / "checkpoint.pt"
    try:
        deadline = time.monotonic() + 300
        while not checkpoint.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        first = checkpoint.stat().st_mtime
        while checkpoint.stat().st_mtime == first and time.monotonic() < deadline:
            time.sleep(0.1)  # a few steps ran with the cloud
        cloud.send_signal(signal.SIGSTOP)  # the cloud freezes: no replies, no heartbeats
        stopped = time.monotonic()
        time.sleep(SILENT_S)
        cloud.send_signal(signal.SIGCONT)
        assert board.wait(timeout=max(1, deadline - time.monotonic())) == 0
    finally:
        for p in (board, edge, cloud):
            stop(p)
    edge_log = (tmp_path / "edge.log").read_text()
    assert "lost the cloud" in edge_log and "the cloud answers again" in edge_log
    run = json.loads(report.read_text())
    events = [(e["event"], e.get("tier")) for e in run["events"]]
    assert ("tier_lost", "cloud") in events and ("tier_returned", "cloud") in events
    lost = next(e["step"] for e in run["events"] if e["event"] == "tier_lost")
    back = next(e["step"] for e in run["events"] if e["event"] == "tier_returned")
    assert lost < back < STEPS
    # Without the cloud the board ran the same groups with the edge taking the cloud's
    # units; afterwards it switched back to the schedule that uses the cloud.
    ids = {r["step"]: r["schedule_id"] for r in run["iterations"]}
    with_cloud = Schedule.from_dict(settings["schedule"]).schedule_id()
    assert ids[0] == with_cloud and ids[lost] != with_cloud and ids[STEPS - 1] == with_cloud
    assert [c["to"] for c in run["schedule_changes"]][-1] == with_cloud
    assert len(ids) == STEPS  # no step lost, none repeated in the record
    assert time.monotonic() - stopped > SILENT_S

    assert regrouping_noise(settings, train, STEPS, [24, 24]) < NOISE_FLOOR
    hybrid = load_model_file(tmp_path / "device" / "model.pt")
    torch.set_num_threads(1)
    reference = train_reference(job_from_dict(settings), train, STEPS).state_dict()
    for key, want in reference.items():
        err = float((hybrid["state"][key] - want).norm() / want.norm())
        assert err <= 1e-5, f"{key}: relative error {err:.2e}"
