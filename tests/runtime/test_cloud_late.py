"""A cloud that is not there when the job starts: the edge starts without it, asks it back
between steps, and the board takes the cloud's schedule once it answers; a job the edge
plans is planned without the cloud."""

from __future__ import annotations

import json
import time

import torch
from degrade_checks import LIVENESS_S, SETTINGS, STEPS
from tierprocs import free_port, join_args, save_train, stop, tier_process

from hiertrain_edge.planning.schedule import Schedule
from hiertrain_edge.runtime.checkpoint import load_model_file
from hiertrain_edge.runtime.demo import write_job_file
from hiertrain_edge.runtime.edge import without_cloud
from hiertrain_edge.runtime.job import job_from_dict
from hiertrain_edge.runtime.reference import train_reference


def test_cloud_missing_at_start_then_used(tmp_path, mnist):
    train = mnist.subset(0, 480)
    data = save_train(tmp_path, train)
    job = write_job_file(tmp_path / "job.toml", SETTINGS)
    cloud_port, edge_port = free_port(), free_port()
    env = {"HIERTRAIN_EDGE_LIVENESS_S": str(LIVENESS_S)}
    report = tmp_path / "report.json"
    edge_log = tmp_path / "edge.log"
    edge = tier_process(
        *("serve", "--job", str(job), "--listen", f"tcp://127.0.0.1:{edge_port}"),
        *("--cloud", f"127.0.0.1:{cloud_port}", "--once", "--threads", "1"),
        log=edge_log,
        env=env,
    )
    board = tier_process(
        *join_args(f"127.0.0.1:{edge_port}", data, tmp_path / "device", "--report", str(report)),
        *("--threads", "1"),
        log=tmp_path / "device.log",
        env=env,
    )
    cloud = None
    try:
        deadline = time.monotonic() + 300
        while "going on without it" not in edge_log.read_text():
            assert time.monotonic() < deadline and board.poll() is None, edge_log.read_text()
            time.sleep(0.1)
        cloud = tier_process(
            *("cloud", "--listen", f"tcp://127.0.0.1:{cloud_port}", "--threads", "1"),
            log=tmp_path / "cloud.log",
            env=env,
        )
        assert board.wait(timeout=max(1, deadline - time.monotonic())) == 0
    finally:
        for p in (board, edge, cloud):
            if p is not None:
                stop(p)

    log = edge_log.read_text()
    assert "lost the cloud (no pong" in log and "the cloud answers again" in log
    run = json.loads(report.read_text())
    events = [(e["step"], e["event"], e.get("tier")) for e in run["events"]]
    assert events[0] == (0, "tier_lost", "cloud")
    back = next(s for s, event, tier in events if (event, tier) == ("tier_returned", "cloud"))
    ids = {r["step"]: r["schedule_id"] for r in run["iterations"]}
    assert sorted(ids) == list(range(STEPS))  # no step lost, none repeated
    with_cloud = Schedule.from_dict(SETTINGS["schedule"])
    without = without_cloud(with_cloud, 6).schedule_id()
    assert {ids[s] for s in range(back)} == {without}
    assert ids[STEPS - 1] == with_cloud.schedule_id()

    # The groups stayed the same throughout: one process with them is the reference.
    hybrid = load_model_file(tmp_path / "device" / "model.pt")
    torch.set_num_threads(1)
    reference = train_reference(job_from_dict(SETTINGS), train, STEPS, [24, 24]).state_dict()
    for key, want in reference.items():
        err = float((hybrid["state"][key] - want).norm() / want.norm())
        assert err <= 1e-5, f"{key}: relative error {err:.2e}"


def test_planned_job_with_the_cloud_missing_plans_without_it(tmp_path, mnist):
    data = save_train(tmp_path, mnist.subset(0, 480))
    settings = {"model": "small_cnn", "batch_size": 32, "steps": 30}  # no schedule: planned
    job = write_job_file(tmp_path / "job.toml", settings)
    edge_at, report = f"127.0.0.1:{free_port()}", tmp_path / "report.json"
    edge = tier_process(
        *("serve", "--job", str(job), "--listen", f"tcp://{edge_at}", "--once"),
        *("--cloud", f"127.0.0.1:{free_port()}", "--threads", "1"),  # nothing listens there
        log=tmp_path / "edge.log",
    )
    board = tier_process(
        *join_args(edge_at, data, tmp_path / "device", "--report", str(report)),
        *("--threads", "1"),
        log=tmp_path / "device.log",
    )
    try:
        assert board.wait(timeout=300) == 0
    finally:
        stop(board)
        stop(edge)
    run = json.loads(report.read_text())
    assert run["events"] == [{"step": 0, "event": "tier_lost", "tier": "cloud"}]
    assert len(run["iterations"]) == 30
    used = {Schedule.from_dict(c["to_schedule"]) for c in run["schedule_changes"]}
    assert not any(s.uses_cloud(6) for s in used | {Schedule.from_dict(run["schedule"])})
