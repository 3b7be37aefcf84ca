"""Building the schedule table: grid keys, dense evaluation, unreachable entries, and the
vectorised evaluator against the cost model point by point."""

from __future__ import annotations

import math

import numpy as np
import pytest
from table_fixtures import BATCH, CANDIDATES, LATENCY_S, SMALL_FACTS, profiles, small_table

from hiertrain_edge.errors import ConfigError
from hiertrain_edge.planning.cost import CostModel, Links
from hiertrain_edge.planning.schedule import Schedule
from hiertrain_edge.planning.table import (
    DEFAULT_GRID,
    Grid,
    _size_lattice,
    build_table,
    cost_evaluator,
)


def test_default_grid_spans_0_1_to_10000_mbps_with_41_points():
    assert DEFAULT_GRID.size == 41
    assert DEFAULT_GRID.points_per_decade == 8
    assert DEFAULT_GRID.value(0) == pytest.approx(0.1)
    assert DEFAULT_GRID.max_mbps == pytest.approx(10_000.0)


@pytest.mark.parametrize(
    ("mbps", "nearest", "floor"),
    [
        (0.1, 0, 0),
        (0.05, 0, 0),
        (1.0, 8, 8),
        (1.2, 9, 8),
        (1.1, 8, 8),
        (1e6, 40, 40),
        (0.0, 0, 0),
        (float("nan"), 0, 0),
        (10_000.0, 40, 40),
    ],
)
def test_grid_index_is_log_arithmetic_clamped(mbps, nearest, floor):
    assert DEFAULT_GRID.index(mbps, "nearest") == nearest
    assert DEFAULT_GRID.index(mbps, "floor") == floor


def test_evaluator_matches_cost_model_point_by_point():
    profs = profiles()
    evaluate = cost_evaluator(SMALL_FACTS, profs, LATENCY_S)
    rng = np.random.default_rng(0)
    de = np.concatenate([10 ** rng.uniform(-1, 4, 40), [3.0, 0.0, 0.0]])
    ec = np.concatenate([10 ** rng.uniform(-1, 4, 40), [0.0, 5.0, 0.0]])
    for schedule in CANDIDATES:
        got = evaluate(schedule, de, ec)
        for k in range(len(de)):
            links = Links.symmetric(de[k], ec[k], *LATENCY_S)
            want = CostModel.build(SMALL_FACTS, profs, links).predict(schedule)
            assert got[k] == pytest.approx(want, rel=1e-12) or (
                math.isinf(want) and math.isinf(got[k])
            ), (schedule.describe(), de[k], ec[k])
    assert not evaluate.fallback["used"]


def test_every_slot_holds_the_fastest_candidate():
    table = small_table(size_step=0, merge_tolerance=0.0)
    profs = profiles()
    evaluate = cost_evaluator(SMALL_FACTS, profs, LATENCY_S)
    n = table.grid.size
    values = np.array(table.grid.values())
    de = np.concatenate([np.repeat(values, n), values, [0.0]])
    ec = np.concatenate([np.tile(values, n), np.zeros(n), [0.0]])
    times = np.array([evaluate(s, de, ec) for s in CANDIDATES])
    best = times.min(axis=0)
    assert table.num_slots == 41 * 41 + 41 + 1
    for slot in range(table.num_slots):
        k = table.slot_index[slot]
        assert table.slot_time_s[slot] == pytest.approx(best[slot], rel=1e-6)
        assert table.time_of(k, slot) == pytest.approx(best[slot], rel=1e-3)
    described = [s.describe() for s in table.schedules]
    assert described == ["32@(6,6)", "32@(0,6)", "32@(0,0)", "16@(6,6), 16@(0,6)"]
    assert len(set(described)) == len(described)  # stored once
    assert table.usage() == [782, 456, 413, 72]


def test_size_lattice_only_improves_and_adds_no_planner_calls():
    plain = small_table(size_step=0, merge_tolerance=0.0)
    sized = small_table(size_step=4, merge_tolerance=0.0)
    assert sized.build["planner_calls"] == plain.build["planner_calls"]
    assert sized.build["candidates"] > plain.build["candidates"]
    better = 0
    for slot in range(plain.num_slots):
        assert sized.slot_time_s[slot] <= plain.slot_time_s[slot]
        better += sized.slot_time_s[slot] < plain.slot_time_s[slot] * 0.999
    assert better > 100


def test_size_lattice_covers_the_batch():
    assert _size_lattice(8, 2, 4) == [(1, 7), (4, 4)]
    assert _size_lattice(8, 3, 4) == [(1, 1, 6), (1, 4, 3), (4, 1, 3)]
    assert _size_lattice(64, 1, 8) == [(64,)]
    assert len(_size_lattice(64, 3, 8)) == 36


def test_unreachable_entries_avoid_the_missing_tiers():
    table = small_table()
    n = table.grid.size
    for i in range(n):
        k = table.slot_index[table.cloud_down_slot(i)]
        assert not table.schedules[k].uses_cloud(SMALL_FACTS.num_units)
    k = table.slot_index[table.edge_down_slot]
    assert table.schedules[k].describe() == "32@(6,6)"
    assert table.lookup(50, 50, edge_ok=False).slot == table.edge_down_slot
    assert table.lookup(50, 50, cloud_ok=False).slot == table.cloud_down_slot(table.grid.index(50))


def test_build_calls_the_solver_at_seeds_then_on_boundaries():
    calls: list = []
    from table_fixtures import candidate_solver

    table = small_table(solve=candidate_solver(profiles(), calls), max_refine_calls=10)
    assert table.build == {
        "candidates": 11,  # 4 from the solver, 7 from the size lattice
        "checkpoints": None,
        "merge_tolerance": 0.01,
        "planner_calls": 53,
        "refine_calls": 10,
        "seed_calls": 43,
    }
    assert calls[0] == (pytest.approx(0.1), pytest.approx(0.1))
    assert calls[42] == (0.0, 0.0)  # edge unreachable, last of the seeds


def test_real_planner_on_a_small_grid_is_never_beaten_at_its_seeds():
    from hiertrain_edge.planning.planner import plan

    profs = profiles()
    grid = Grid.spanning(1.0, 100.0, 8)
    table = build_table(
        SMALL_FACTS, profs, 8, latency_s=LATENCY_S, grid=grid, seed_stride=8, max_refine_calls=0
    )
    for i in (0, 8, 16):
        for j in (0, 8, 16):
            links = Links.symmetric(grid.value(i), grid.value(j), *LATENCY_S)
            best = plan(SMALL_FACTS, profs, links, 8).predicted_s
            assert table.slot_time_s[table.cell_slot(i, j)] <= best * (1 + 1e-6)


def test_too_coarse_a_grid_is_refused():
    with pytest.raises(ConfigError, match=r"^a table needs >= 8 grid points per decade, got 4$"):
        build_table(SMALL_FACTS, profiles(), BATCH, grid=Grid(0.1, 4, 21))


def test_near_duplicate_schedules_are_merged_within_tolerance():
    near = [Schedule.parse("32:0:6"), Schedule.parse("31:0:6,1:0:6"), Schedule.parse("32:6:6")]
    profs = profiles()
    evaluate = cost_evaluator(SMALL_FACTS, profs, LATENCY_S)

    def solve(bw_de, bw_ec):
        one = [float(evaluate(s, np.array([bw_de]), np.array([bw_ec]))[0]) for s in near]
        return [near[int(np.argmin(one))]]

    exact = small_table(solve=solve, merge_tolerance=0.0)
    merged = small_table(solve=solve)
    assert len(merged.schedules) < len(exact.schedules)
    for slot in range(exact.num_slots):
        assert merged.slot_time_s[slot] <= exact.slot_time_s[slot] * 1.01 + 1e-9
