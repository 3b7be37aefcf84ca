"""The edge's checkpoint file at a board's join: a broken one is named with what to do."""

from __future__ import annotations

import pytest
from tierprocs import free_port

from hiertrain_edge.errors import ConfigError
from hiertrain_edge.runtime.edge import CHECKPOINT_FILE, EdgeServer
from hiertrain_edge.runtime.job import job_from_dict

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
