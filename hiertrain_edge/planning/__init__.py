"""Cost model, planner, schedule table and lookup; here, the schedule itself."""

from hiertrain_edge.planning.schedule import TIERS, Group, Schedule

__all__ = ["TIERS", "Group", "Schedule"]
