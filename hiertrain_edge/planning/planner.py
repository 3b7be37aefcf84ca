"""The planner: the schedule of at most three groups with the smallest predicted step
time, a lower bound no schedule can beat, and the single-tier and two-tier baselines.

Search space: up to three groups, each a size n >= 1 and cuts 0 <= c1 <= c2 <= N,
sizes summing to the batch size B, every tier's peak memory within its budget.

How it searches. The step time is order-dependent only through the dispatch order, so
a candidate is a *cut tuple*: groups listed cloud-bound first, then edge-terminal, then
at most one device-local group (two local groups are never better than one: their
work adds up and each costs its fixed overhead). For a fixed cut tuple the step time is
a convex piecewise-linear function of the sizes (cost.py), evaluated for *all* integer
size vectors at once with numpy, so each tuple's best sizes are exact.

* Small spaces (few units, small B): every cut tuple is evaluated; the result is the
  exact optimum and the lower bound equals it (gap 0).
* Large spaces: a lower bound per cut multiset from resource loads (each tier's busy
  time and each link direction's transfer time, all affine in the sizes; their maximum
  can only underestimate the step time) prunes the space; the remaining tuples are
  evaluated in increasing bound order until the bound reaches the best time found or the
  time budget runs out. The certified lower bound is the smaller of the best time and
  the smallest bound left unevaluated; gap = predicted / lower bound - 1.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hiertrain_edge.errors import ConfigError, ScheduleError
from hiertrain_edge.models import ModelSpec
from hiertrain_edge.planning.cost import CostModel, Links
from hiertrain_edge.planning.schedule import Group, Schedule
from hiertrain_edge.profiling.measure import ModelFacts
from hiertrain_edge.profiling.profile import TierProfile

log = logging.getLogger(__name__)

MAX_GROUPS = 3
EXHAUSTIVE_MAX_TUPLES = 6000  # evaluate every cut tuple up to this many
DEFAULT_BUDGET_S = 0.5  # wall-clock budget of the pruned search on large spaces
BASELINES = ("device_only", "edge_only", "cloud_only", "best_two_tier")


@dataclass
class Plan:
    """The planner's answer; times in seconds, inf where a baseline is infeasible."""

    schedule: Schedule
    predicted_s: float
    lower_bound_s: float
    gap: float
    baselines: dict[str, float]
    solve_ms: float
    exact: bool
    evaluated: int = 0
    baseline_schedules: dict[str, Schedule | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The `hiertrain-edge plan --json` object (infeasible baselines are null)."""
        return {
            "schedule": self.schedule.to_dict(),
            "predicted_s": self.predicted_s,
            "baselines": {k: (v if math.isfinite(v) else None) for k, v in self.baselines.items()},
            "lower_bound_s": self.lower_bound_s,
            "gap": self.gap,
            "solve_ms": self.solve_ms,
        }


# --- the space --------------------------------------------------------------------------


def cut_pairs(num_units: int) -> list[tuple[int, int]]:
    return [(c1, c2) for c2 in range(num_units + 1) for c1 in range(c2 + 1)]


def _depth(pair: tuple[int, int], num_units: int) -> int:
    """0 cloud-bound, 1 edge-terminal, 2 device-local: the dispatch order's key."""
    c1, c2 = pair
    if c2 < num_units:
        return 0
    return 1 if c1 < num_units else 2


def cut_tuples(num_units: int, max_groups: int = MAX_GROUPS):
    """Every distinct cut tuple: ordered within a class, classes in dispatch order, at
    most one device-local group."""
    pairs = cut_pairs(num_units)
    by_class = [[p for p in pairs if _depth(p, num_units) == d] for d in range(3)]
    for k in range(1, max_groups + 1):
        for kc in range(k + 1):
            for ke in range(k - kc + 1):
                kl = k - kc - ke
                if kl > 1:
                    continue
                for cl in itertools.product(by_class[0], repeat=kc):
                    for ed in itertools.product(by_class[1], repeat=ke):
                        for lo in itertools.product(by_class[2], repeat=kl):
                            yield cl + ed + lo


def count_cut_tuples(num_units: int, max_groups: int = MAX_GROUPS) -> int:
    n_cloud = num_units * (num_units + 1) // 2
    n_edge = num_units
    total = 0
    for k in range(1, max_groups + 1):
        for kc in range(k + 1):
            for ke in range(k - kc + 1):
                if k - kc - ke <= 1:
                    total += n_cloud**kc * n_edge**ke
    return total


_COMPOSITIONS: dict[tuple[int, int], list[np.ndarray]] = {}


def compositions(total: int, parts: int) -> list[np.ndarray]:
    """Every way to write `total` as `parts` positive integers, as one array per part."""
    key = (total, parts)
    if key not in _COMPOSITIONS:
        if parts == 1:
            cols = [np.array([total], dtype=float)]
        elif parts == 2:
            a = np.arange(1, total, dtype=float)
            cols = [a, total - a]
        else:
            a, b = np.meshgrid(np.arange(1, total), np.arange(1, total), indexing="ij")
            keep = a + b < total
            a, b = a[keep].astype(float), b[keep].astype(float)
            cols = [a, b, total - a - b]
        _COMPOSITIONS[key] = cols
    return _COMPOSITIONS[key]


# --- evaluating one cut tuple -----------------------------------------------------------


def best_sizes(
    model: CostModel, cuts: tuple[tuple[int, int], ...], batch_size: int
) -> tuple[float, list[int] | None]:
    """The exact best integer sizes for a cut tuple, and their step time (inf, None when
    no sizes fit memory or a needed link is down)."""
    k = len(cuts)
    if k > batch_size:
        return math.inf, None
    cols = compositions(batch_size, k)
    times = np.asarray(model.step_time(list(cuts), cols), dtype=float)
    if times.ndim == 0:
        times = np.full(cols[0].shape, float(times))
    fits = np.asarray(model.fits_memory(list(cuts), cols))
    times = np.where(fits, times, np.inf)
    i = int(np.argmin(times))
    if not math.isfinite(times[i]):
        return math.inf, None
    return float(times[i]), [int(c[i]) for c in cols]


def _schedule(cuts, sizes) -> Schedule:
    return Schedule(tuple(Group(n, c1, c2) for (c1, c2), n in zip(cuts, sizes, strict=True)))


# --- lower bounds -----------------------------------------------------------------------


def _load_rows(model: CostModel, pair: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-resource work of one group on `pair`: fixed seconds and seconds per sample.

    Rows: device, edge, cloud, then the four link directions. Message overheads are
    counted on the sender and receiver as in cost.py; replication traffic is left out
    (it only adds), so the rows never overestimate.
    """
    N = model.num_units
    D, E, C = (model.tiers[t] for t in ("device", "edge", "cloud"))
    bps = model.links.bytes_per_s()
    c1, c2 = pair
    a, b = np.zeros(7), np.zeros(7)
    depth = _depth(pair, N)

    def link(i: int, per_sample: float) -> None:
        if per_sample > 0:
            b[i] += per_sample / bps[i] if bps[i] > 0 else math.inf

    if depth == 2:
        a[0] += D.fwd(0, N, 0) + D.bwd(0, N, 0)
        b[0] += D.fwd(0, N, 1) + D.bwd(0, N, 1) - a[0]
        return a, b
    # device slice and the fwd / bwd messages of this group
    a[0] += D.fwd(0, c1, 0) + D.bwd(0, c1, 0) + D.message_s
    b[0] += (D.fwd(0, c1, 1) - D.fwd(0, c1, 0)) + (D.bwd(0, c1, 1) - D.bwd(0, c1, 0))
    link(0, model.act_bytes(c1) + 8)
    if c1 > 0:
        link(1, model.act_bytes(c1))
    if depth == 1:
        a[1] += E.fwd(c1, N, 0) + E.bwd(c1, N, 0) + E.message_s
        b[1] += (E.fwd(c1, N, 1) - E.fwd(c1, N, 0)) + (E.bwd(c1, N, 1) - E.bwd(c1, N, 0))
        return a, b
    a[1] += E.fwd(c1, c2, 0) + E.bwd(c1, c2, 0) + 2 * E.message_s
    b[1] += (E.fwd(c1, c2, 1) - E.fwd(c1, c2, 0)) + (E.bwd(c1, c2, 1) - E.bwd(c1, c2, 0))
    a[2] += C.fwd(c2, N, 0) + C.bwd(c2, N, 0) + C.message_s
    b[2] += (C.fwd(c2, N, 1) - C.fwd(c2, N, 0)) + (C.bwd(c2, N, 1) - C.bwd(c2, N, 0))
    link(2, model.act_bytes(c2) + 8)
    if c2 > 0:
        link(3, model.act_bytes(c2))
    return a, b


def _tuple_bounds(
    A: np.ndarray, Bm: np.ndarray, combos: np.ndarray, batch_size: int, weights: np.ndarray
) -> np.ndarray:
    """A lower bound on every cut multiset in `combos` (rows of pair indices).

    For any weights w >= 0 summing to 1, max_r load_r(n) >= sum_r w_r load_r(n), whose
    minimum over sizes puts one sample on each group and the rest on the group with the
    smallest weighted per-sample cost. The best bound over a few weight vectors is kept.
    """
    best = np.zeros(len(combos))
    k = combos.shape[1]
    for w in weights:
        on = w > 0  # skip zero weights: 0 * inf (a link that is down) is no bound
        fa = A[:, on] @ w[on]  # fixed seconds, per pair
        cb = (Bm[:, on] * w[on]).sum(axis=1)  # seconds per sample, per pair
        fixed = fa[combos].sum(axis=1) + cb[combos].sum(axis=1)
        bound = fixed + (batch_size - k) * cb[combos].min(axis=1)
        best = np.maximum(best, bound)
    return best


# --- the planner --------------------------------------------------------------------


def plan(
    spec: ModelSpec | ModelFacts,
    profiles: dict[str, TierProfile],
    links: Links,
    batch_size: int,
    memory_budgets: dict[str, int] | None = None,
    budget_s: float = DEFAULT_BUDGET_S,
) -> Plan:
    """The fastest schedule the planner finds for one step of `batch_size` samples.

    `memory_budgets` (bytes per tier) override the profiles' budgets. Raises ScheduleError
    when no schedule fits memory and the links, ConfigError on bad inputs.
    """
    t0 = time.perf_counter()
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    model = CostModel.build(spec, profiles, links)
    if memory_budgets:
        model = _with_budgets(model, memory_budgets)
    N = model.num_units

    # Baselines and every single-group schedule: always evaluated, so the plan is never
    # worse than any of them.
    results: dict[tuple, tuple[float, list[int] | None]] = {}
    for pair in cut_pairs(N):
        results[(pair,)] = best_sizes(model, (pair,), batch_size)
    baselines, base_scheds = _baselines(results, N, batch_size)

    if count_cut_tuples(N) <= EXHAUSTIVE_MAX_TUPLES:
        for cuts in cut_tuples(N):
            if cuts not in results:
                results[cuts] = best_sizes(model, cuts, batch_size)
        best_cuts = min(results, key=lambda c: results[c][0])
        best_t, sizes = results[best_cuts]
        lower, exact = best_t, True
    else:
        best_cuts, best_t, sizes, lower = _pruned_search(model, batch_size, results, budget_s)
        exact = lower >= best_t
    if sizes is None or not math.isfinite(best_t):
        raise ScheduleError(
            f"no schedule of {batch_size} samples fits: every tier's memory budget is "
            f"exceeded or a link it needs has 0 bandwidth ({_describe_links(links)})"
        )
    schedule = _schedule(best_cuts, sizes)
    lower = min(lower, best_t)
    gap = best_t / lower - 1 if lower > 0 else 0.0
    solve_ms = (time.perf_counter() - t0) * 1000
    log.info(
        "planned %s: %.4f s per step (lower bound %.4f s, gap %.2f%%) in %.1f ms",
        schedule.describe(),
        best_t,
        lower,
        100 * gap,
        solve_ms,
    )
    return Plan(
        schedule, best_t, lower, gap, baselines, solve_ms, exact, len(results), base_scheds
    )


def _describe_links(links: Links) -> str:
    return (
        f"device->edge {links.de_mbps:g}, edge->device {links.ed_mbps:g}, "
        f"edge->cloud {links.ec_mbps:g}, cloud->edge {links.ce_mbps:g} Mbit/s"
    )


def _with_budgets(model: CostModel, budgets: dict[str, int]) -> CostModel:
    from dataclasses import replace

    tiers = dict(model.tiers)
    for tier, budget in budgets.items():
        if tier not in tiers:
            raise ConfigError(f"memory budget for unknown tier {tier!r}")
        if budget <= 0:
            raise ConfigError(f"memory budget of the {tier} must be > 0 bytes, got {budget}")
        tiers[tier] = replace(tiers[tier], memory_budget_bytes=int(budget))
    return CostModel(model.facts, tiers, model.links)


def _baselines(results, N: int, batch_size: int):
    def pick(pairs):
        cands = [(results[(p,)][0], p) for p in pairs if math.isfinite(results[(p,)][0])]
        if not cands:
            return math.inf, None
        t, p = min(cands)
        return t, _schedule((p,), [batch_size])

    rows = {
        "device_only": pick([(N, N)]),
        "edge_only": pick([(0, N)]),
        "cloud_only": pick([(0, 0)]),
        # one cut: the device runs [0, c) and one other tier the rest
        "best_two_tier": pick([(c, N) for c in range(1, N)] + [(c, c) for c in range(1, N)]),
    }
    return {k: v[0] for k, v in rows.items()}, {k: v[1] for k, v in rows.items()}


def _pruned_search(model: CostModel, batch_size: int, results, budget_s: float):
    """Evaluate cut tuples in increasing order of their load bound until the bound
    reaches the best time or the budget is spent; returns (cuts, time, sizes, bound)."""
    t_start = time.perf_counter()
    N = model.num_units
    pairs = cut_pairs(N)
    rows = [_load_rows(model, p) for p in pairs]
    A = np.array([r[0] for r in rows])
    Bm = np.array([r[1] for r in rows])
    weights = np.vstack([np.eye(7), np.full((1, 7), 1 / 7), np.array([[0.5, 0.5, 0, 0, 0, 0, 0]])])
    best_cuts = min(results, key=lambda c: results[c][0])
    best_t, best_n = results[best_cuts]
    index = {p: i for i, p in enumerate(pairs)}
    local = index[(N, N)]

    pending: list[tuple[float, tuple]] = []
    for k in (2, 3):
        combos = np.array(list(itertools.combinations_with_replacement(range(len(pairs)), k)))
        # at most one device-local group
        combos = combos[(combos == local).sum(axis=1) <= 1]
        bounds = _tuple_bounds(A, Bm, combos, batch_size, weights)
        keep = bounds < best_t
        for b, combo in zip(bounds[keep], combos[keep], strict=True):
            pending.append((float(b), tuple(int(i) for i in combo)))
    pending.sort()
    lower = best_t
    for j, (bound, combo) in enumerate(pending):
        if bound >= best_t:
            break
        if time.perf_counter() - t_start > budget_s:
            lower = min(best_t, bound)
            log.info("planner budget spent after %d of %d cut multisets", j, len(pending))
            break
        for cuts in _orderings([pairs[i] for i in combo], N):
            t, n = best_sizes(model, cuts, batch_size)
            results[cuts] = (t, n)
            if t < best_t:
                best_cuts, best_t, best_n = cuts, t, n
    return best_cuts, best_t, best_n, lower


def _orderings(pairs: list[tuple[int, int]], N: int):
    """Every distinct dispatch order of a cut multiset (order matters within a class)."""
    seen = set()
    for perm in itertools.permutations(pairs):
        key = tuple(sorted(perm, key=lambda p: _depth(p, N)))  # stable: keeps class order
        if key not in seen:
            seen.add(key)
            yield key
