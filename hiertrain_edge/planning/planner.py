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
from hiertrain_edge.planning.cost import LINKS, CostModel, Links
from hiertrain_edge.planning.schedule import Group, Schedule
from hiertrain_edge.profiling.measure import ModelFacts
from hiertrain_edge.profiling.profile import TierProfile

log = logging.getLogger(__name__)

MAX_GROUPS = 3
EXHAUSTIVE_MAX_TUPLES = 6000  # evaluate every cut tuple up to this many
DEFAULT_BUDGET_S = 1.0  # wall-clock budget of the pruned search on large spaces
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


RESOURCES = ("device", "edge", "cloud", *LINKS)


def _heads_tails(
    model: CostModel, pair: tuple[int, int], n: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """For a group on `pair` with n samples, alone: when its first operation on each
    resource can start at the earliest (head), and how long its own chain still runs
    after its last operation there (tail). inf where it does not use the resource.

    In any schedule the group starts no earlier and its chain takes no less, since every
    duration only grows with n and with other groups' work (the step is max-plus).
    """
    events: list = []
    model.step_time([pair], [n], events)
    mine = [e for e in events if "g0" in e.label]
    head, last = np.full(len(RESOURCES), np.inf), np.full(len(RESOURCES), -np.inf)
    if not mine:
        return head, head.copy()
    end = max(e.end_s for e in mine)
    for e in mine:
        r = RESOURCES.index(e.resource)
        head[r] = min(head[r], e.start_s)
        last[r] = max(last[r], e.end_s)
    tail = np.where(np.isfinite(last), end - last, np.inf)
    return head, tail


@dataclass
class _Bounds:
    """Per cut pair: fixed and per-sample load on each resource, heads and tails."""

    A: np.ndarray  # (P, R) seconds per group
    Bm: np.ndarray  # (P, R) seconds per sample
    H: np.ndarray  # (P, R)
    T: np.ndarray  # (P, R)

    def weighted(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        on = w > 0  # skip zero weights: 0 * inf (a link that is down) is no bound
        fixed = self.A[:, on] @ w[on] + self.Bm[:, on] @ w[on]  # a group of one sample
        per_sample = self.Bm[:, on] @ w[on]
        return fixed, per_sample

    def of(self, combos: np.ndarray, batch_size: int, weights: np.ndarray) -> np.ndarray:
        """A lower bound on the step time of every cut multiset in `combos`.

        For each resource r: step >= min head_r + load_r(n) + min tail_r over the
        groups. For weights w >= 0 summing to 1 the maximum over r is at least the
        w-average, whose minimum over sizes puts one sample on each group and the rest
        on the group with the smallest weighted per-sample cost. The best over a few
        weight vectors is kept.
        """
        k = combos.shape[1]
        h = self.H[combos].min(axis=1)
        t = self.T[combos].min(axis=1)
        edge_terms = np.where(np.isfinite(h) & np.isfinite(t), h + t, 0.0)
        best = np.zeros(len(combos))
        for w in weights:
            fixed, per_sample = self.weighted(w)
            bound = (
                edge_terms @ w
                + fixed[combos].sum(axis=1)
                + (batch_size - k) * per_sample[combos].min(axis=1)
            )
            best = np.maximum(best, bound)
        return best


def _survivors(bounds: _Bounds, k: int, batch_size: int, target: float, w: np.ndarray):
    """Every k-multiset of pairs (rows of pair indices) whose weighted load bound is
    below `target`, found without listing the rest: sort pairs by per-sample cost; a
    multiset's cheapest member (its leader) takes the batch, the others one sample."""
    fixed, per_sample = bounds.weighted(w)
    order = np.argsort(per_sample, kind="stable")
    fs, cs = fixed[order], per_sample[order]
    suffix_min = np.minimum.accumulate(fs[::-1])[::-1]
    floor = float(np.min(fs + (batch_size - k) * cs + (k - 1) * suffix_min))
    slack_all = target - fs - (batch_size - k) * cs
    if k == 3:
        # Too many to list: report only the floor, a bound on every k-multiset.
        cand = [(fs[i:] < slack_all[i] - suffix_min[i]).sum() for i in range(len(order))]
        if sum(c * (c + 1) // 2 for c in cand) > MAX_SURVIVORS:
            return None, floor
    out = []
    for i in range(len(order)):
        slack = target - fs[i] - (batch_size - k) * cs[i]
        if not slack > (k - 1) * suffix_min[i]:
            continue
        rest = np.arange(i, len(order))
        if k == 2:
            js = rest[fs[rest] < slack]
            out.append(np.stack([np.full(len(js), i), js], axis=1))
            continue
        cand = rest[fs[rest] < slack - suffix_min[i]]
        if len(cand) == 0:
            continue
        jj, ll = np.triu_indices(len(cand))
        keep = fs[cand[jj]] + fs[cand[ll]] < slack
        js, ls = cand[jj[keep]], cand[ll[keep]]
        out.append(np.stack([np.full(len(js), i), js, ls], axis=1))
    if not out:
        return np.zeros((0, k), dtype=int), floor
    return order[np.concatenate(out)], floor


# --- the planner --------------------------------------------------------------------


def plan(
    spec: ModelSpec | ModelFacts,
    profiles: dict[str, TierProfile],
    links: Links,
    batch_size: int,
    memory_budgets: dict[str, int] | None = None,
    budget_s: float = DEFAULT_BUDGET_S,
    gap_tol: float = 0.0,
) -> Plan:
    """The fastest schedule the planner finds for one step of `batch_size` samples.

    `memory_budgets` (bytes per tier) override the profiles' budgets. Raises ScheduleError
    when no schedule fits memory and the links, ConfigError on bad inputs.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    model = CostModel.build(spec, profiles, links)  # unit sizes and FLOPs: cached per model
    if memory_budgets:
        model = _with_budgets(model, memory_budgets)
    t0 = time.perf_counter()
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
        best_cuts, best_t, sizes, lower = _pruned_search(
            model, batch_size, results, budget_s, gap_tol
        )
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
    log.debug(
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


def _affine_heads_tails(model: CostModel, pair: tuple[int, int]):
    """Heads and tails of a group alone at n = 1 and 2, as intercept and slope per
    resource (the alone chain has no contention, so both are affine in n)."""
    h1, t1 = _heads_tails(model, pair, 1)
    h2, t2 = _heads_tails(model, pair, 2)
    with np.errstate(invalid="ignore"):
        hs, ts = np.maximum(h2 - h1, 0.0), np.maximum(t2 - t1, 0.0)
    hs, ts = np.nan_to_num(hs, nan=0.0, posinf=0.0), np.nan_to_num(ts, nan=0.0, posinf=0.0)
    return h1 - hs, hs, t1 - ts, ts


def _first_last(depths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ordered cut tuples (rows of group depths: 0 cloud-bound, 1 edge-terminal,
    2 local, in dispatch order), the position of the first and last group each resource
    serves in the runtime's order, -1 where none. Columns follow RESOURCES."""
    T, k = depths.shape
    pos = np.broadcast_to(np.arange(k), (T, k))
    big = k + 1

    def first(mask):
        v = np.where(mask, pos, big).min(axis=1)
        return np.where(v == big, -1, v)

    def last(mask):
        return np.where(mask, pos, -1).max(axis=1)

    off, cl, ed = depths < 2, depths == 0, depths == 1
    any_off, any_cl = off.any(axis=1), cl.any(axis=1)
    fl = np.full((T, len(RESOURCES), 2), -1)
    # device: offloaded forwards first (else the local group); backwards last
    fl[:, 0, 0] = 0
    fl[:, 0, 1] = np.where(any_off, last(off), 0)
    # edge: every offloaded group in order, then the cloud-bound backwards
    fl[:, 1, 0] = first(off)
    fl[:, 1, 1] = np.where(any_cl, last(cl), last(off))
    # cloud and the edge<->cloud link: cloud-bound groups in order
    for r in (2, 5, 6):
        fl[:, r, 0], fl[:, r, 1] = first(cl), last(cl)
    # device->edge: `fwd` messages in dispatch order
    fl[:, 3, 0], fl[:, 3, 1] = first(off), last(off)
    # edge->device: edge-terminal replies first, cloud-bound replies after them
    fl[:, 4, 0] = np.where(ed.any(axis=1), first(ed), first(cl))
    fl[:, 4, 1] = np.where(any_cl, last(cl), last(ed))
    return fl[:, :, 0], fl[:, :, 1]


def _ordered_bounds(
    tuples: np.ndarray,
    depth: np.ndarray,
    bounds: _Bounds,
    ht: dict[str, np.ndarray],
    batch_size: int,
    weights: np.ndarray,
) -> np.ndarray:
    """A lower bound per ordered cut tuple (rows of pair indices, dispatch order).

    For each resource r: step >= head of its first group + its load + tail of its last
    group, every term affine in the sizes. The maximum over r is at least any weighted
    average, minimised over sizes as in `_Bounds.of`; the best of several weights is kept.
    """
    T, k = tuples.shape
    R = len(RESOURCES)
    first, last = _first_last(depth[tuples])
    rows_c = bounds.A[tuples].sum(axis=1)  # (T, R) fixed load
    slope = np.transpose(bounds.Bm[tuples], (0, 2, 1)).copy()  # (T, R, k)
    used = first >= 0
    t_idx = np.arange(T)[:, None]
    r_idx = np.arange(R)[None, :]
    fp = tuples[t_idx, np.where(used, first, 0)]  # pair index of the first group
    lp = tuples[t_idx, np.where(used, last, 0)]
    head_c = np.where(used, ht["ha"][fp, r_idx], 0.0)
    tail_c = np.where(used, ht["ta"][lp, r_idx], 0.0)
    rows_c = (
        rows_c
        + np.where(np.isfinite(head_c), head_c, 0)
        + np.where(np.isfinite(tail_c), tail_c, 0)
    )
    for pos_arr, key in ((first, "hb"), (last, "tb")):
        add = np.where(used, ht[key][tuples[t_idx, np.where(used, pos_arr, 0)], r_idx], 0.0)
        for j in range(k):
            slope[:, :, j] += np.where(pos_arr == j, add, 0.0)
    best = np.zeros(T)
    for w in weights:
        on = w > 0
        c = rows_c[:, on] @ w[on]
        beta = np.einsum("trk,r->tk", slope[:, on, :], w[on])
        best = np.maximum(best, c + beta.sum(axis=1) + (batch_size - k) * beta.min(axis=1))
    return best


def _pruned_search(model: CostModel, batch_size: int, results, budget_s: float, gap_tol: float):
    """Branch and bound over cut tuples; returns (cuts, time, sizes, lower bound).

    Cut multisets are screened by a load bound, their dispatch orders by a head + load
    + tail bound; tuples whose bound is below best / (1 + gap_tol) are evaluated exactly
    (best sizes), cheapest bound first, until none is left or the time budget is spent.
    The lower bound is the smaller of the best time and the smallest bound left.
    """
    t_start = time.perf_counter()
    N = model.num_units
    pairs = cut_pairs(N)
    rows = [_load_rows(model, p) for p in pairs]
    ht_rows = [_heads_tails(model, p) for p in pairs]
    bounds = _Bounds(
        np.array([r[0] for r in rows]),
        np.array([r[1] for r in rows]),
        np.array([x[0] for x in ht_rows]),
        np.array([x[1] for x in ht_rows]),
    )
    best_cuts, best_t, best_n = _incumbent(model, batch_size, results)
    if not math.isfinite(best_t):
        return best_cuts, best_t, best_n, math.inf
    target = best_t / (1 + gap_tol)
    log.debug("incumbent %s: %.4f s after %.1f ms", best_cuts, best_t, _ms(t_start))

    # Weights: each resource alone, and mixes of the incumbent's busiest resources.
    busy = _busy(model, best_cuts, best_n)
    top = np.argsort(busy)[::-1][:3]
    mixes = [np.eye(len(RESOURCES))[r] for r in range(len(RESOURCES))]
    for i, j in itertools.combinations(top, 2):
        for f in (0.25, 0.5, 0.75):
            w = np.zeros(len(RESOURCES))
            w[i], w[j] = f, 1 - f
            mixes.append(w)
    weights = np.vstack(mixes)
    # Enumerate with the weights that leave the fewest pairs of groups standing.
    cands = [*weights, busy / max(busy.sum(), 1e-12)]
    enum_w = min(cands, key=lambda w: len(_survivors(bounds, 2, batch_size, target, w)[0]))

    # Multisets that survive the load bound, then each of their dispatch orders.
    local = pairs.index((N, N))
    depth = np.array([_depth(p, N) for p in pairs])
    cache: dict[int, tuple] = {}
    pending: list[tuple[float, tuple]] = []
    floor = math.inf  # a bound on the multisets too many to list
    for k in (2, 3):
        combos, k_floor = _survivors(bounds, k, batch_size, target, enum_w)
        if combos is None:
            floor = min(floor, k_floor)
            log.info("too many %d-group cut multisets to bound one by one", k)
            continue
        combos = combos[(combos == local).sum(axis=1) <= 1]
        if len(combos) == 0:
            continue
        combos = combos[bounds.of(combos, batch_size, weights) < target]
        ordered = {
            tuple(sorted(perm, key=lambda i: depth[i]))
            for combo in combos.tolist()
            for perm in itertools.permutations(combo)
        }
        tuples = np.array(sorted(ordered), dtype=int).reshape(-1, k)
        if len(tuples) == 0:
            continue
        for i in np.unique(tuples):
            if i not in cache:
                cache[i] = _affine_heads_tails(model, pairs[i])
        ht = {
            key: np.array([cache.get(i, (np.zeros(7),) * 4)[j] for i in range(len(pairs))])
            for j, key in enumerate(("ha", "hb", "ta", "tb"))
        }
        b = _ordered_bounds(tuples, depth, bounds, ht, batch_size, weights)
        keep = b < target
        pending += list(zip(b[keep].tolist(), map(tuple, tuples[keep].tolist()), strict=True))
    pending.sort()
    log.debug("%d cut tuples left after bounding, %.1f ms", len(pending), _ms(t_start))

    lower = best_t
    for j, (bound, combo) in enumerate(pending):
        if bound >= best_t / (1 + gap_tol):
            lower = min(best_t, bound)
            break
        if time.perf_counter() - t_start > budget_s:
            lower = min(best_t, bound)
            log.info("planner budget spent after %d of %d cut tuples", j, len(pending))
            break
        cuts = tuple(pairs[i] for i in combo)
        if cuts in results:
            continue
        t, n = best_sizes(model, cuts, batch_size)
        results[cuts] = (t, n)
        if t < best_t:
            best_cuts, best_t, best_n = cuts, t, n
    return best_cuts, best_t, best_n, min(lower, floor)


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000


INCUMBENT_SEEDS = 6  # best single-group pairs combined into seed tuples
MAX_SURVIVORS = 200_000  # 3-group cut multisets bounded one by one, at most


def _incumbent(model: CostModel, batch_size: int, results):
    """A good schedule to bound against: the best single-group pairs, split into two or
    three groups on the same cuts (pipelining) and combined in pairs and triples."""
    N = model.num_units
    singles = sorted((results[c][0], c[0]) for c in results if len(c) == 1)
    seeds = [p for t, p in singles[:INCUMBENT_SEEDS] if math.isfinite(t)]
    tried = set(results)
    for k in (2, 3):
        for combo in itertools.combinations_with_replacement(seeds, k):
            if sum(_depth(p, N) == 2 for p in combo) > 1:
                continue
            cuts = tuple(sorted(combo, key=lambda p: _depth(p, N)))
            if cuts not in tried:
                tried.add(cuts)
                results[cuts] = best_sizes(model, cuts, batch_size)
    best = min(results, key=lambda c: results[c][0])
    return best, results[best][0], results[best][1]


def _busy(model: CostModel, cuts, sizes) -> np.ndarray:
    events: list = []
    model.step_time(list(cuts), list(sizes), events)
    busy = np.zeros(len(RESOURCES))
    for e in events:
        busy[RESOURCES.index(e.resource)] += e.end_s - e.start_s
    return busy


def _orderings(pairs: list[tuple[int, int]], N: int):
    """Every distinct dispatch order of a cut multiset (order matters within a class)."""
    seen = set()
    for perm in itertools.permutations(pairs):
        key = tuple(sorted(perm, key=lambda p: _depth(p, N)))  # stable: keeps class order
        if key not in seen:
            seen.add(key)
            yield key
