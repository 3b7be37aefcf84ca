"""The vectorised evaluator (planning/fastcost.py) predicts exactly what the cost model
(planning/cost.py) predicts, for random schedules on several models and links; a change
to cost.py that fastcost.py does not mirror fails here."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from fastcost_fixtures import VGG11_FACTS, real_profiles
from plan_fixtures import three_profiles, tiny_spec
from table_fixtures import SMALL_FACTS

from hiertrain_edge.planning.cost import Checkpoints, CostModel, Links
from hiertrain_edge.planning.fastcost import FastCost, canonical
from hiertrain_edge.planning.schedule import Group, Schedule
from hiertrain_edge.profiling.measure import model_facts

LINKS = [
    Links.symmetric(1, 5, 0.002, 0.02),
    Links.symmetric(10, 50, 0.002, 0.02),
    Links.symmetric(100, 500, 0.0, 0.0),
    Links(3.0, 7.0, 40.0, 900.0, 0.004, 0.03),  # every direction its own rate
    Links.symmetric(0, 10, 0.002, 0.02),  # device<->edge down
    Links.symmetric(10, 0, 0.002, 0.02),  # edge<->cloud down
    Links.symmetric(0, 0),
]


def random_schedule(rng: random.Random, num_units: int) -> Schedule:
    """1 to 3 groups with random cuts (often device-only, edge-terminal or at 0) and
    random sizes adding up to a random batch."""
    k = rng.randint(1, 3)
    groups = []
    for _ in range(k):
        c2 = rng.choice([rng.randint(0, num_units), num_units, 0])
        c1 = rng.choice([rng.randint(0, c2), 0, c2])
        if rng.random() < 0.15:
            c1 = c2 = num_units
        groups.append(Group(rng.randint(1, 40), c1, c2))
    return Schedule(tuple(groups))


def fast_predict(fast: FastCost, schedule: Schedule) -> tuple[float, bool]:
    cuts = [(g.c1, g.c2) for g in schedule.groups]
    order = canonical(cuts, fast.num_units)
    c1 = np.full((3, 1), -1)
    c2 = np.full((3, 1), -1)
    ns = np.zeros((3, 1, 1))
    for slot, i in enumerate(order):
        c1[slot, 0], c2[slot, 0] = cuts[i]
        ns[slot, 0, 0] = schedule.groups[i].n
    fits = bool(fast.fits_memory(c1, c2, ns)[0, 0])
    return float(fast.step_time(c1, c2, ns)[0, 0]), fits


SNAPSHOT = Checkpoints(every=7, opt_copies=1, mirror=True)


@pytest.mark.parametrize(
    "facts, profiles, checkpoints",
    [
        (SMALL_FACTS, "real", None),
        (VGG11_FACTS, "real", None),
        (model_facts(tiny_spec()), "test", None),
        (model_facts(tiny_spec()), "tight", None),
        (SMALL_FACTS, "real-wire", None),
        (model_facts(tiny_spec()), "test-wire", None),
        (SMALL_FACTS, "real-wire", SNAPSHOT),
        (VGG11_FACTS, "real", Checkpoints(every=3, opt_copies=2, mirror=False)),
        (model_facts(tiny_spec()), "test-wire", Checkpoints(every=1, opt_copies=0)),
    ],
    ids=[
        "small_cnn",
        "vgg11",
        "tiny4",
        "tiny4-tight-memory",
        "small_cnn-wire",
        "tiny4-wire",
        "small_cnn-snapshot",
        "vgg11-snapshot-no-mirror",
        "tiny4-snapshot-every-step",
    ],
)
def test_fastcost_equals_cost_model_on_random_schedules(facts, profiles, checkpoints):
    if profiles.startswith("real"):
        profs = real_profiles()
        if profiles == "real-wire":  # per-byte message costs, the board's the largest
            profs = {
                t: p.model_copy(update={"wire_s_per_byte": w})
                for (t, p), w in zip(profs.items(), (3e-8, 8e-9, 5e-9), strict=True)
            }
    else:
        memory = 60_000 if profiles == "tight" else 10**9
        profs = three_profiles(memory=memory, wire=profiles == "test-wire")
    rng = random.Random(hash(facts.name) % 1000)
    checked = infinite = unfit = 0
    for links in LINKS:
        model = CostModel.build(facts, profs, links, checkpoints)
        fast = FastCost(model)
        for _ in range(120):
            schedule = random_schedule(rng, facts.num_units)
            want = model.predict(schedule)
            cuts = [(g.c1, g.c2) for g in schedule.groups]
            want_fits = bool(model.fits_memory(cuts, [g.n for g in schedule.groups]))
            got, fits = fast_predict(fast, schedule)
            assert fits == want_fits, schedule.describe()
            unfit += not fits
            if math.isinf(want):
                assert math.isinf(got), (schedule.describe(), links)
                infinite += 1
            else:
                assert got == pytest.approx(want, rel=1e-9, abs=0), (schedule.describe(), links)
            checked += 1
    assert checked == 7 * 120
    assert infinite > 50  # the down links were exercised
    if profiles == "tight":
        assert unfit > 20  # and the memory check


@pytest.mark.parametrize("checkpoints", [None, SNAPSHOT], ids=["plain", "snapshot"])
def test_fastcost_batch_equals_one_by_one(checkpoints):
    """Many tuples and sizes in one batch give the same times as one at a time (with a
    snapshot, some tuples send the board's part or the mirror and some do not)."""
    profs = real_profiles()
    links = Links.symmetric(20, 80, 0.002, 0.02)
    model = CostModel.build(VGG11_FACTS, profs, links, checkpoints)
    fast = FastCost(model)
    rng = random.Random(7)
    schedules = [random_schedule(rng, 16) for _ in range(50)]
    c1 = np.full((3, 50), -1)
    c2 = np.full((3, 50), -1)
    ns = np.zeros((3, 50, 1))
    for t, s in enumerate(schedules):
        cuts = [(g.c1, g.c2) for g in s.groups]
        for slot, i in enumerate(canonical(cuts, 16)):
            c1[slot, t], c2[slot, t] = cuts[i]
            ns[slot, t, 0] = s.groups[i].n
    got = fast.evaluate(c1, c2, ns)[:, 0]
    want = [model.predict(s) if model.fits_memory(*_cuts_ns(s)) else math.inf for s in schedules]
    np.testing.assert_allclose(got, want, rtol=1e-9)


def _cuts_ns(s: Schedule):
    return [(g.c1, g.c2) for g in s.groups], [g.n for g in s.groups]
