"""The cost model prices the job's periodic snapshot per step: the board's and the cloud's
parts on their uplinks, the board's mirror on its downlink, at 1/`every` of their bytes."""

from __future__ import annotations

import pytest
from plan_fixtures import estimated, tiny_spec

from hiertrain_edge.errors import ConfigError
from hiertrain_edge.planning.cost import HEADER_BYTES, Checkpoints, CostModel, Links
from hiertrain_edge.planning.schedule import Group, Schedule
from hiertrain_edge.profiling.measure import model_facts
from hiertrain_edge.runtime.job import Job

FACTS = model_facts(tiny_spec())
PARAM = sum(FACTS.param_bytes)
STATE = PARAM + sum(FACTS.buffer_bytes)


def free_messages() -> dict:
    """Tiers whose messages and copies cost no CPU: only the links take time."""
    free = {"message_overhead_s": 0.0, "wire_s_per_byte": 0.0, "copy_s_per_byte": 0.0}
    return {
        t: estimated(t, g).model_copy(update=free)
        for t, g in (("device", 0.02), ("edge", 0.2), ("cloud", 2.0))
    }


def step_s(schedule: Schedule, links: Links, checkpoints: Checkpoints | None) -> float:
    return CostModel.build(FACTS, free_messages(), links, checkpoints).predict(schedule)


def test_the_boards_part_holds_its_uplink_for_its_share():
    # Device-only: the board owns every unit and sends all of it (weights and momentum)
    # every 5th step over a 0.1 Mbit/s uplink, behind the `step` header.
    bps = 0.1e6 / 8
    links = Links.symmetric(0.1, 100)
    device_only = Schedule((Group(16, 4, 4),))
    got = step_s(device_only, links, Checkpoints(every=5, opt_copies=1, mirror=False))
    want = (HEADER_BYTES + (STATE + PARAM + HEADER_BYTES) / 5) / bps
    assert got == pytest.approx(want, rel=1e-9)
    assert step_s(device_only, links, None) < want / 10


def test_the_mirror_delays_the_boards_gradients_on_a_slow_downlink():
    # Edge-only over a fast uplink and a 0.1 Mbit/s downlink: the mirror of every unit
    # (the edge owns them all) goes out first and the step's `bwd` header waits behind it.
    down_bps, up_bps = 0.1e6 / 8, 100e6 / 8
    links = Links(100, 0.1, 100, 100)
    edge_only = Schedule((Group(16, 0, 4),))
    mirror = (STATE + 2 * PARAM + HEADER_BYTES) / 7  # Adam: two moments per parameter
    got = step_s(edge_only, links, Checkpoints(every=7, opt_copies=2, mirror=True))
    assert got == pytest.approx(
        HEADER_BYTES / up_bps + mirror / down_bps + HEADER_BYTES / down_bps, rel=1e-9
    )
    # Without the mirror only the edge's own copy would cost (free here): no change.
    plain = step_s(edge_only, links, None)
    assert step_s(edge_only, links, Checkpoints(every=7, opt_copies=2, mirror=False)) == plain
    assert got > plain + 0.9 * mirror / down_bps


def test_a_board_cut_off_from_its_edge_sends_no_snapshot():
    device_only = Schedule((Group(16, 4, 4),))
    down = Links.symmetric(0, 0)
    with_snapshot = step_s(device_only, down, Checkpoints(every=5))
    assert with_snapshot == step_s(device_only, down, None) < float("inf")


def test_bad_checkpoint_figures_are_refused():
    with pytest.raises(ConfigError, match="checkpoint interval must be >= 1 step, got 0"):
        Checkpoints(every=0)
    with pytest.raises(ConfigError, match="optimizer state copies must be >= 0, got -1"):
        Checkpoints(every=5, opt_copies=-1)


@pytest.mark.parametrize(
    "fields, want",
    [
        ({}, Checkpoints(50, 1, True)),  # the defaults: SGD with momentum, board fallback
        ({"momentum": 0.0}, Checkpoints(50, 0, True)),
        ({"optimizer": "adam"}, Checkpoints(50, 2, True)),
        ({"checkpoint_every": 10, "device_fallback": False}, Checkpoints(10, 1, False)),
    ],
)
def test_a_jobs_snapshot_as_the_planner_prices_it(fields, want):
    assert Job(model="small_cnn", **fields).checkpoint_costs() == want
