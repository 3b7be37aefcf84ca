"""Cost model, planner, schedule table and lookup; here, the schedule itself."""

from __future__ import annotations

from typing import Any

from hiertrain_edge.planning.schedule import TIERS, Group, Schedule

# The cost model and planner pull in numpy and the profiling layer; they load on first
# use so that importing a Schedule stays light.
_LAZY = {
    "Links": "hiertrain_edge.planning.cost",
    "CostModel": "hiertrain_edge.planning.cost",
    "Event": "hiertrain_edge.planning.cost",
    "predict": "hiertrain_edge.planning.cost",
    "timeline": "hiertrain_edge.planning.cost",
    "Plan": "hiertrain_edge.planning.planner",
    "plan": "hiertrain_edge.planning.planner",
}

__all__ = ["TIERS", "Group", "Schedule", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
