"""The board's selector: hysteresis at region boundaries, quick response to a tenfold
change, unreachable tiers, dwell, margin and the cost of moving units."""

from __future__ import annotations

import math
import random

import pytest
from table_fixtures import small_table

from hiertrain_edge.errors import ConfigError
from hiertrain_edge.planning.lookup import Selector, unit_move_cost

DEVICE_ONLY, EDGE, CLOUD, SPLIT = 0, 1, 2, 3  # the small table's schedules (see test_table_build)
EC_MBPS = 1.0  # edge<->cloud bandwidth where the cloud never wins


@pytest.fixture(scope="module")
def table():
    return small_table()


def test_noise_around_a_region_boundary_switches_at_most_once(table):
    grid = table.grid
    boundary = grid.min_mbps * 10 ** (18.5 / grid.points_per_decade)  # rows 18 | 19
    assert table.lookup(boundary * 0.95, EC_MBPS).schedule_index == DEVICE_ONLY
    assert table.lookup(boundary * 1.05, EC_MBPS).schedule_index == EDGE
    rng = random.Random(7)
    noisy = [boundary * rng.uniform(0.9, 1.1) for _ in range(200)]
    for start in (DEVICE_ONLY, EDGE):
        selector = Selector(table, initial=start)
        decisions = [selector.observe(bw, EC_MBPS, step=s) for s, bw in enumerate(noisy)]
        assert sum(d.switched for d in decisions) <= 1
    # Without hysteresis the same noise flips the schedule again and again.
    bare = Selector(
        table,
        initial=DEVICE_ONLY,
        margin=0.0,
        persist=1,
        min_dwell_steps=0,
        move_cost=lambda a, b, de, ec: 0.0,
    )
    assert sum(bare.observe(bw, EC_MBPS, step=s).switched for s, bw in enumerate(noisy)) > 20


@pytest.mark.parametrize(
    ("before", "after", "old", "new"),
    [(100.0, 10.0, EDGE, DEVICE_ONLY), (10.0, 100.0, DEVICE_ONLY, EDGE)],
)
def test_tenfold_change_switches_within_two_observations(table, before, after, old, new, caplog):
    rng = random.Random(3)
    selector = Selector(table)
    for s in range(50):
        d = selector.observe(before * rng.uniform(0.9, 1.1), EC_MBPS, step=s)
        assert d.schedule_index == old and not d.switched
    changes = [
        selector.observe(after * rng.uniform(0.9, 1.1), EC_MBPS, step=50 + s) for s in range(2)
    ]
    assert [d.switched for d in changes] == [False, True]
    assert changes[-1].schedule_index == new and changes[-1].from_index == old
    assert changes[-1].predicted_gain_s > 0.1 * table.time_of(old, changes[-1].slot)
    assert changes[0].reason == "hold: new choice seen 1 of 2 observations"
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert (
        warnings[0]
        .getMessage()
        .startswith(
            f"schedule switch before step 51: [{old}] {table.schedules[old].describe()} -> "
            f"[{new}] {table.schedules[new].describe()}; "
        )
    )


def test_unreachable_tiers_force_the_unreachable_entries_at_once(table):
    selector = Selector(table, initial=CLOUD)
    d = selector.observe(5000.0, 5000.0, cloud_ok=False, step=10)
    assert d.switched and d.slot == table.cloud_down_slot(table.grid.index(5000.0))
    assert d.schedule_index == table.slot_index[d.slot] == SPLIT
    assert d.reason.startswith("forced: current schedule cannot run (cloud unreachable")
    d = selector.observe(5000.0, 5000.0, edge_ok=False, step=11)  # no dwell for forced moves
    assert d.switched and d.slot == table.edge_down_slot and d.schedule_index == DEVICE_ONLY
    d = selector.observe(5000.0, 5000.0, edge_ok=False, step=12)
    assert not d.switched and d.reason == "hold: current schedule is the table's choice"


def test_dwell_margin_and_payoff_hold_a_switch_back(table):
    selector = Selector(table, initial=EDGE, min_dwell_steps=10, persist=1)
    assert selector.observe(10.0, EC_MBPS, step=0).switched
    d = selector.observe(100.0, EC_MBPS, step=5)
    assert not d.switched and d.reason == "hold: dwell 5 of 10 steps since last switch"
    expensive = Selector(table, initial=EDGE, persist=1, move_cost=lambda a, b, de, ec: 1e9)
    d = expensive.observe(10.0, EC_MBPS, step=0)
    assert not d.switched and "does not pay for moving units (1e+09 s)" in d.reason
    ending = Selector(table, initial=EDGE, persist=1, total_steps=100)
    d = ending.observe(10.0, EC_MBPS, step=100)  # no steps left to win the cost back
    assert not d.switched and " x 0 steps does not pay for moving units" in d.reason
    picky = Selector(table, initial=EDGE, persist=1, margin=0.99)
    d = picky.observe(10.0, EC_MBPS, step=0)
    assert not d.switched and d.reason.endswith("below the 99% margin")


def test_first_observation_takes_the_table_choice(table):
    d = Selector(table).observe(100.0, EC_MBPS, step=0)
    assert (d.schedule_index, d.switched, d.reason) == (
        EDGE,
        False,
        "initial choice from the table",
    )


def test_move_cost_counts_units_whose_tier_changes(table):
    cost = unit_move_cost(table, optimizer_state_copies=1)
    params = sum(table.unit_param_bytes)
    # device only -> edge from raw input: every unit's owner moves device -> edge.
    assert cost(DEVICE_ONLY, EDGE, 8.0, 1.0) == pytest.approx(2 * params * 8 / 8e6)
    # edge -> cloud from raw input: the bytes cross the edge<->cloud link only.
    assert cost(EDGE, CLOUD, 1.0, 8.0) == pytest.approx(2 * params * 8 / 8e6)
    assert cost(EDGE, EDGE, 1.0, 1.0) == 0.0
    assert math.isinf(cost(DEVICE_ONLY, CLOUD, 8.0, 0.0))


def test_bad_settings_are_refused(table):
    with pytest.raises(ConfigError, match=r"^margin must be in \[0, 1\), got 1.5$"):
        Selector(table, margin=1.5)
    with pytest.raises(ConfigError, match=r"^lookup rule must be 'nearest' or 'floor', got 'x'$"):
        Selector(table, rule="x")
    with pytest.raises(
        ConfigError,
        match=r"^initial schedule index 9 out of range; the table "
        r"stores 4 schedules$",
    ):
        Selector(table, initial=9)
