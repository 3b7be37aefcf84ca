"""A hybrid step over three real processes equals one single-process step on the whole batch."""

from __future__ import annotations

import random

import pytest
import torch
from tierprocs import free_port, stop, tier_process

from hiertrain_edge.datasets import Dataset
from hiertrain_edge.planning.schedule import Group, Schedule
from hiertrain_edge.runtime.checkpoint import load_model_file
from hiertrain_edge.runtime.demo import write_job_file
from hiertrain_edge.runtime.device import Board
from hiertrain_edge.runtime.job import job_from_dict
from hiertrain_edge.runtime.reference import train_reference
from hiertrain_edge.wire.transport import endpoint

N_UNITS = 6  # small_cnn
BATCH = 12
STEPS = 5
REL_TOL = 1e-5


def _random_schedules(count: int, seed: int) -> list[Schedule]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        k = rng.randint(1, 3)
        cuts = rng.sample(range(1, BATCH), k - 1)
        sizes = [b - a for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), BATCH], strict=True)]
        groups = []
        for n in sizes:
            c1 = rng.randint(0, N_UNITS)
            groups.append(Group(n, c1, rng.randint(c1, N_UNITS)))
        out.append(Schedule(tuple(groups)))
    return out


SCHEDULES = {
    "device_only": "12:6:6",
    "edge_only": "12:0:6",
    "cloud_only": "12:0:0",
    "device_edge": "12:3:6",
    "device_cloud": "12:3:3",
    "edge_cloud": "12:0:3",
    "three_tier_chain": "12:2:4",
    "three_groups": "4:6:6,4:2:6,4:2:4",
    "raw_to_cloud_and_split": "5:0:0,4:3:6,3:6:6",
    "passthrough_edge": "6:2:2,6:4:4",
    **{
        f"random_{i}": s
        for i, s in enumerate(
            ",".join(f"{g.n}:{g.c1}:{g.c2}" for g in r.groups)
            for r in _random_schedules(3, seed=7)
        )
    },
}


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


@pytest.fixture(scope="module")
def edge_server(tmp_path_factory, cloud_endpoint):
    """One edge for every case; it re-reads its job file whenever a board joins."""
    work = tmp_path_factory.mktemp("edge")
    job_file = work / "job.toml"
    write_job_file(job_file, {"model": "small_cnn", "batch_size": BATCH})
    port = free_port()
    edge = tier_process(
        "serve",
        "--job",
        str(job_file),
        "--listen",
        f"tcp://127.0.0.1:{port}",
        "--cloud",
        cloud_endpoint,
        "--threads",
        "1",
        "--out",
        str(work / "out"),
        log=work / "edge.log",
    )
    yield job_file, f"127.0.0.1:{port}"
    stop(edge)


def _run_hybrid(tmp_path, edge_server, train: Dataset, settings: dict) -> dict:
    job_file, address = edge_server
    write_job_file(job_file, settings)
    report = Board(endpoint(address, 0), train, train.subset(0, 0), tmp_path / "device").run()
    assert len(report.iterations) == STEPS
    return load_model_file(tmp_path / "device" / "model.pt")


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_equivalence_hybrid_equals_single_process(tmp_path, edge_server, mnist, name, optimizer):
    torch.set_num_threads(1)
    schedule = Schedule.parse(SCHEDULES[name]).validate(N_UNITS, BATCH)
    settings = {
        "model": "small_cnn",
        "batch_size": BATCH,
        "steps": STEPS,
        "optimizer": optimizer,
        "lr": 0.01 if optimizer == "adam" else 0.1,
        "seed": 3,
        "schedule": schedule.to_dict(),
    }
    train = mnist.subset(0, 120)
    hybrid = _run_hybrid(tmp_path, edge_server, train, settings)

    reference = train_reference(job_from_dict(settings), train, STEPS).state_dict()
    assert hybrid["meta"]["replicas_identical"] is True
    assert set(hybrid["state"]) == set(reference)
    for key, want in reference.items():
        err = relative_error(hybrid["state"][key], want)
        assert err <= REL_TOL, f"{key}: relative error {err:.2e} over {REL_TOL}"
    # Training moved the weights: the comparison is not of two untouched models.
    initial = train_reference(job_from_dict({**settings, "steps": 1}), train, 0).state_dict()
    assert relative_error(hybrid["state"]["0.0.weight"], initial["0.0.weight"]) > 1e-3


BN_MODEL = "bn_models:bn_cnn"  # tests/bn_models.py, on the tier processes' PYTHONPATH


@pytest.mark.parametrize("text", ["12:2:3", "4:4:4,4:1:4,4:1:3"])
def test_batchnorm_groups_normalise_like_micro_batches(tmp_path, edge_server, mnist, text):
    """BatchNorm normalises each group with the group's own statistics: the weights equal
    single-process training that runs each group as a separate micro-batch."""
    torch.set_num_threads(1)
    schedule = Schedule.parse(text).validate(4, BATCH)
    settings = {
        "model": BN_MODEL,
        "input_shape": [1, 28, 28],
        "batch_size": BATCH,
        "steps": STEPS,
        "optimizer": "sgd",
        "lr": 0.1,
        "seed": 3,
        "schedule": schedule.to_dict(),
    }
    train = mnist.subset(0, 120)
    hybrid = _run_hybrid(tmp_path, edge_server, train, settings)
    assert hybrid["meta"]["replicas_identical"] is True
    job = job_from_dict(settings)
    micro = train_reference(job, train, STEPS, [g.n for g in schedule.groups]).state_dict()
    for key, want in micro.items():
        if "running" in key or "num_batches" in key:
            continue
        assert relative_error(hybrid["state"][key], want) <= REL_TOL, key
    if len(schedule.groups) == 1:
        # One group is the whole batch: running statistics match exactly too.
        for key in ("0.1.running_mean", "0.1.running_var", "2.2.running_mean"):
            assert relative_error(hybrid["state"][key], micro[key]) <= REL_TOL, key
    else:
        # Several groups: the weights differ from whole-batch training, as documented.
        whole = train_reference(job, train, STEPS).state_dict()
        assert relative_error(hybrid["state"]["3.weight"], whole["3.weight"]) > REL_TOL


SWITCHES = {
    # step -> schedule; units change tier at every switch, the cloud joins late
    "device_to_chain": {1: "12:6:6", 2: "12:2:6", 3: "4:6:6,4:2:6,4:2:4", 4: "12:0:0"},
    "cloud_to_device": {0: "12:0:0", 2: "6:3:3,6:6:6", 3: "12:6:6", 4: "5:0:4,7:2:2"},
}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("name", sorted(SWITCHES))
def test_equivalence_across_schedule_switches(tmp_path, edge_server, mnist, name, optimizer):
    """Units that change tier carry their weights and optimizer state: switching
    schedules between steps still equals single-process training."""
    torch.set_num_threads(1)
    plan = {s: Schedule.parse(t).validate(N_UNITS, BATCH) for s, t in SWITCHES[name].items()}
    first = plan.pop(0, Schedule.parse("12:3:6"))
    settings = {
        "model": "small_cnn",
        "batch_size": BATCH,
        "steps": STEPS,
        "optimizer": optimizer,
        "lr": 0.01 if optimizer == "adam" else 0.1,
        "seed": 4,
        "schedule": first.to_dict(),
    }
    job_file, address = edge_server
    write_job_file(job_file, settings)
    train = mnist.subset(0, 120)
    board = Board(
        endpoint(address, 0),
        train,
        train.subset(0, 0),
        tmp_path / "device",
        chooser=lambda step, current: plan.get(step),
    )
    report = board.run()
    assert [c["step"] for c in report.schedule_changes] == sorted(plan)
    assert [r.schedule_id for r in report.iterations][-1] == plan[max(plan)].schedule_id()
    hybrid = load_model_file(tmp_path / "device" / "model.pt")
    assert hybrid["meta"]["replicas_identical"] is True
    reference = train_reference(job_from_dict(settings), train, STEPS).state_dict()
    for key, want in reference.items():
        err = relative_error(hybrid["state"][key], want)
        assert err <= REL_TOL, f"{key}: relative error {err:.2e} over {REL_TOL}"
