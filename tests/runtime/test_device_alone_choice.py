"""Whether and how a board trains alone when it loses the edge, decided without a network."""

from __future__ import annotations

import dataclasses
import logging
from types import SimpleNamespace

import pytest
from table_fixtures import BATCH, small_table
from tierprocs import free_port

from hiertrain_edge.planning.schedule import Schedule
from hiertrain_edge.runtime.device import Board, _cloned
from hiertrain_edge.runtime.job import job_from_dict
from hiertrain_edge.runtime.slices import TierSlice

JOB = {"model": "small_cnn", "batch_size": 12, "steps": 4, "seed": 3}


@pytest.fixture
def board(mnist):
    b = Board(f"tcp://127.0.0.1:{free_port()}", mnist.subset(0, 24), mnist.subset(0, 0))
    yield b
    b.link.close(linger_s=0)


def test_device_alone_refused_when_the_job_says_so(board):
    board.mirror = {"step": 0, "units": None, "opt": None}
    job = job_from_dict(JOB)
    tier = TierSlice("device", job.spec(), job, job.the_schedule())
    assert board._may_go_alone(job_from_dict({**JOB, "device_fallback": False}), tier) is False
    assert board._may_go_alone(job, tier) is True


def test_device_alone_refused_without_a_copy_of_the_model(board, caplog):
    board.mirror = None  # e.g. rejoined at a later step and no checkpoint since
    job = job_from_dict(JOB)
    tier = TierSlice("device", job.spec(), job, job.the_schedule())
    with caplog.at_level(logging.WARNING):
        assert board._may_go_alone(job, tier) is False
    assert "this board has no copy of the whole model yet" in caplog.text


def test_device_alone_schedule_without_a_table_is_the_whole_batch_here(board):
    job = job_from_dict(JOB)
    assert board._alone_schedule(job.spec(), job) == Schedule.parse("12:6:6")


def test_device_alone_mirror_joins_own_units_with_the_edges(board):
    job = job_from_dict(JOB)
    schedule = Schedule.parse("6:2:6,6:2:4")  # the board owns units 0 and 1
    tier = TierSlice("device", job.spec(), job, schedule)
    edge = TierSlice("edge", job.spec(), job, schedule)
    board._keep_own(8, tier, job)
    others = sorted(edge.owns)
    mirror = {"type": "mirror", "step": 8, "units": _cloned(edge.unit_state(others))}
    mirror["opt"] = _cloned(edge.optimizer_state(others))
    board.edge.take = lambda kind: mirror if kind == "mirror" else None
    board._take_mirror(tier)
    assert board.mirror["step"] == 8
    assert sorted(board.mirror["units"], key=int) == [str(u) for u in range(6)]
    assert sorted(board.mirror["opt"], key=int) == [str(u) for u in range(6)]
    assert board.pending_own is None


def test_device_alone_refused_when_the_table_says_the_model_does_not_fit(board, caplog):
    board.mirror = {"step": 0, "units": None, "opt": None}
    table = small_table()
    slots = list(table.slot_index)
    slots[table.edge_down_slot] = -1  # nothing fits the board's memory alone
    board.table = SimpleNamespace(table=dataclasses.replace(table, slot_index=tuple(slots)))
    job = job_from_dict(JOB)
    tier = TierSlice("device", job.spec(), job, job.the_schedule())
    with caplog.at_level(logging.WARNING):
        assert board._may_go_alone(job, tier) is False
    assert "does not fit this board alone" in caplog.text


def test_device_alone_schedule_is_the_tables_edge_unreachable_entry(board):
    table = small_table()
    alone = Schedule.parse("20:6:6,12:6:6")  # device-only, two groups (smaller activations)
    schedules = (*table.schedules, alone)
    slots = list(table.slot_index)
    slots[table.edge_down_slot] = len(schedules) - 1
    table = dataclasses.replace(table, schedules=schedules, slot_index=tuple(slots))
    board.table = SimpleNamespace(table=table)
    job = job_from_dict({**JOB, "batch_size": BATCH})
    assert board._alone_schedule(job.spec(), job) == alone
