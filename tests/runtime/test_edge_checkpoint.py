"""The edge's checkpoint at a board's join: a broken file is named with what to do, and a
board's handed-over state replaces it only when newer."""

from __future__ import annotations

import pytest
from tierprocs import free_port

from hiertrain_edge.errors import ConfigError
from hiertrain_edge.planning.schedule import device_only
from hiertrain_edge.runtime.edge import CHECKPOINT_FILE, EdgeServer
from hiertrain_edge.runtime.job import job_from_dict
from hiertrain_edge.runtime.slices import TierSlice

JOB = {"model": "small_cnn", "batch_size": 12, "steps": 4, "seed": 3}


@pytest.fixture
def edge(tmp_path):
    server = EdgeServer(
        job_from_dict({**JOB, "schedule": {"groups": [{"n": 12, "cuts": [2, 6]}]}}),
        f"tcp://127.0.0.1:{free_port()}",
        None,
        out_dir=tmp_path,
    )
    yield server
    server.listener.close()
    server.observe.close()


def test_a_broken_checkpoint_is_refused_with_what_to_do(edge, tmp_path):
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ConfigError) as err:
        edge._checkpoint_for({"board_id": "b1"})
    message = str(err.value)
    assert f"{tmp_path / CHECKPOINT_FILE} is not a readable checkpoint" in message
    assert "move it away to start this board's job afresh" in message


def test_no_checkpoint_starts_afresh(edge):
    assert edge._checkpoint_for({"board_id": "b1"}) is None


class _HandingBoard:
    """A board that answers the edge's handover request with its state at `step`."""

    def __init__(self, step: int, units, opt) -> None:
        self.msg = {"type": "handover", "step": step, "attempt": 0, "units": units, "opt": opt}
        self.sent = []

    def clear(self) -> None:
        pass

    def send(self, msg) -> None:
        self.sent.append(msg)

    def expect(self, types, step, timeout_s):
        return self.msg


@pytest.mark.parametrize(("handed", "kept"), [(12, 12), (10, 10), (7, 10)])
def test_a_handover_is_taken_only_when_newer_than_the_snapshot(edge, handed, kept):
    job = edge.job  # the board trained every unit alone
    tier = TierSlice("device", edge.spec, job, device_only(6, job.batch_size))
    every = range(tier.num_units)
    units, opt = tier.unit_state(every), tier.optimizer_state(every)
    edge.board_id, edge.board_attempt, edge.job_id = "b1", 0, "j1"
    edge.job_dict = job.model_dump(mode="json")
    edge._checkpoint(10, units, opt)
    board = _HandingBoard(handed, units, opt)
    edge._take_handover(board, {"board_id": "b1", "alone_step": handed})
    assert board.sent[0]["type"] == "handover_request"
    assert edge.snapshot["step"] == kept
