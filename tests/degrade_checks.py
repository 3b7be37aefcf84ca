"""What every "the cloud went away and came back" test checks, and the job it runs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from hiertrain_edge.planning.schedule import Schedule
from hiertrain_edge.runtime.checkpoint import load_model_file
from hiertrain_edge.runtime.job import job_from_dict
from hiertrain_edge.runtime.reference import train_reference

STEPS = 480  # enough that the cloud comes back before the end where steps are fast
LIVENESS_S = 3.0
SILENT_S = 2 * LIVENESS_S  # the cloud stays out of reach well past the bound

# Two groups: one runs units 2..3 on the edge and the rest on the cloud, one stays whole
# on the board.
SETTINGS = {
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


def check_cloud_lost_and_back(out: Path, train, report: Path, steps: int = STEPS) -> None:
    """The edge lost the cloud and took it back; the board trained every step once, on
    the edge meanwhile, back on the cloud at the end; the weights equal one process's."""
    edge_log = (out / "edge.log").read_text()
    assert "lost the cloud" in edge_log and "the cloud answers again" in edge_log
    run = json.loads(report.read_text())
    events = [(e["event"], e.get("tier")) for e in run["events"]]
    assert ("tier_lost", "cloud") in events and ("tier_returned", "cloud") in events
    lost = next(e["step"] for e in run["events"] if e["event"] == "tier_lost")
    back = next(e["step"] for e in run["events"] if e["event"] == "tier_returned")
    assert lost < back < steps
    # Without the cloud the board ran the same groups with the edge taking the cloud's
    # units; afterwards it switched back to the schedule that uses the cloud.
    ids = {r["step"]: r["schedule_id"] for r in run["iterations"]}
    with_cloud = Schedule.from_dict(SETTINGS["schedule"]).schedule_id()
    assert ids[0] == with_cloud and ids[lost] != with_cloud and ids[steps - 1] == with_cloud
    assert [c["to"] for c in run["schedule_changes"]][-1] == with_cloud
    assert len(ids) == steps  # no step lost, none repeated in the record

    hybrid = load_model_file(out / "device" / "model.pt")
    torch.set_num_threads(1)
    # The run's two groups stayed the same throughout (only their tiers changed).
    reference = train_reference(job_from_dict(SETTINGS), train, steps, [24, 24]).state_dict()
    for key, want in reference.items():
        err = float((hybrid["state"][key] - want).norm() / want.norm())
        assert err <= 1e-5, f"{key}: relative error {err:.2e}"


def wait_for_checkpoints(checkpoint: Path, deadline: float) -> None:
    """Until the edge has written its checkpoint twice: a few steps ran with the cloud."""
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    first = checkpoint.stat().st_mtime
    while checkpoint.stat().st_mtime == first and time.monotonic() < deadline:
        time.sleep(0.1)
