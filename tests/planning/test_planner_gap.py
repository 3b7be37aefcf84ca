"""The planner's search against the exhaustive optimum on seeded instances too large for
its own exhaustive path, and its lower bound against the same optimum."""

from __future__ import annotations

import random

import numpy as np
import pytest
from fastcost_fixtures import VGG11_FACTS, real_profiles
from table_fixtures import SMALL_FACTS, profiles

from hiertrain_edge.planning.cost import CostModel, Links
from hiertrain_edge.planning.planner import (
    EXHAUSTIVE_MAX_EVALS,
    _exhaustive_points,
    exhaustive,
    game_value,
    load_bound,
    plan,
)

GAP_BOUND = 0.02  # the planner's answer is within 2% of the optimum (issue 3)


def seeded_links(seed: int, count: int) -> list[Links]:
    """Bandwidths log-uniform over 0.3 .. 3000 Mbit/s per link, fixed latencies."""
    rng = random.Random(seed)
    return [
        Links.symmetric(10 ** rng.uniform(-0.5, 3.5), 10 ** rng.uniform(-0.5, 3.5), 0.002, 0.02)
        for _ in range(count)
    ]


@pytest.mark.parametrize(
    "links", seeded_links(3, 4), ids=lambda x: f"{x.de_mbps:.3g}/{x.ec_mbps:.3g}"
)
@pytest.mark.parametrize("profile_set", ["rpi4-rpi5-x86", "rpi4-x86-gpu"])
def test_planner_is_within_two_percent_of_the_optimum_on_small_cnn(links, profile_set):
    profs = profiles() if profile_set == "rpi4-rpi5-x86" else real_profiles()
    batch_size = 12
    assert _exhaustive_points(SMALL_FACTS.num_units, batch_size) > EXHAUSTIVE_MAX_EVALS
    result = plan(SMALL_FACTS, profs, links, batch_size)
    assert not result.exact  # the search answered, not the exhaustive path
    model = CostModel.build(SMALL_FACTS, profs, links)
    cuts, best, sizes = exhaustive(model, batch_size)
    assert result.predicted_s <= best * (1 + GAP_BOUND)
    assert result.predicted_s >= best * (1 - 1e-12)  # and never below the optimum
    assert model.predict(result.schedule) == pytest.approx(result.predicted_s, rel=1e-12)
    assert result.lower_bound_s <= best * (1 + 1e-12)


@pytest.mark.slow
@pytest.mark.parametrize(
    "links", seeded_links(5, 2), ids=lambda x: f"{x.de_mbps:.3g}/{x.ec_mbps:.3g}"
)
def test_planner_is_within_two_percent_of_the_optimum_on_vgg11(links):
    profs = real_profiles()
    result = plan(VGG11_FACTS, profs, links, 4)
    _, best, _ = exhaustive(CostModel.build(VGG11_FACTS, profs, links), 4)
    assert best * (1 - 1e-12) <= result.predicted_s <= best * (1 + GAP_BOUND)


def test_load_bound_is_below_the_optimum():
    profs = profiles()
    for links in seeded_links(11, 3):
        model = CostModel.build(SMALL_FACTS, profs, links)
        _, best, _ = exhaustive(model, 6)
        assert 0 < load_bound(model, 6) <= best


def test_game_value_of_known_matrices():
    assert game_value(np.array([[1.0, 0.0], [0.0, 1.0]])) == pytest.approx(0.5)
    assert game_value(np.array([[2.0, 1.0]])) == pytest.approx(2.0)
    # the second row is worse on every resource than the first: only the first counts
    assert game_value(np.array([[3.0, 1.0], [4.0, 2.0]])) == pytest.approx(3.0)
    assert game_value(np.array([[0.0, 0.0], [5.0, 5.0]])) == 0.0
    assert game_value(np.zeros((0, 7))) == 0.0
