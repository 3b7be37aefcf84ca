"""Schedules: validation, parsing, slices, owners and the order of dispatch."""

from __future__ import annotations

import pytest

from hiertrain_edge.errors import ScheduleError
from hiertrain_edge.planning.schedule import Group, Schedule, default_three_group

N = 6


def test_schedule_parse_and_dict_roundtrip():
    s = Schedule.parse("22:6:6, 21:2:6,21:2:4")
    assert s.groups == (Group(22, 6, 6), Group(21, 2, 6), Group(21, 2, 4))
    assert Schedule.from_dict(s.to_dict()) == s
    assert s.to_dict() == {
        "groups": [{"n": 22, "cuts": [6, 6]}, {"n": 21, "cuts": [2, 6]}, {"n": 21, "cuts": [2, 4]}]
    }
    assert s.schedule_id() == Schedule.parse("22:6:6,21:2:6,21:2:4").schedule_id()
    assert s.schedule_id() != Schedule.parse("21:6:6,22:2:6,21:2:4").schedule_id()


@pytest.mark.parametrize(
    ("text", "batch", "message"),
    [
        ("8:4:2", 8, r"group 0 has cuts \(4, 2\); expected 0 <= c1 <= c2 <= 6"),
        ("8:0:7", 8, r"group 0 has cuts \(0, 7\)"),
        ("0:6:6,8:6:6", 8, "group 0 has n=0; every group needs n >= 1"),
        ("2:6:6,2:6:6,2:6:6,2:6:6", 8, "a schedule has 1 to 3 groups, got 4"),
        ("4:6:6", 8, "group sizes add up to 4, expected the batch size 8"),
    ],
)
def test_schedule_validation(text, batch, message):
    with pytest.raises(ScheduleError, match=message):
        Schedule.parse(text).validate(N, batch)


@pytest.mark.parametrize("text", ["8:6", "a:1:2", "8:1:2:3", ""])
def test_schedule_parse_rejects_bad_text(text):
    with pytest.raises(ScheduleError, match="is not n:c1:c2"):
        Schedule.parse(text)


def test_schedule_slices_owners_and_replicas():
    s = Schedule.parse("4:6:6,4:2:6,4:2:4")
    assert s.units_on("device", N) == {0, 1, 2, 3, 4, 5}
    assert s.units_on("edge", N) == {2, 3, 4, 5}
    assert s.units_on("cloud", N) == {4, 5}
    # units 0-1 run only on the device; 2-5 on several tiers, so the edge owns them
    assert s.owners(N) == ["device", "device", "edge", "edge", "edge", "edge"]
    assert s.replicated("device", N) == [2, 3, 4, 5]
    assert s.replicated("cloud", N) == [4, 5]
    assert s.replicated("edge", N) == []


def test_schedule_loss_tiers_and_dispatch_order():
    s = Schedule.parse("3:6:6,3:0:6,3:2:4,3:0:0")
    assert [g.loss_tier(N) for g in s.groups] == ["device", "edge", "cloud", "cloud"]
    assert s.dispatch_order(N) == [2, 3, 1]  # cloud-bound first, then edge-terminal
    assert s.local_groups(N) == [0]
    assert s.offsets() == [0, 3, 6, 9]
    assert Schedule.parse("12:6:6").uses_cloud(N) is False
    # the cloud runs nothing and owns nothing when no group reaches it
    assert Schedule.parse("6:6:6,6:3:6").units_on("cloud", N) == set()


def test_default_three_group_uses_every_tier():
    s = default_three_group(N, 64).validate(N, 64)
    assert s.to_dict() == {
        "groups": [{"n": 22, "cuts": [6, 6]}, {"n": 21, "cuts": [2, 6]}, {"n": 21, "cuts": [2, 4]}]
    }
    assert all(s.units_on(t, N) for t in ("device", "edge", "cloud"))
