"""A board that loses the edge trains on alone from the last checkpoint, asks the edge back
between steps, hands it its state when it returns, and training ends as one process would."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import torch
from tierprocs import free_port, join_args, save_train, stop, tier_process

from hiertrain_edge.planning.schedule import Schedule, device_only
from hiertrain_edge.runtime.checkpoint import load_model_file
from hiertrain_edge.runtime.demo import write_job_file
from hiertrain_edge.runtime.job import job_from_dict
from hiertrain_edge.runtime.reference import train_reference

STEPS = 240
REL_TOL = 1e-5
LIVENESS_S = 2.0
WAIT_S = 240.0  # the whole run on a loaded machine; not a timing assertion
SETTINGS = {
    "model": "small_cnn",
    "batch_size": 48,
    "steps": STEPS,
    "optimizer": "sgd",
    "lr": 0.005,
    "momentum": 0.5,
    "seed": 6,
    "checkpoint_every": 4,
    "step_timeout_s": 20.0,
    "rejoin_patience_s": 120.0,
    "schedule": {"groups": [{"n": 24, "cuts": [2, 4]}, {"n": 24, "cuts": [6, 6]}]},
}


def _wait_for(path: Path, text: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"no {text!r} in {path}")


def _run_with_outage(tmp_path: Path, mnist, outage: str) -> dict:
    """Train with a cloud, an edge and a board; mid-run the edge is killed and restarted
    (`outage` "kill") or frozen past the liveness bound and thawed ("stop")."""
    train = mnist.subset(0, 480)
    data = save_train(tmp_path, train)
    job = write_job_file(tmp_path / "job.toml", SETTINGS)
    cloud_port, edge_port = free_port(), free_port()
    env = {"HIERTRAIN_EDGE_LIVENESS_S": str(LIVENESS_S)}
    report = tmp_path / "report.json"
    edge_args = [
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
    ]
    cloud = tier_process(
        "cloud",
        "--listen",
        f"tcp://127.0.0.1:{cloud_port}",
        "--threads",
        "1",
        log=tmp_path / "cloud.log",
        env=env,
    )
    edge = tier_process(*edge_args, log=tmp_path / "edge.log", env=env)
    board_log = tmp_path / "device.log"
    board = tier_process(
        *join_args(f"127.0.0.1:{edge_port}", data, tmp_path / "device", "--report", str(report)),
        "--threads",
        "1",
        log=board_log,
        env=env,
    )
    checkpoint = tmp_path / "edge" / "checkpoint.pt"
    procs = [board, edge, cloud]
    try:
        deadline = time.monotonic() + WAIT_S
        while not checkpoint.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(2):  # two more checkpoints: the board has the first one's mirror
            last = checkpoint.stat().st_mtime
            while checkpoint.stat().st_mtime == last and time.monotonic() < deadline:
                time.sleep(0.05)
        if outage == "kill":
            edge.send_signal(signal.SIGKILL)
            edge.wait()
            _wait_for(board_log, "training alone on this board", deadline)
            time.sleep(0.5)  # the board trains on meanwhile
            edge = tier_process(*edge_args, log=tmp_path / "edge.2.log", env=env)
            procs[1] = edge
        else:
            edge.send_signal(signal.SIGSTOP)  # frozen: no replies, no heartbeats
            _wait_for(board_log, "training alone on this board", deadline)
            time.sleep(LIVENESS_S)
            edge.send_signal(signal.SIGCONT)
        assert board.wait(timeout=max(1, deadline - time.monotonic())) == 0
    finally:
        for p in procs:
            stop(p)
    return json.loads(report.read_text())


def _check_run(tmp_path: Path, mnist, run: dict) -> None:
    events = {e["event"] + ":" + str(e.get("tier", "")): e for e in run["events"]}
    lost = events["tier_lost:edge"]["step"]
    alone = events["device_alone:"]["step"]
    back = events["tier_returned:edge"]["step"]
    print(f"edge lost at step {lost}; board alone from step {alone}; edge back at step {back}")
    assert 0 < alone <= lost < back < STEPS  # steps went on while the edge was away
    ids = {r["step"]: r["schedule_id"] for r in run["iterations"]}
    assert sorted(ids) == list(range(STEPS))  # no step lost, none repeated in the record
    hybrid_id = Schedule.from_dict(SETTINGS["schedule"]).schedule_id()
    alone_id = device_only(6, SETTINGS["batch_size"]).schedule_id()
    assert {ids[s] for s in range(alone, back)} == {alone_id}
    assert {ids[s] for s in range(alone)} == {hybrid_id}
    # Back with the edge, and with the cloud, which a frozen edge may lose meanwhile.
    assert alone_id not in {ids[s] for s in range(back, STEPS)}
    assert ids[STEPS - 1] == hybrid_id
    edge_logs = "".join(p.read_text() for p in sorted(tmp_path.glob("edge*.log")))
    assert f"state at step {back} as the job's checkpoint" in edge_logs

    # Single-process training with each step's batch grouped as the run grouped it: the
    # whole batch as one group alone, two groups otherwise. (Against one whole-batch
    # reference a long run drifts past the tolerance from rounding alone: README, Rounding.)
    train = mnist.subset(0, 480)
    sizes = {
        r["step"]: [48] if r["schedule_id"] == alone_id else [24, 24] for r in run["iterations"]
    }
    final = load_model_file(tmp_path / "device" / "model.pt")
    assert final["meta"]["replicas_identical"] is True
    torch.set_num_threads(1)
    reference = train_reference(job_from_dict(SETTINGS), train, STEPS, sizes).state_dict()
    for key, want in reference.items():
        err = float((final["state"][key] - want).norm() / want.norm())
        assert err <= REL_TOL, f"{key}: relative error {err:.2e}"


@pytest.mark.slow
def test_device_alone_edge_killed_and_restarted(tmp_path, mnist):
    _check_run(tmp_path, mnist, _run_with_outage(tmp_path, mnist, "kill"))


@pytest.mark.slow
def test_device_alone_edge_frozen_then_thawed(tmp_path, mnist):
    _check_run(tmp_path, mnist, _run_with_outage(tmp_path, mnist, "stop"))
