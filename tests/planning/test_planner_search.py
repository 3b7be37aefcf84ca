"""The planner is exact on small inputs, never worse than a baseline, never below its
lower bound, and never slower with more bandwidth."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from plan_fixtures import three_profiles, tiny_spec

from hiertrain_edge.errors import ScheduleError
from hiertrain_edge.models import get_model
from hiertrain_edge.planning.cost import CostModel, Links
from hiertrain_edge.planning.planner import compositions, cut_pairs, plan
from hiertrain_edge.profiling.measure import model_facts

TINY = model_facts(tiny_spec())


def brute_force(model: CostModel, batch_size: int) -> float:
    """The best predicted time over every schedule of 1 to 3 groups: every ordered tuple
    of cut pairs (repeats allowed) and every split of the batch."""
    best = math.inf
    pairs = cut_pairs(model.num_units)
    for k in (1, 2, 3):
        if k > batch_size:
            break
        cols = compositions(batch_size, k)
        for cuts in itertools.product(pairs, repeat=k):
            t = np.asarray(model.step_time(list(cuts), cols), dtype=float)
            fits = np.asarray(model.fits_memory(list(cuts), cols))
            t = np.where(fits, t, np.inf)
            best = min(best, float(np.min(t)))
    return best


@pytest.mark.parametrize(
    "bw_de, bw_ec, batch_size",
    [(10, 100, 8), (1, 5, 7), (0, 10, 6)],
)
def test_planner_matches_brute_force_on_four_units(bw_de, bw_ec, batch_size):
    links = Links.symmetric(bw_de, bw_ec, 0.002, 0.02)
    result = plan(TINY, three_profiles(), links, batch_size)
    model = CostModel.build(TINY, three_profiles(), links)
    assert result.predicted_s == pytest.approx(brute_force(model, batch_size), rel=1e-12)
    assert result.gap == 0.0
    assert model.predict(result.schedule) == pytest.approx(result.predicted_s, rel=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("bw_de, bw_ec", [(10, 50), (2, 200)])
def test_planner_matches_brute_force_on_small_cnn(bw_de, bw_ec):
    spec = get_model("small_cnn")
    links = Links.symmetric(bw_de, bw_ec, 0.001, 0.01)
    result = plan(spec, three_profiles(), links, 8)
    model = CostModel.build(spec, three_profiles(), links)
    assert result.predicted_s == pytest.approx(brute_force(model, 8), rel=1e-12)


@settings(max_examples=8, deadline=None)
@given(
    bw_de=st.floats(0.1, 500),
    bw_ec=st.floats(0.1, 500),
    factor=st.floats(1.0, 20.0),
    batch_size=st.integers(1, 8),
)
def test_planner_properties(bw_de, bw_ec, factor, batch_size):
    profiles = three_profiles()
    slow = plan(TINY, profiles, Links.symmetric(bw_de, bw_ec, 0.001, 0.01), batch_size)
    fast = plan(
        TINY, profiles, Links.symmetric(bw_de * factor, bw_ec * factor, 0.001, 0.01), batch_size
    )
    assert fast.predicted_s <= slow.predicted_s * (1 + 1e-12)
    for t in slow.baselines.values():
        assert slow.predicted_s <= t * (1 + 1e-12)
    assert slow.lower_bound_s <= slow.predicted_s
    assert slow.gap >= 0


def test_planner_pruned_search_is_never_below_its_bound():
    spec = get_model("small_cnn")
    result = plan(spec, three_profiles(), Links.symmetric(20, 50, 0.001, 0.01), 16)
    assert result.lower_bound_s <= result.predicted_s
    assert result.gap == pytest.approx(result.predicted_s / result.lower_bound_s - 1)
    for t in result.baselines.values():
        assert result.predicted_s <= t


def test_planner_baselines_are_the_single_tier_schedules():
    links = Links.symmetric(10, 100)
    result = plan(TINY, three_profiles(), links, 8)
    model = CostModel.build(TINY, three_profiles(), links)
    from hiertrain_edge.planning.schedule import Schedule

    assert result.baselines["device_only"] == model.predict(Schedule.parse("8:4:4"))
    assert result.baselines["edge_only"] == model.predict(Schedule.parse("8:0:4"))
    assert result.baselines["cloud_only"] == model.predict(Schedule.parse("8:0:0"))
    two = [model.predict(Schedule.parse(f"8:{c}:4")) for c in (1, 2, 3)]
    two += [model.predict(Schedule.parse(f"8:{c}:{c}")) for c in (1, 2, 3)]
    assert result.baselines["best_two_tier"] == min(two)
    assert set(result.to_dict()) == {
        "schedule",
        "predicted_s",
        "baselines",
        "lower_bound_s",
        "gap",
        "solve_ms",
    }


def test_planner_no_schedule_fits_memory():
    with pytest.raises(
        ScheduleError,
        match=r"^no schedule of 8 samples fits: every tier's memory budget is exceeded or a "
        r"link it needs has 0 bandwidth \(device->edge 10, edge->device 10, edge->cloud 10, "
        r"cloud->edge 10 Mbit/s\)$",
    ):
        plan(TINY, three_profiles(memory=1000), Links.symmetric(10, 10), 8)


def test_planner_memory_budget_forces_work_off_the_device():
    links = Links.symmetric(1000, 1000)
    free = plan(TINY, three_profiles(), links, 8)
    model = CostModel.build(TINY, three_profiles(), links)
    need = model.memory_bytes([(4, 4)], [8])["device"]
    tight = plan(TINY, three_profiles(), links, 8, memory_budgets={"device": need - 1})
    assert all(g.c1 < 4 or g.n < 8 for g in tight.schedule.groups)
    assert tight.predicted_s >= free.predicted_s


def test_planner_zero_bandwidth_everywhere_leaves_device_only():
    result = plan(TINY, three_profiles(), Links.symmetric(0, 0), 8)
    assert result.schedule.to_dict() == {"groups": [{"n": 8, "cuts": [4, 4]}]}
    assert math.isinf(result.baselines["edge_only"])
    assert result.to_dict()["baselines"]["cloud_only"] is None
