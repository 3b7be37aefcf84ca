"""The board's schedule choice per step: a constant-time table lookup with hysteresis,
weighing a switch's predicted gain against the one-off cost of moving units.

This module and planning/table.py's loading code are all the board needs: neither imports
the planner, the cost model, the profiler, numpy or torch (tests/planning check it).

Rules of `Selector.observe`, in order:

1. *Forced*: when the current schedule cannot run at all (it needs an unreachable tier)
   the selector moves to the table's entry for the new situation at once.
2. *Table agrees*: when the table's schedule for the observed slot is the current one,
   nothing changes and any pending candidate is dropped.
3. *Persistence*: the same new schedule must be the table's choice for `persist`
   consecutive observations (noise that jumps between cells of one region counts as
   one candidate; a candidate that changes restarts the count).
4. *Dwell*: at least `min_dwell_steps` steps since the last switch.
5. *Margin*: the new schedule's predicted time in the observed slot must be at least
   `margin` (a fraction) below the current schedule's time there.
6. *Pay-off*: the gain per step times the expected dwell (`horizon_steps`, or the steps
   left when `total_steps` is given and fewer remain) must exceed the one-off cost of
   moving units between tiers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import NamedTuple

from hiertrain_edge.errors import ConfigError
from hiertrain_edge.planning.schedule import TIERS, Schedule
from hiertrain_edge.planning.table import NO_SCHEDULE, ScheduleTable

log = logging.getLogger(__name__)

MARGIN = 0.10  # a new schedule must predict at least 10% less time per step
# Two observations: the board's estimator (runtime/bandwidth.py) follows a real change
# after one transfer a step, so a tenfold change is followed within three steps (the
# issue's bound); one stray sample is still held back, and the margin keeps +-10% noise
# at a region boundary from switching (tests/planning/test_lookup_selector.py).
PERSIST_OBSERVATIONS = 2
MIN_DWELL_STEPS = 5
HORIZON_STEPS = 50  # steps a new schedule is expected to run before the next change
OPTIMIZER_STATE_COPIES = 1  # SGD with momentum: one buffer per parameter (Adam: 2)
BITS_PER_BYTE = 8

# (from schedule index, to schedule index, bw_de_mbps, bw_ec_mbps) -> seconds
MoveCost = Callable[[int, int, float, float], float]


class Decision(NamedTuple):
    """The schedule to run for the next step, and why."""

    schedule_index: int  # -1: nothing can run (see reason)
    switched: bool
    predicted_gain_s: float  # per step, of the switch made (or held back); 0 when none
    reason: str
    predicted_s: float  # the chosen schedule's predicted step time in the observed slot
    from_index: int  # the schedule before this observation
    slot: int


def holders(schedule: Schedule, num_units: int) -> list[set[str]]:
    """For each unit, the tiers that hold its weights under `schedule` (its runners and
    its owner)."""
    out = []
    for u in range(num_units):
        tiers = {t for t in TIERS if u in schedule.units_on(t, num_units)}
        tiers.add(schedule.owner(u, num_units))
        out.append(tiers)
    return out


def unit_move_cost(
    table: ScheduleTable, optimizer_state_copies: int = OPTIMIZER_STATE_COPIES
) -> MoveCost:
    """The one-off seconds to move units when switching between two stored schedules.

    A unit moves when its owner changes (weights, buffers and `optimizer_state_copies`
    optimizer buffers per parameter travel from the old owner to the new) or when a tier
    newly runs it as a replica (weights and buffers travel from the new owner). A transfer
    between device and cloud crosses both links (through the edge). Each link's bytes are
    sent one after the other, so the cost is the sum of bytes * 8 / bandwidth over the two
    links; latency is ignored (one message per link). Bytes per schedule pair are
    computed once and cached.
    """
    n = table.num_units
    own = [[s.owner(u, n) for u in range(n)] for s in table.schedules]
    held = [holders(s, n) for s in table.schedules]
    cache: dict[tuple[int, int], tuple[int, int]] = {}

    def link_bytes(a: int, b: int) -> tuple[int, int]:
        de = ec = 0
        for u in range(n):
            weights = table.unit_param_bytes[u] + table.unit_buffer_bytes[u]
            state = optimizer_state_copies * table.unit_param_bytes[u]
            moves = []
            if own[a][u] != own[b][u]:
                moves.append((own[a][u], own[b][u], weights + state))
            for tier in held[b][u] - held[a][u] - {own[b][u]}:
                moves.append((own[b][u], tier, weights))
            for src, dst, nbytes in moves:
                path = {TIERS.index(src), TIERS.index(dst)}
                if path & {0} and path != {0}:
                    de += nbytes
                if path & {2} and path != {2}:
                    ec += nbytes
        return de, ec

    def cost(a: int, b: int, bw_de_mbps: float, bw_ec_mbps: float) -> float:
        if a < 0 or b < 0 or a == b:
            return 0.0
        if (a, b) not in cache:
            cache[a, b] = link_bytes(a, b)
        de, ec = cache[a, b]
        total = 0.0
        for nbytes, mbps in ((de, bw_de_mbps), (ec, bw_ec_mbps)):
            if nbytes:
                total += math.inf if not mbps > 0 else nbytes * BITS_PER_BYTE / (mbps * 1e6)
        return total

    return cost


class Selector:
    """Chooses each step's schedule from a table; see the module docstring for the rules.

    `move_cost(from, to, bw_de_mbps, bw_ec_mbps)` gives the one-off seconds of a switch
    (default: `unit_move_cost(table)`); `rule` is the grid lookup rule ("nearest" or
    "floor", see Grid.index). `initial` is the schedule index running before the first
    observation; None takes the table's choice at the first observation.
    """

    def __init__(
        self,
        table: ScheduleTable,
        *,
        margin: float = MARGIN,
        persist: int = PERSIST_OBSERVATIONS,
        min_dwell_steps: int = MIN_DWELL_STEPS,
        horizon_steps: int = HORIZON_STEPS,
        total_steps: int | None = None,
        move_cost: MoveCost | None = None,
        rule: str = "nearest",
        initial: int | None = None,
    ) -> None:
        if not 0 <= margin < 1:
            raise ConfigError(f"margin must be in [0, 1), got {margin}")
        if persist < 1 or min_dwell_steps < 0 or horizon_steps < 1:
            raise ConfigError(
                f"need persist >= 1, min_dwell_steps >= 0 and horizon_steps >= 1, got "
                f"{persist}, {min_dwell_steps} and {horizon_steps}"
            )
        if rule not in ("nearest", "floor"):
            raise ConfigError(f"lookup rule must be 'nearest' or 'floor', got {rule!r}")
        if initial is not None and not 0 <= initial < len(table.schedules):
            raise ConfigError(
                f"initial schedule index {initial} out of range; the table stores "
                f"{len(table.schedules)} schedules"
            )
        self.table = table
        self.margin = margin
        self.persist = persist
        self.min_dwell_steps = min_dwell_steps
        self.horizon_steps = horizon_steps
        self.total_steps = total_steps
        self.move_cost = move_cost if move_cost is not None else unit_move_cost(table)
        self.rule = rule
        self.current = NO_SCHEDULE if initial is None else initial
        self._started = initial is not None
        self._last_switch_step: int | None = None
        self._candidate = NO_SCHEDULE
        self._count = 0

    @property
    def schedule(self) -> Schedule | None:
        return self.table.schedules[self.current] if self.current >= 0 else None

    def observe(
        self,
        bw_de_mbps: float,
        bw_ec_mbps: float,
        cloud_ok: bool = True,
        edge_ok: bool = True,
        step: int = 0,
    ) -> Decision:
        """Take one observation (before `step` runs) and say which schedule runs it."""
        table = self.table
        slot = table.slot_of(bw_de_mbps, bw_ec_mbps, cloud_ok, edge_ok, self.rule)
        target = table.slot_index[slot]
        old = self.current

        def now(k: int) -> float:
            return table.times_s[k][slot] if k >= 0 else math.inf

        # First observation without an initial schedule: take the table's choice.
        if not self._started:
            self._started = True
            return self._switch(
                target, slot, step, 0.0, "initial choice from the table", switched=False
            )

        # 1. The current schedule cannot run here: move at once.
        if not math.isfinite(now(old)):
            if target == old:
                return self._hold(slot, "no schedule fits this situation")
            gain = 0.0 if not math.isfinite(now(target)) else math.inf
            return self._switch(
                target,
                slot,
                step,
                gain,
                f"forced: current schedule cannot run ({table.slot_name(slot)})",
            )

        # 2. The table agrees with what runs.
        if target in (old, NO_SCHEDULE):
            self._candidate, self._count = NO_SCHEDULE, 0
            return self._hold(slot, "current schedule is the table's choice")

        # 3. Persistence of the same new choice.
        if target == self._candidate:
            self._count += 1
        else:
            self._candidate, self._count = target, 1
        gain = now(old) - now(target)
        if self._count < self.persist:
            return self._hold(
                slot, f"new choice seen {self._count} of {self.persist} observations", gain
            )

        # 4. Minimum dwell since the last switch.
        if self._last_switch_step is not None:
            dwelt = step - self._last_switch_step
            if dwelt < self.min_dwell_steps:
                return self._hold(
                    slot,
                    f"dwell {dwelt} of {self.min_dwell_steps} steps since last switch",
                    gain,
                )

        # 5. Margin on the predicted step time.
        if gain < self.margin * now(old):
            return self._hold(slot, f"gain {gain:.4g} s below the {self.margin:.0%} margin", gain)

        # 6. Pay-off over the expected dwell against the cost of moving units.
        move_s = self.move_cost(old, target, bw_de_mbps, bw_ec_mbps)
        horizon = self.horizon_steps
        if self.total_steps is not None:
            horizon = max(0, min(horizon, self.total_steps - step))
        if gain * horizon <= move_s:
            return self._hold(
                slot,
                f"gain {gain:.4g} s x {horizon} steps does not pay for moving "
                f"units ({move_s:.4g} s)",
                gain,
            )
        return self._switch(
            target,
            slot,
            step,
            gain,
            f"{table.slot_name(slot)}: {gain:.4g} s per step faster, moving units {move_s:.4g} s",
        )

    def _describe(self, k: int) -> str:
        return self.table.schedules[k].describe() if k >= 0 else "(none fits)"

    def _hold(self, slot: int, reason: str, gain: float = 0.0) -> Decision:
        k = self.current
        t = self.table.times_s[k][slot] if k >= 0 else math.inf
        return Decision(k, False, gain, f"hold: {reason}", t, k, slot)

    def _switch(
        self, target: int, slot: int, step: int, gain: float, reason: str, switched: bool = True
    ) -> Decision:
        old = self.current
        self.current = target
        self._candidate, self._count = NO_SCHEDULE, 0
        self._last_switch_step = step
        if switched:
            # The operator's record of every switch (the issue asks for WARNING): old and
            # new schedule, the observed slot (its bandwidths) and the predicted gain.
            log.warning(
                "schedule switch before step %d: [%d] %s -> [%d] %s; %s",
                step,
                old,
                self._describe(old),
                target,
                self._describe(target),
                reason,
            )
        t = self.table.times_s[target][slot] if target >= 0 else math.inf
        return Decision(target, switched, gain, reason, t, old, slot)
