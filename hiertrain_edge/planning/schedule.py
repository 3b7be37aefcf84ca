"""Schedules: a step's samples split into groups, each cut into device, edge and cloud slices.

A group of n samples with cuts (c1, c2) runs units [0, c1) on the device, [c1, c2) on
the edge and [c2, N) on the cloud:

    device         edge            cloud
    [0 .. c1)  ->  [c1 .. c2)  ->  [c2 .. N)   -> loss on the last tier that runs a unit

(N, N) is device-only, (0, N) the edge from raw input, (0, 0) the cloud from raw input.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from hiertrain_edge.errors import ScheduleError

TIERS = ("device", "edge", "cloud")
MAX_GROUPS = 3


@dataclass(frozen=True)
class Group:
    """n samples of the step, and the two cuts of the unit chain for them."""

    n: int
    c1: int
    c2: int

    def span(self, tier: str, num_units: int) -> tuple[int, int]:
        """The unit range [a, b) this group runs on `tier` (empty when a == b)."""
        if tier == "device":
            return 0, self.c1
        if tier == "edge":
            return self.c1, self.c2
        if tier == "cloud":
            return self.c2, num_units
        raise ScheduleError(f"unknown tier {tier!r}; expected one of {', '.join(TIERS)}")

    def loss_tier(self, num_units: int) -> str:
        """The tier that runs the last unit, computes the loss and needs the labels."""
        if self.c2 < num_units:
            return "cloud"
        if self.c1 < num_units:
            return "edge"
        return "device"

    def visits(self, tier: str, num_units: int) -> bool:
        """Whether this group's samples (raw or activations) reach `tier` at all."""
        order = TIERS.index(tier)
        return order <= TIERS.index(self.loss_tier(num_units))


@dataclass(frozen=True)
class Schedule:
    """Up to three groups whose sizes add up to the batch size."""

    groups: tuple[Group, ...]

    @property
    def batch_size(self) -> int:
        return sum(g.n for g in self.groups)

    def validate(self, num_units: int, batch_size: int | None = None) -> Schedule:
        if not 1 <= len(self.groups) <= MAX_GROUPS:
            raise ScheduleError(f"a schedule has 1 to {MAX_GROUPS} groups, got {len(self.groups)}")
        for i, g in enumerate(self.groups):
            if g.n <= 0:
                raise ScheduleError(f"group {i} has n={g.n}; every group needs n >= 1")
            if not 0 <= g.c1 <= g.c2 <= num_units:
                raise ScheduleError(
                    f"group {i} has cuts ({g.c1}, {g.c2}); expected 0 <= c1 <= c2 <= {num_units}"
                )
        if batch_size is not None and self.batch_size != batch_size:
            raise ScheduleError(
                f"group sizes add up to {self.batch_size}, expected the batch size {batch_size}"
            )
        return self

    def units_on(self, tier: str, num_units: int) -> set[int]:
        """Every unit the tier runs for some group: the tier's slice."""
        out: set[int] = set()
        for g in self.groups:
            a, b = g.span(tier, num_units)
            out.update(range(a, b))
        return out

    def owner(self, unit: int, num_units: int) -> str:
        """The tier that holds the unit's master weights and optimizer state.

        A unit run on one tier only is owned there, so it never crosses a link. A unit
        run on several tiers is owned by the edge, the one tier linked to both others,
        which sums the replicas' gradients and sends back the updated weights.
        """
        runners = [t for t in TIERS if unit in self.units_on(t, num_units)]
        return runners[0] if len(runners) == 1 else "edge"

    def owners(self, num_units: int) -> list[str]:
        return [self.owner(u, num_units) for u in range(num_units)]

    def replicated(self, tier: str, num_units: int) -> list[int]:
        """Units the tier runs but does not own: their gradients go to, and weights come
        from, the owner every step."""
        return sorted(
            u for u in self.units_on(tier, num_units) if self.owner(u, num_units) != tier
        )

    def dispatch_order(self, num_units: int) -> list[int]:
        """Indices of the groups the device sends on, in the order it sends them.

        Groups bound for the cloud go first, because they have the longest way to go;
        then groups that end on the edge. Every tier processes them in this order, and
        the cost model assumes it.
        """
        depth = {"cloud": 0, "edge": 1}
        offloaded = [i for i, g in enumerate(self.groups) if g.loss_tier(num_units) != "device"]
        return sorted(offloaded, key=lambda i: depth[self.groups[i].loss_tier(num_units)])

    def local_groups(self, num_units: int) -> list[int]:
        """Indices of the groups the device trains end to end."""
        return [i for i, g in enumerate(self.groups) if g.loss_tier(num_units) == "device"]

    def uses_cloud(self, num_units: int) -> bool:
        return bool(self.units_on("cloud", num_units))

    def offsets(self) -> list[int]:
        """Where each group's samples start in the step's batch."""
        out, at = [], 0
        for g in self.groups:
            out.append(at)
            at += g.n
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"groups": [{"n": g.n, "cuts": [g.c1, g.c2]} for g in self.groups]}

    @classmethod
    def from_dict(cls, data: Any) -> Schedule:
        try:
            groups = tuple(
                Group(int(g["n"]), int(g["cuts"][0]), int(g["cuts"][1])) for g in data["groups"]
            )
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ScheduleError(
                'schedule must look like {"groups": [{"n": int, "cuts": [c1, c2]}, ...]}, '
                f"got {data!r}"
            ) from exc
        if len(groups) != len(data["groups"]) or any(len(g["cuts"]) != 2 for g in data["groups"]):
            raise ScheduleError(f"every group needs exactly two cuts, got {data!r}")
        return cls(groups)

    @classmethod
    def parse(cls, text: str) -> Schedule:
        """Parse the flag form `n:c1:c2,n:c1:c2`, e.g. `24:6:6,20:2:6,20:2:4`."""
        groups = []
        for part in text.split(","):
            fields = part.strip().split(":")
            if len(fields) != 3 or not all(f.strip().lstrip("-").isdigit() for f in fields):
                raise ScheduleError(
                    f"schedule group {part!r} is not n:c1:c2 (e.g. 32:2:6); got {text!r}"
                )
            n, c1, c2 = (int(f) for f in fields)
            groups.append(Group(n, c1, c2))
        return cls(tuple(groups))

    def describe(self) -> str:
        return ", ".join(f"{g.n}@({g.c1},{g.c2})" for g in self.groups)

    def schedule_id(self) -> str:
        """A short stable id: the same groups always give the same id."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def device_only(num_units: int, batch_size: int) -> Schedule:
    return Schedule((Group(batch_size, num_units, num_units),))


def default_three_group(num_units: int, batch_size: int) -> Schedule:
    """A schedule in which all three tiers do real work, for the demo before planning.

    One group stays on the device, one runs the first units on the device and the rest
    on the edge, one chains device -> edge -> cloud.
    """
    if num_units < 3:
        raise ScheduleError(
            f"a three-tier chain needs at least 3 units, the model has {num_units}"
        )
    third = batch_size // 3
    if third == 0:
        raise ScheduleError(f"batch size {batch_size} is too small for three groups")
    c_early = max(1, num_units // 3)
    c_late = max(c_early + 1, (2 * num_units) // 3)
    return Schedule(
        (
            Group(batch_size - 2 * third, num_units, num_units),
            Group(third, c_early, num_units),
            Group(third, c_early, c_late),
        )
    )
