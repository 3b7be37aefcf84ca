"""The schedule table: the best schedule for every pair of link bandwidths, built where the
solver runs and shipped to the board as a compact, hashed msgpack file.

Keys. Both bandwidths (device<->edge and edge<->cloud, Mbit/s, the same both ways) lie on
one logarithmic grid, by default 0.1 Mbit/s to 10 Gbit/s with 8 points per decade (41
points per axis, neighbours 1.33x apart). Besides the 41 x 41 grid cells there is one
"cloud unreachable" entry per device<->edge grid point (the best schedule that runs no
unit on the cloud) and one "edge unreachable" entry (device only). Every entry is a
*slot*: grid cell (i, j) is slot i * size + j, cloud-down entry i is slot size**2 + i,
the edge-down entry is the last slot.

Values. Each slot holds the index of its schedule and that schedule's predicted step time.
Distinct schedules are stored once, and for every stored schedule its predicted time in
every slot (float16, 0.05% precision) so that the board can weigh a switch without a cost
model. Index -1 (NO_SCHEDULE) marks a slot where nothing fits (e.g. the model does not fit
the device's memory when the edge is unreachable).

How it is built (`build_table`), fast because the winner is piecewise constant:

1. *Seeds*: the planner solves every `seed_stride`-th grid point per axis (default once a
   decade), every seed of the cloud-down row, and the edge-down entry.
2. *Dense evaluation*: every schedule found is evaluated by the cost model in every slot
   at once (numpy over the whole grid, ~1.5 ms per schedule for VGG-11), and each slot
   takes the fastest.
3. *Refinement*: the planner solves the cells on the boundary between two regions, coarse
   lattice first, up to `max_refine_calls`; what it finds is evaluated everywhere.
4. *Sizes*: each cut tuple found is also tried with other group sizes (1 or multiples of
   B/8), evaluated densely with no planner call, since the best split of the batch
   drifts with the bandwidths between solved cells.
5. *Merge*: a schedule whose slots other stored schedules all serve within
   `merge_tolerance` (1%) of the best time found there is dropped.

So every slot holds, within 1%, the best of all schedules the planner returned anywhere
(and their re-sized variants); at the cells the planner solved it is within 1% of the
planner's own answer or better. Only `planner.plan` and the cost model are used.

File layout (msgpack): an envelope ``{"format", "version", "sha256", "body"}`` whose body
is the msgpack bytes of a map with sorted keys; sha256 is taken over exactly those bytes.
The solver, planner and cost model are imported inside `build_table` only, so that the
board, which only loads tables (planning/lookup.py), never imports them.
"""

from __future__ import annotations

import array
import hashlib
import json
import logging
import math
import struct
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import msgpack

from hiertrain_edge.errors import ConfigError, ScheduleError
from hiertrain_edge.planning.schedule import TIERS, Group, Schedule

log = logging.getLogger(__name__)

FORMAT_NAME = "hiertrain-edge/schedule-table"
FORMAT_VERSION = 1
MIN_MBPS = 0.1
MAX_MBPS = 10_000.0
POINTS_PER_DECADE = 8
MIN_POINTS_PER_DECADE = 8  # the floor: neighbouring keys at most 1.34x apart
NO_SCHEDULE = -1
SEED_STRIDE = 8  # the planner solves every 8th grid point per axis: once per decade
MAX_REFINE_CALLS = 48  # planner calls on region boundaries after the seeds
# A schedule is dropped when other stored schedules serve each of its slots within 1% of
# its time: fewer near-identical schedules (often the same cuts, sizes a few samples
# apart), a smaller file, and no switching between schedules that hardly differ.
MERGE_TOLERANCE = 0.01
SIZE_LATTICE_POINTS = 8  # group sizes tried per cut tuple: multiples of B / 8 (and 1)
LOOKUP_RULES = ("nearest", "floor")

# A solver answers (bw_de_mbps, bw_ec_mbps) with schedules, best first; 0 Mbit/s means
# the link is down. An evaluator gives one schedule's predicted time at many bandwidths.
Solver = Callable[[float, float], Sequence[Schedule]]
Evaluator = Callable[[Schedule, Any, Any], Any]


# --- the grid --------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """Bandwidths min_mbps * 10 ** (k / points_per_decade) for k = 0 .. size - 1."""

    min_mbps: float = MIN_MBPS
    points_per_decade: int = POINTS_PER_DECADE
    size: int = 41

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_mbps) and self.min_mbps > 0):
            raise ConfigError(f"grid min_mbps must be > 0 Mbit/s, got {self.min_mbps}")
        if self.points_per_decade < 1 or self.size < 2:
            raise ConfigError(
                f"grid needs >= 1 point per decade and >= 2 points, got "
                f"{self.points_per_decade} per decade and {self.size} points"
            )
        # Precomputed for `index`, which runs once per step on the board.
        object.__setattr__(self, "_log_min", math.log10(self.min_mbps))

    @classmethod
    def spanning(
        cls, min_mbps: float = MIN_MBPS, max_mbps: float = MAX_MBPS, per_decade: int = 8
    ) -> Grid:
        """The grid from min_mbps to at least max_mbps."""
        if not max_mbps > min_mbps:
            raise ConfigError(f"grid max {max_mbps} Mbit/s must exceed min {min_mbps} Mbit/s")
        steps = math.ceil(round(math.log10(max_mbps / min_mbps) * per_decade, 9))
        return cls(float(min_mbps), int(per_decade), steps + 1)

    @property
    def max_mbps(self) -> float:
        return self.value(self.size - 1)

    def value(self, k: int) -> float:
        return self.min_mbps * 10 ** (k / self.points_per_decade)

    def values(self) -> list[float]:
        return [self.value(k) for k in range(self.size)]

    def index(self, mbps: float, rule: str = "nearest") -> int:
        """The grid point for a measured bandwidth, in constant time, clamped to the grid.

        "nearest": the closest point on the log axis (rounding log10 at half a step);
        "floor": the largest point not above `mbps` (conservative: every schedule's time
        only grows as bandwidth falls, so the cell's prediction bounds the true one).
        """
        if not mbps > 0:  # also catches NaN
            return 0
        pos = (math.log10(mbps) - self._log_min) * self.points_per_decade  # type: ignore[attr-defined]
        k = math.floor(pos + 0.5) if rule == "nearest" else math.floor(pos + 1e-9)
        return 0 if k < 0 else (self.size - 1 if k >= self.size else k)

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_mbps": self.min_mbps,
            "points_per_decade": self.points_per_decade,
            "size": self.size,
            "max_mbps": self.max_mbps,
        }


DEFAULT_GRID = Grid.spanning(MIN_MBPS, MAX_MBPS, POINTS_PER_DECADE)


# --- identities ----------------------------------------------------------------------


def profile_hash(profile: Any) -> str:
    """sha256 of a tier profile's canonical JSON (a TierProfile, a dict, or a hash string)."""
    if isinstance(profile, str):
        return profile
    data = profile.model_dump(mode="json") if hasattr(profile, "model_dump") else profile
    blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True)
class JobIdentity:
    """What a job is, as far as a table must fit it; `profiles` (tier -> profile hash) is
    checked only when given, since a board may not know the other tiers' profiles."""

    model: str
    num_units: int
    batch_size: int
    profiles: Mapping[str, str] | None = None


class Entry(NamedTuple):
    """A table lookup: the slot, its schedule index (-1: none fits) and predicted time."""

    slot: int
    schedule_index: int
    predicted_s: float


# --- the table -------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleTable:
    """A loaded or freshly built schedule table; see the module docstring for slots."""

    model: str
    num_units: int
    batch_size: int
    profiles: dict[str, str]
    grid: Grid
    latency_s: tuple[float, float]  # one-way device<->edge, edge<->cloud
    unit_param_bytes: tuple[int, ...]
    unit_buffer_bytes: tuple[int, ...]
    schedules: tuple[Schedule, ...]
    slot_index: tuple[int, ...]  # per slot
    slot_time_s: tuple[float, ...]  # per slot, float32
    times_s: tuple[tuple[float, ...], ...]  # per schedule, per slot, float16
    build: dict[str, Any] = field(default_factory=dict)
    content_hash: str = ""

    # --- slots ---------------------------------------------------------------------

    @property
    def num_slots(self) -> int:
        return self.grid.size**2 + self.grid.size + 1

    def cell_slot(self, i: int, j: int) -> int:
        return i * self.grid.size + j

    def cloud_down_slot(self, i: int) -> int:
        return self.grid.size**2 + i

    @property
    def edge_down_slot(self) -> int:
        return self.grid.size**2 + self.grid.size

    def slot_name(self, slot: int) -> str:
        n = self.grid.size
        if slot == self.edge_down_slot:
            return "edge unreachable"
        if slot >= n * n:
            return f"cloud unreachable, device<->edge {self.grid.value(slot - n * n):.3g} Mbit/s"
        i, j = divmod(slot, n)
        return f"{self.grid.value(i):.3g} / {self.grid.value(j):.3g} Mbit/s"

    def slot_of(
        self,
        bw_de_mbps: float,
        bw_ec_mbps: float,
        cloud_ok: bool = True,
        edge_ok: bool = True,
        rule: str = "nearest",
    ) -> int:
        """The slot for measured bandwidths and reachability, in constant time."""
        grid = self.grid
        n = grid.size
        if not edge_ok:
            return n * n + n
        i = grid.index(bw_de_mbps, rule)
        if not cloud_ok:
            return n * n + i
        return i * n + grid.index(bw_ec_mbps, rule)

    def lookup(
        self,
        bw_de_mbps: float,
        bw_ec_mbps: float,
        cloud_ok: bool = True,
        edge_ok: bool = True,
        rule: str = "nearest",
    ) -> Entry:
        slot = self.slot_of(bw_de_mbps, bw_ec_mbps, cloud_ok, edge_ok, rule)
        return Entry(slot, self.slot_index[slot], self.slot_time_s[slot])

    def time_of(self, schedule_index: int, slot: int) -> float:
        """Predicted step time of a stored schedule in a slot (inf where it cannot run)."""
        return self.times_s[schedule_index][slot]

    def index_of(self, schedule: Schedule) -> int | None:
        """The index of a stored schedule with the same groups, None when not stored."""
        for k, s in enumerate(self.schedules):
            if s.groups == schedule.groups:
                return k
        return None

    # --- matching the job -----------------------------------------------------------

    def mismatches(self, job: JobIdentity) -> list[str]:
        """Every way this table differs from `job`, as readable phrases (empty: it fits)."""
        out = []
        if job.model != self.model:
            out.append(f"model {self.model!r} (job: {job.model!r})")
        if job.num_units != self.num_units:
            out.append(f"{self.num_units} units (job: {job.num_units})")
        if job.batch_size != self.batch_size:
            out.append(f"batch size {self.batch_size} (job: {job.batch_size})")
        for tier, digest in sorted((job.profiles or {}).items()):
            mine = self.profiles.get(tier)
            if mine != digest:
                out.append(f"{tier} profile {str(mine)[:12]} (job: {digest[:12]})")
        return out

    def matches(self, job: JobIdentity) -> bool:
        return not self.mismatches(job)

    def require_match(self, job: JobIdentity) -> None:
        """Raise ConfigError naming every difference when the table was built for
        another job."""
        diff = self.mismatches(job)
        if diff:
            raise ConfigError(
                f"schedule table {self.content_hash[:12]} does not match this job: it was "
                f"built for {'; '.join(diff)}; rebuild it with `hiertrain-edge table build`"
            )

    # --- serialising ---------------------------------------------------------------

    def body(self) -> dict[str, Any]:
        n_slots = self.num_slots
        return {
            "model": {
                "name": self.model,
                "num_units": self.num_units,
                "batch_size": self.batch_size,
                "unit_param_bytes": list(self.unit_param_bytes),
                "unit_buffer_bytes": list(self.unit_buffer_bytes),
            },
            "profiles": dict(self.profiles),
            "grid": self.grid.to_dict(),
            "latency_s": {"de": self.latency_s[0], "ec": self.latency_s[1]},
            "schedules": [[[g.n, g.c1, g.c2] for g in s.groups] for s in self.schedules],
            "slots": {
                "count": n_slots,
                "index": _pack_array("h", self.slot_index),
                "time_s": _pack_array("f", self.slot_time_s),
                "times_s": b"".join(_pack_f16(t) for t in self.times_s),
            },
            "build": dict(self.build),
        }

    def to_bytes(self) -> bytes:
        body = _canonical_bytes(self.body())
        return msgpack.packb(
            {
                "format": FORMAT_NAME,
                "version": FORMAT_VERSION,
                "sha256": hashlib.sha256(body).hexdigest(),
                "body": body,
            },
            use_bin_type=True,
        )

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(self.to_bytes())
        return p

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "schedule table") -> ScheduleTable:
        """Load and validate a table; ConfigError naming the first problem found."""
        return _parse(data, where)

    @classmethod
    def load(cls, path: str | Path) -> ScheduleTable:
        p = Path(path)
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read schedule table {str(p)!r}: {exc.strerror}") from exc
        return _parse(data, str(p))

    # --- summary -------------------------------------------------------------------

    def usage(self) -> list[int]:
        """How many slots each stored schedule wins."""
        counts = [0] * len(self.schedules)
        for k in self.slot_index:
            if k >= 0:
                counts[k] += 1
        return counts


# --- encoding helpers ----------------------------------------------------------------


def _pack_array(code: str, values: Sequence[float]) -> bytes:
    arr = array.array(code, values)
    if sys.byteorder != "little":
        arr.byteswap()
    return arr.tobytes()


def _unpack_array(code: str, blob: bytes, count: int, what: str) -> tuple:
    arr = array.array(code)
    if len(blob) != count * arr.itemsize:
        raise ConfigError(f"{what} has {len(blob)} bytes, expected {count * arr.itemsize}")
    arr.frombytes(blob)
    if sys.byteorder != "little":
        arr.byteswap()
    return tuple(arr)


F16_MAX = 65504.0  # the largest finite float16; longer step times are stored as inf


def _pack_f16(values: Sequence[float]) -> bytes:
    clipped = [v if v <= F16_MAX else math.inf for v in values]
    return struct.pack(f"<{len(clipped)}e", *clipped)


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _canonical(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def _canonical_bytes(body: dict[str, Any]) -> bytes:
    return msgpack.packb(_canonical(body), use_bin_type=True)


# --- loading and validating ------------------------------------------------------------


def _need(mapping: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise ConfigError(f"{where}: missing field {key!r}")
    value = mapping[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}: field {key!r} must be {names}, got {value!r:.60}")
    return value


def _parse(data: bytes, where: str) -> ScheduleTable:
    # 1. Envelope: format, version and the hash of the body's exact bytes.
    try:
        env = msgpack.unpackb(data, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ConfigError(f"{where} is not a msgpack schedule table ({exc})") from exc
    if not isinstance(env, dict) or env.get("format") != FORMAT_NAME:
        got = env.get("format") if isinstance(env, dict) else type(env).__name__
        raise ConfigError(
            f"{where} is not a schedule table: format {got!r}, expected {FORMAT_NAME!r}"
        )
    version = env.get("version")
    if version != FORMAT_VERSION:
        raise ConfigError(
            f"{where}: table format version {version!r} is not supported; this hiertrain-edge "
            f"reads version {FORMAT_VERSION}; rebuild the table with this version"
        )
    body_bytes = _need(env, "body", bytes, where)
    digest = _need(env, "sha256", str, where)
    actual = hashlib.sha256(body_bytes).hexdigest()
    if actual != digest:
        raise ConfigError(
            f"{where}: content hash mismatch (file says {digest[:12]}, body hashes to "
            f"{actual[:12]}); the table is damaged"
        )
    try:
        body = msgpack.unpackb(body_bytes, raw=False)
    except Exception as exc:
        raise ConfigError(f"{where}: body is not msgpack ({exc})") from exc

    # 2. Model, profiles, grid, latencies.
    model = _need(body, "model", dict, where)
    name = _need(model, "name", str, f"{where}: model")
    num_units = _need(model, "num_units", int, f"{where}: model")
    batch_size = _need(model, "batch_size", int, f"{where}: model")
    if num_units < 1 or batch_size < 1:
        raise ConfigError(
            f"{where}: model needs >= 1 unit and batch size >= 1, got {num_units} units and "
            f"batch size {batch_size}"
        )
    per_unit = []
    for key in ("unit_param_bytes", "unit_buffer_bytes"):
        values = _need(model, key, list, f"{where}: model")
        if len(values) != num_units or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values
        ):
            raise ConfigError(
                f"{where}: model.{key} must list {num_units} byte counts >= 0, got {values!r:.80}"
            )
        per_unit.append(tuple(values))
    profiles = _need(body, "profiles", dict, where)
    if sorted(profiles) != sorted(TIERS) or not all(
        isinstance(v, str) and len(v) == 64 for v in profiles.values()
    ):
        raise ConfigError(
            f"{where}: profiles must map device, edge and cloud to sha256 hex digests, got "
            f"{profiles!r:.120}"
        )
    g = _need(body, "grid", dict, where)
    grid = Grid(
        float(_need(g, "min_mbps", (int, float), f"{where}: grid")),
        _need(g, "points_per_decade", int, f"{where}: grid"),
        _need(g, "size", int, f"{where}: grid"),
    )
    lat = _need(body, "latency_s", dict, where)
    latency = tuple(
        float(_need(lat, k, (int, float), f"{where}: latency_s")) for k in ("de", "ec")
    )

    # 3. Schedules: each must fit the model and the batch.
    raw = _need(body, "schedules", list, where)
    schedules = []
    for k, groups in enumerate(raw):
        try:
            sched = Schedule(tuple(Group(int(n), int(c1), int(c2)) for n, c1, c2 in groups))
            sched.validate(num_units, batch_size)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: schedule {k} ({groups!r:.80}) is invalid: {exc}") from exc
        schedules.append(sched)

    # 4. Slots: indices within range, times for each schedule in every slot.
    slots = _need(body, "slots", dict, where)
    count = _need(slots, "count", int, f"{where}: slots")
    expected = grid.size**2 + grid.size + 1
    if count != expected:
        raise ConfigError(
            f"{where}: {count} slots for a {grid.size}-point grid, expected {expected}"
        )
    index = _unpack_array("h", _need(slots, "index", bytes, where), count, f"{where}: slot index")
    bad = [k for k in index if not NO_SCHEDULE <= k < len(schedules)]
    if bad:
        raise ConfigError(
            f"{where}: slot schedule index {bad[0]} out of range; {len(schedules)} schedules"
        )
    time_s = _unpack_array("f", _need(slots, "time_s", bytes, where), count, f"{where}: slot time")
    blob = _need(slots, "times_s", bytes, where)
    if len(blob) != 2 * count * len(schedules):
        raise ConfigError(
            f"{where}: per-schedule times have {len(blob)} bytes, expected "
            f"{2 * count * len(schedules)} ({len(schedules)} schedules x {count} slots x 2)"
        )
    flat = struct.unpack(f"<{count * len(schedules)}e", blob)
    times = tuple(flat[k * count : (k + 1) * count] for k in range(len(schedules)))
    build = body.get("build", {})
    return ScheduleTable(
        name,
        num_units,
        batch_size,
        dict(profiles),
        grid,
        latency,  # type: ignore[arg-type]
        per_unit[0],
        per_unit[1],
        tuple(schedules),
        index,
        time_s,
        times,
        dict(build) if isinstance(build, dict) else {},
        actual,
    )


# --- building ------------------------------------------------------------------------


def planner_solver(
    facts: Any, profiles: Mapping[str, Any], batch_size: int, latency_s, checkpoints=None
):
    """The default solver: the planner's best schedule and its baselines at one pair of
    bandwidths (symmetric links); none when nothing fits."""
    from hiertrain_edge.planning.cost import Links
    from hiertrain_edge.planning.planner import plan

    def solve(bw_de_mbps: float, bw_ec_mbps: float) -> list[Schedule]:
        links = Links.symmetric(bw_de_mbps, bw_ec_mbps, latency_s[0], latency_s[1])
        try:
            p = plan(facts, dict(profiles), links, batch_size, checkpoints=checkpoints)
        except ScheduleError:
            return []
        extra = [s for s in getattr(p, "baseline_schedules", {}).values() if s is not None]
        return [p.schedule, *extra]

    return solve


def cost_evaluator(
    facts: Any, profiles: Mapping[str, Any], latency_s, checkpoints=None
) -> Evaluator:
    """The default evaluator: the cost model's predicted time of one schedule at arrays of
    bandwidths (Mbit/s, symmetric links), computed for all of them in one pass.

    The cost model's `step_time` is written for floats and numpy arrays of group sizes; it
    is given arrays of bandwidths here through a links object whose bytes-per-second
    values are arrays that answer "is the link down?" for the whole grid at once. If the
    cost model ever stops accepting that, each point is evaluated on its own (same
    numbers, slower); tests/planning/test_table_build.py checks both agree.
    """
    import numpy as np

    from hiertrain_edge.planning.cost import CostModel, Links

    base = CostModel.build(
        facts, dict(profiles), Links.symmetric(1.0, 1.0, *latency_s), checkpoints
    )

    class Rate(np.ndarray):
        """Bytes per second over many grid points, all > 0."""

        def __le__(self, other):  # `if bps <= 0` in the cost model: is any link down?
            return bool(np.any(np.asarray(self) <= other))

        def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
            inputs = tuple(np.asarray(x) if isinstance(x, Rate) else x for x in inputs)
            return getattr(ufunc, method)(*inputs, **kwargs)

    @dataclass(frozen=True)
    class GridLinks:
        de_mbps: Any
        ec_mbps: Any
        de_latency_s: float
        ec_latency_s: float

        @property
        def ed_mbps(self):
            return self.de_mbps

        @property
        def ce_mbps(self):
            return self.ec_mbps

        def bytes_per_s(self):
            de = (self.de_mbps * 1e6 / 8).view(Rate)
            ec = (self.ec_mbps * 1e6 / 8).view(Rate)
            return de, de, ec, ec

    fallback = {"used": False}

    def scalar(schedule: Schedule, de: float, ec: float) -> float:
        links = Links.symmetric(float(de), float(ec), *latency_s)
        return float(base.with_links(links).predict(schedule))

    def evaluate(schedule: Schedule, de_mbps, ec_mbps):
        de, ec = np.broadcast_arrays(np.asarray(de_mbps, float), np.asarray(ec_mbps, float))
        de, ec = de.copy(), ec.copy()
        out = np.full(de.shape, np.inf)
        n_units = base.num_units
        cuts = [(g.c1, g.c2) for g in schedule.groups]
        if not bool(base.fits_memory(cuts, [g.n for g in schedule.groups])):
            return out  # a tier's memory budget is exceeded at any bandwidth
        # A link that is down makes every schedule that needs it infeasible (inf). A
        # schedule that does not use the cloud never touches the edge<->cloud link, so its
        # time there does not depend on that bandwidth: evaluate it at any positive one.
        if not schedule.uses_cloud(n_units):
            ec[ec <= 0] = 1.0
        up = (de > 0) & (ec > 0)
        down = ~up
        if up.any() and not fallback["used"]:
            try:
                model = base.with_links(GridLinks(de[up], ec[up], *latency_s))
                ns = [np.full(int(up.sum()), float(g.n)) for g in schedule.groups]
                out[up] = np.asarray(model.step_time(cuts, ns), float)
            except (TypeError, ValueError, AttributeError) as exc:
                log.warning(
                    "vectorised cost evaluation failed (%s); evaluating point by point", exc
                )
                fallback["used"] = True
        # Points with a link down: a schedule that sends data over it cannot run there
        # (inf, as the cost model says); only a device-only schedule is evaluated.
        local = all(g.c1 == n_units for g in schedule.groups)
        rest = np.ones(de.shape, bool) if fallback["used"] else down & local
        for k in zip(*np.nonzero(rest), strict=True):
            out[k] = scalar(schedule, de[k], ec[k])
        return out

    evaluate.fallback = fallback  # type: ignore[attr-defined]
    return evaluate


def build_table(
    facts: Any,
    profiles: Mapping[str, Any],
    batch_size: int,
    *,
    latency_s: tuple[float, float] = (0.0, 0.0),
    grid: Grid = DEFAULT_GRID,
    seed_stride: int = SEED_STRIDE,
    max_refine_calls: int = MAX_REFINE_CALLS,
    merge_tolerance: float = MERGE_TOLERANCE,
    size_step: int | None = None,
    solve: Solver | None = None,
    evaluate: Evaluator | None = None,
    checkpoints: Any = None,
) -> ScheduleTable:
    """Build the table for one model (`ModelFacts` or `ModelSpec`), three tier profiles
    (TierProfile objects, keyed device/edge/cloud) and a batch size; `checkpoints`
    (cost.Checkpoints) prices the job's periodic snapshot in every step.

    `solve` and `evaluate` default to the planner and the cost model; tests pass their
    own. Raises ConfigError on a bad grid or inputs.
    """
    import numpy as np

    t0 = time.perf_counter()
    if grid.points_per_decade < MIN_POINTS_PER_DECADE:
        raise ConfigError(
            f"a table needs >= {MIN_POINTS_PER_DECADE} grid points per decade, got "
            f"{grid.points_per_decade}"
        )
    if seed_stride < 1:
        raise ConfigError(f"seed stride must be >= 1 grid point, got {seed_stride}")
    if size_step is None:
        size_step = max(1, batch_size // SIZE_LATTICE_POINTS)
    missing = [t for t in TIERS if t not in profiles]
    if missing:
        raise ConfigError(f"no profile for tier(s) {', '.join(missing)}; need {TIERS}")
    if not hasattr(facts, "param_bytes"):
        from hiertrain_edge.profiling.measure import model_facts

        facts = model_facts(facts)
    if solve is None:
        solve = planner_solver(facts, profiles, batch_size, latency_s, checkpoints)
    if evaluate is None:
        evaluate = cost_evaluator(facts, profiles, latency_s, checkpoints)

    # Slot coordinates: grid cells, then the cloud-down row (ec = 0), then edge-down.
    n = grid.size
    values = np.array(grid.values())
    de = np.concatenate([np.repeat(values, n), values, [0.0]])
    ec = np.concatenate([np.tile(values, n), np.zeros(n), [0.0]])
    num_slots = n * n + n + 1

    found: list[Schedule] = []
    times: list[np.ndarray] = []
    best_t = np.full(num_slots, np.inf)
    best_k = np.full(num_slots, NO_SCHEDULE)
    solved: set[int] = set()
    calls = 0

    def add(schedules: Sequence[Schedule]) -> None:
        for s in schedules:
            s.validate(facts.num_units, batch_size)
            if any(f.groups == s.groups for f in found):
                continue
            t = np.asarray(evaluate(s, de, ec), float)
            found.append(s)
            times.append(t)
            better = t < best_t
            best_t[better] = t[better]
            best_k[better] = len(found) - 1

    def solve_slot(slot: int) -> None:
        nonlocal calls
        calls += 1
        solved.add(slot)
        add(solve(float(de[slot]), float(ec[slot])))

    # 1. Seeds: every `seed_stride`-th point per axis and the last, cloud-down, edge-down.
    seeds = sorted({*range(0, n, seed_stride), n - 1})
    for i in seeds:
        for j in seeds:
            solve_slot(i * n + j)
        solve_slot(n * n + i)
    solve_slot(num_slots - 1)
    seed_calls = calls

    # 2. Dense evaluation happened in `add`. 3. Refinement on region boundaries.
    refined = 0
    while refined < max_refine_calls:
        todo = _boundary_slots(best_k, n, solved)
        if not todo:
            break
        for slot in todo[: max_refine_calls - refined]:
            solve_slot(slot)
            refined += 1

    # 4. Sizes: every cut tuple found, with its group sizes on a lattice of `size_step`
    # samples, evaluated densely (no planner calls): between the solved cells the best
    # split of the batch drifts with the bandwidths.
    if size_step > 0:
        tuples = sorted({tuple((g.c1, g.c2) for g in s.groups) for s in found})
        for cuts in tuples:
            add(
                [
                    Schedule(tuple(Group(m, c1, c2) for m, (c1, c2) in zip(ns, cuts, strict=True)))
                    for ns in _size_lattice(batch_size, len(cuts), size_step)
                ]
            )

    # 5. Merge near-duplicates, least used first, against the best time found (so the
    # loss never accumulates beyond `merge_tolerance` in any slot).
    if merge_tolerance > 0 and found:
        all_t = np.array(times)
        found_t = best_t.copy()
        alive = sorted({int(k) for k in best_k if k >= 0})
        for k in sorted(alive, key=lambda k: (int((best_k == k).sum()), k)):
            mine = best_k == k
            others = [m for m in alive if m != k]
            if not others:
                continue
            alt = all_t[others][:, mine]
            if np.all(alt.min(axis=0) <= found_t[mine] * (1 + merge_tolerance)):
                alive.remove(k)
                best_k[mine] = np.array(others)[alt.argmin(axis=0)]
                best_t[mine] = alt.min(axis=0)

    # Keep only the schedules that win somewhere, renumbered in order of first use.
    used = sorted({int(k) for k in best_k if k >= 0})
    renumber = {k: r for r, k in enumerate(used)}
    slot_index = tuple(renumber.get(int(k), NO_SCHEDULE) for k in best_k)
    slot_time = tuple(
        float(t) if k >= 0 else math.inf for t, k in zip(best_t, best_k, strict=True)
    )
    build_s = time.perf_counter() - t0
    table = ScheduleTable(
        model=facts.name,
        num_units=facts.num_units,
        batch_size=batch_size,
        profiles={t: profile_hash(profiles[t]) for t in TIERS},
        grid=grid,
        latency_s=(float(latency_s[0]), float(latency_s[1])),
        unit_param_bytes=tuple(int(b) for b in facts.param_bytes),
        unit_buffer_bytes=tuple(int(b) for b in facts.buffer_bytes),
        schedules=tuple(found[k] for k in used),
        slot_index=slot_index,
        slot_time_s=slot_time,
        times_s=tuple(tuple(float(x) for x in times[k]) for k in used),
        build={
            "planner_calls": calls,
            "seed_calls": seed_calls,
            "refine_calls": refined,
            "candidates": len(found),
            "merge_tolerance": merge_tolerance,
            "checkpoints": None if checkpoints is None else asdict(checkpoints),
        },
    )
    # Round-trip through the file format so a built table equals a loaded one.
    table = ScheduleTable.from_bytes(table.to_bytes())
    log.info(
        "built schedule table for %s at B=%d: %d schedules over %d slots, %d planner calls "
        "(%d seeds, %d on boundaries), %.2f s",
        facts.name,
        batch_size,
        len(used),
        num_slots,
        calls,
        seed_calls,
        refined,
        build_s,
    )
    return table


def _size_lattice(batch_size: int, parts: int, step: int) -> list[tuple[int, ...]]:
    """Group sizes >= 1 adding up to the batch, each 1 or a multiple of `step`, except the
    last, which takes the rest."""
    if parts == 1:
        return [(batch_size,)]
    values = sorted({1, *range(step, batch_size, step)})
    out = []
    for head in _size_lattice_heads(values, parts - 1, batch_size - 1):
        out.append((*head, batch_size - sum(head)))
    return out


def _size_lattice_heads(values: list[int], parts: int, limit: int):
    if parts == 0:
        yield ()
        return
    for v in values:
        if v <= limit - (parts - 1):
            for rest in _size_lattice_heads(values, parts - 1, limit - v):
                yield (v, *rest)


def _boundary_slots(best_k, n: int, solved: set[int]) -> list[int]:
    """Unsolved grid cells whose schedule differs from a neighbour's, coarse lattice first
    (cells whose coordinates are multiples of larger powers of two), and likewise on the
    cloud-down row."""
    out = []
    for i in range(n):
        for j in range(n):
            s = i * n + j
            if s in solved:
                continue
            k = best_k[s]
            nbrs = [(i + a, j + b) for a, b in ((1, 0), (-1, 0), (0, 1), (0, -1))]
            if any(0 <= x < n and 0 <= y < n and best_k[x * n + y] != k for x, y in nbrs):
                out.append((-_lattice_level(i, j), s))
    for i in range(n):
        s = n * n + i
        if s in solved:
            continue
        if any(0 <= x < n and best_k[n * n + x] != best_k[s] for x in (i - 1, i + 1)):
            out.append((-_lattice_level(i, 0), s))
    out.sort()
    return [s for _, s in out]


def _lattice_level(i: int, j: int) -> int:
    """How coarse a lattice the cell lies on: the power of two dividing both coordinates."""
    level = 0
    while level < 6 and i % (2 ** (level + 1)) == 0 and j % (2 ** (level + 1)) == 0:
        level += 1
    return level
