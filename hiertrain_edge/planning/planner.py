"""The planner: the schedule of at most three groups with the smallest predicted step
time, a lower bound no schedule can beat, and the single-tier and two-tier baselines.

Search space: up to three groups, each a size n >= 1 and cuts 0 <= c1 <= c2 <= N,
sizes summing to the batch size B, every tier's peak memory within its budget.

How it searches. The step time depends on the order of the groups only through the
dispatch order, so a candidate is a *cut tuple*: groups listed cloud-bound first, then
edge-terminal, then at most one device-local group (two local groups are never better
than one: their work adds up and each costs its fixed overhead). Candidates are
evaluated in batches by planning/fastcost.py, which gives the cost model's exact time
for many cut tuples and size vectors in one numpy pass.

1. Every single group (each cut pair with the whole batch) is evaluated: the baselines,
   and the planner never returns anything slower.
2. Small spaces (every cut tuple times every split of the batch, at most
   EXHAUSTIVE_MAX_EVALS points) are evaluated whole: the optimum, gap 0.
3. Larger spaces are searched in rounds, each one numpy pass over many candidates:
   a. *pipelines*: every cut pair split into two and three groups (skipped for a pair
      whose busiest resource alone outlasts the best single group);
   b. *mixes*: every tuple of two or three groups drawn from the SHORTLIST best pairs
      and the best pair of each class (skipped when a load floor rules them out);
      (a) and (b) with sizes on a lattice of B / 16 (pipelines) or B / 4 (mixes);
   c. *sizes*: the FINE_TUPLES best tuples on a lattice of B / 32, then the
      EXACT_TUPLES best of those with every split of the batch (for B > 64 a lattice
      and every split in a window around its best);
   d. *cuts*: for the best tuples, each group's cuts moved by one or two units, a group
      dropped or split in two; the best of these sized as in (c); repeated while the
      best tuples change.
   This is a heuristic: benchmarks/bench_planner.py prints its gap to the exhaustive
   optimum on instances small enough to enumerate, tests/planning/test_planner_gap.py
   checks it on seeded ones.

Lower bound. Every tier and link direction is a serial resource, so the step lasts at
least any weighted average of the resources' busy times. For weights w, each group's
weighted busy time is affine in its size with non-negative terms, so no split of the
batch into groups beats the single group on the best pair: the bound is
max over w of min over pairs of w . (busy seconds of the pair with the whole batch),
the value of a small zero-sum game, solved exactly by the simplex method. It ignores
how work waits for work (a pipeline's fill and drain) and the replicas' traffic, so it
is loose; gap = predicted / lower bound - 1 is a certified upper bound on the true
gap, not the gap itself.
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
from hiertrain_edge.planning.cost import LABEL_BYTES, LINKS, Checkpoints, CostModel, Links
from hiertrain_edge.planning.fastcost import LOCAL, FastCost, pair_class
from hiertrain_edge.planning.schedule import Group, Schedule
from hiertrain_edge.profiling.measure import ModelFacts
from hiertrain_edge.profiling.profile import TierProfile

log = logging.getLogger(__name__)

MAX_GROUPS = 3
EXHAUSTIVE_MAX_EVALS = 400_000  # cut tuples x splits evaluated whole up to this many
BASELINES = ("device_only", "edge_only", "cloud_only", "best_two_tier")
SHORTLIST = 9  # best cut pairs combined into mixes of two and three groups
LATTICE_PARTS = 8  # screening sizes: 1 and multiples of B / 8
PIPE_PARTS = 16  # pipelines' screening sizes: 1 and multiples of B / 16
FINE_TUPLES = 16  # tuples tried again on a finer lattice after screening
FINE_PARTS = 32  # its sizes: 1 and multiples of B / 32
EXACT_TUPLES = 4  # tuples whose best sizes are searched exactly after screening
SIZE_GRID_POINTS = 2100  # splits per tuple in one pass (every split of 64 in 3 is 1953)
WINDOW_MOVES = 6  # moves of the window around a lattice's best split
NEIGHBOUR_TUPLES = 3  # tuples whose cuts are moved in each local-search round
MAX_ROUNDS = 4  # local-search rounds at most
CHUNK_EVALS = 200_000  # points per numpy pass in the exhaustive search


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
    return pair_class(pair[0], pair[1], num_units)


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


def _schedule(cuts, sizes) -> Schedule:
    return Schedule(tuple(Group(n, c1, c2) for (c1, c2), n in zip(cuts, sizes, strict=True)))


# --- evaluating cut tuples in batches ---------------------------------------------------

Cuts = tuple[tuple[int, int], ...]


class _Evaluator:
    """Cut tuples (in dispatch order) and size vectors to step times, through FastCost;
    remembers the best sizes found for every tuple."""

    def __init__(self, model: CostModel, batch_size: int) -> None:
        self.fast = FastCost(model)
        self.N = model.num_units
        self.B = batch_size
        self.best: dict[Cuts, tuple[float, tuple[int, ...]]] = {}
        self.points = 0
        self.passes = 0
        self._ranked: list[Cuts] | None = None  # self.best's keys, best first

    def arrays(self, tuples: list[Cuts]) -> tuple[np.ndarray, np.ndarray]:
        pad = [list(t) + [(-1, -1)] * (MAX_GROUPS - len(t)) for t in tuples]
        arr = np.array(pad, dtype=np.int64).reshape(len(tuples), MAX_GROUPS, 2)
        return arr[:, :, 0].T.copy(), arr[:, :, 1].T.copy()

    def times(self, tuples: list[Cuts], sizes: np.ndarray) -> np.ndarray:
        """Step times (T, S) for sizes (T, S, G) (0 for absent groups); inf where a size
        vector is not a split of the batch into positive parts, or memory is exceeded."""
        c1, c2 = self.arrays(tuples)
        present = (c2 >= 0).T[:, None, :]  # (T, 1, G)
        valid = np.where(present, sizes >= 1, sizes == 0).all(axis=2)
        valid &= sizes.sum(axis=2) == self.B
        ns = np.transpose(np.where(valid[:, :, None], sizes, 1), (2, 0, 1)).astype(float)
        ns = np.where(present.transpose(2, 0, 1), ns, 0.0)
        out = np.where(valid, self.fast.evaluate(c1, c2, ns), np.inf)
        self.points += out.size
        self.passes += 1
        self.keep(tuples, sizes, out)
        return out

    def keep(self, tuples: list[Cuts], sizes: np.ndarray, times: np.ndarray) -> None:
        j = np.argmin(times, axis=1)
        tj = times[np.arange(len(tuples)), j].tolist()
        best = self.best
        for t, cuts in enumerate(tuples):
            if tj[t] < best.get(cuts, _NONE)[0]:
                best[cuts] = (tj[t], tuple(sizes[t, j[t], : len(cuts)].tolist()))
                self._ranked = None

    def put(self, cuts: Cuts, time_s: float, sizes: tuple[int, ...]) -> None:
        self.best[cuts] = (time_s, sizes)
        self._ranked = None

    def clear(self) -> None:
        self.best = {}
        self._ranked = None

    def top(self, count: int) -> list[Cuts]:
        """The `count` tuples with the best times found (finite ones only)."""
        if self._ranked is None:
            self._ranked = sorted(self.best, key=lambda c: (self.best[c][0], c))
        return [c for c in self._ranked[:count] if math.isfinite(self.best[c][0])]

    def winner(self) -> tuple[Cuts, float, tuple[int, ...]] | None:
        top = self.top(1)
        if not top:
            return None
        return top[0], *self.best[top[0]]

    def sizes_pass(self, tuples: list[Cuts], grids) -> None:
        """One pass over tuples, each with its own rows of sizes (padded by repeats);
        `grids` is a list (one per tuple) or a function of the number of groups."""
        if not tuples:
            return
        if callable(grids):
            by_k = {k: grids(k) for k in {len(c) for c in tuples}}
            S = max(len(g) for g in by_k.values())
            pad = {k: g[np.minimum(np.arange(S), len(g) - 1)] for k, g in by_k.items()}
            sizes = np.stack([pad[len(c)] for c in tuples])
        else:
            S = max(len(g) for g in grids)
            sizes = np.stack([g[np.minimum(np.arange(S), len(g) - 1)] for g in grids])
        self.times(tuples, sizes)


_NONE = (math.inf, ())
# Weightings of the resources for the mix floor: each alone, and each pair and triple of
# them equally (a step lasts at least any weighted average of the resources' busy times).
_MIX_WEIGHTS = np.array(
    [
        [1.0 / len(c) if r in c else 0.0 for r in range(7)]
        for size in (1, 2, 3)
        for c in itertools.combinations(range(7), size)
    ]
).T


def _lattice(batch_size: int, parts: int, step: int, edges: bool = False) -> np.ndarray:
    """Splits of the batch into `parts` positive sizes, every size but the last 1 or a
    multiple of `step`; rows of length MAX_GROUPS (0 beyond `parts`). With `edges`, also
    every split whose groups are 1, 2, 3 or multiples of `step` except one: pipelines
    often want a group of one to three samples at either end, between lattice points."""
    key = (batch_size, parts, step, edges)
    if key not in _LATTICES:
        small = {1, 2, 3} if edges else {1}
        values = sorted(small | set(range(step, batch_size, step)))
        rows = set()
        for head in itertools.product(values, repeat=parts - 1):
            rest = batch_size - sum(head)
            if rest >= 1:
                rows.add((*head, rest))
        if edges and parts > 1:
            # the last group small, the others on the lattice but one
            for tail in small:
                for head in itertools.product(values, repeat=parts - 2):
                    rest = batch_size - sum(head) - tail
                    if rest >= 1:
                        rows.add((*head, rest, tail))
        ordered = sorted(rows)
        _LATTICES[key] = np.array(
            [list(r) + [0] * (MAX_GROUPS - parts) for r in ordered], dtype=np.int64
        ).reshape(-1, MAX_GROUPS)
    return _LATTICES[key]


_LATTICES: dict[tuple[int, int, int, bool], np.ndarray] = {}


def _window(base: tuple[int, ...], radius: int) -> np.ndarray:
    """Every split within `radius` samples of `base` in each free size."""
    k = len(base)
    r = np.arange(-radius, radius + 1)
    if k == 1:
        d = np.zeros((1, 1), dtype=np.int64)
    elif k == 2:
        d = np.stack([r, -r], axis=1)
    else:
        a, b = (x.ravel() for x in np.meshgrid(r, r, indexing="ij"))
        d = np.stack([a, b, -a - b], axis=1)
    rows = np.array(base)[None, :] + d
    return np.pad(rows, ((0, 0), (0, MAX_GROUPS - k)))


def _exact_sizes(ev: _Evaluator, tuples: list[Cuts]) -> None:
    """The best split of the batch for each tuple: every split when there are at most
    SIZE_GRID_POINTS, else a lattice of splits then every split in a window around the
    lattice's best, moved while its best lies on the window's edge."""
    B = ev.B
    step = 1
    while len(_lattice(B, 3, step, True)) > SIZE_GRID_POINTS:
        step += 1
    tuples = [c for c in tuples if len(c) > 1]
    ev.sizes_pass(tuples, lambda k: _lattice(B, k, step, True))
    tuples = [c for c in tuples if c in ev.best]  # some split fits
    radius = step
    for _ in range(WINDOW_MOVES if step > 1 else 0):
        before = {c: ev.best[c] for c in tuples}
        ev.sizes_pass(tuples, [_window(ev.best[c][1], radius) for c in tuples])
        tuples = [c for c in tuples if ev.best[c][0] < before[c][0]]
        if not tuples:
            return


def _canonical(cuts, num_units: int) -> Cuts | None:
    """Cut pairs in dispatch order (stable within a class); None with two local groups."""
    out = tuple(sorted(cuts, key=lambda p: _depth(p, num_units)))
    if sum(_depth(p, num_units) == LOCAL for p in out) > 1:
        return None
    return out


def _neighbours(cuts: Cuts, N: int) -> list[Cuts]:
    """Tuples one move away: one group's cuts moved by one or two units, a group dropped,
    or a group split in two on the same cuts."""
    out = []
    k = len(cuts)
    for i, (c1, c2) in enumerate(cuts):
        for d1, d2 in ((-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (1, 1), (-2, 0), (0, 2)):
            a, b = c1 + d1, c2 + d2
            if 0 <= a <= b <= N and (a, b) != (c1, c2):
                out.append(cuts[:i] + ((a, b),) + cuts[i + 1 :])
    if k > 1:
        out += [cuts[:i] + cuts[i + 1 :] for i in range(k)]
    if k < MAX_GROUPS:
        out += [cuts[:i] + (cuts[i],) + cuts[i:] for i in range(k)]
    result = []
    for cand in out:
        canon = _canonical(cand, N)
        if canon is not None:
            result.append(canon)
    return result


def _local_search(ev: _Evaluator) -> None:
    """Move the cuts of the best few tuples while that helps: each round screens the
    neighbours on the coarse lattice, then finds exact sizes for the best of them."""
    step = max(1, ev.B // LATTICE_PARTS)
    done: set[Cuts] = set()
    for _ in range(MAX_ROUNDS):
        heads = [c for c in ev.top(NEIGHBOUR_TUPLES + len(done)) if c not in done]
        heads = heads[:NEIGHBOUR_TUPLES]
        if not heads:
            return
        done.update(heads)
        fresh = list(dict.fromkeys(n for c in heads for n in _neighbours(c, ev.N)))
        fresh = [c for c in fresh if c not in ev.best]
        if not fresh:
            continue
        before = ev.winner()[1]
        ev.sizes_pass(fresh, lambda k: _lattice(ev.B, k, step))
        ranked = sorted(fresh, key=lambda c: ev.best.get(c, _NONE)[0])[:EXACT_TUPLES]
        _exact_sizes(ev, ranked)
        if ev.winner()[1] >= before and all(c in done for c in ev.top(NEIGHBOUR_TUPLES)):
            return


def _search(ev: _Evaluator, loads: np.ndarray) -> None:
    """Step 3 of the module docstring; `loads` (P, R) are each pair's busy seconds per
    resource with the whole batch (`_load_matrix`)."""
    N, B = ev.N, ev.B
    pairs = cut_pairs(N)
    cls = {p: _depth(p, N) for p in pairs}
    step = max(1, B // LATTICE_PARTS)

    # a. Pipelines: every pair in two and three groups, unless its busiest resource
    # alone already takes longer than the best single group (no split can beat that).
    best_single = ev.winner()[1] if ev.winner() else math.inf
    floor = loads.max(axis=1)
    pipes = [
        (p,) * k
        for k in (2, 3)
        if k <= B
        for p, f in zip(pairs, floor, strict=True)
        if cls[p] != LOCAL and f < best_single
    ]
    pipe_step = max(1, B // PIPE_PARTS)
    ev.sizes_pass(pipes, lambda k: _lattice(B, k, pipe_step))

    # b. Mixes of the best pairs (by their best pipeline or single group), always with
    # the device-local group and the best edge-terminal and cloud-bound pairs.
    score: dict[tuple[int, int], float] = {}
    for cuts, (t, _) in ev.best.items():
        if cuts[0] == cuts[-1]:
            score[cuts[0]] = min(score.get(cuts[0], math.inf), t)
    ranked = sorted((p for p in score if math.isfinite(score[p])), key=lambda p: score[p])
    short = ranked[:SHORTLIST]
    for c in range(3):
        short += [p for p in ranked if cls[p] == c][:1]
    short = sorted(set(short), key=lambda p: (cls[p], p))
    mixes = set()
    for k in (2, 3):
        if k > B:
            continue
        for combo in itertools.combinations_with_replacement(short, k):
            if combo[0] == combo[-1] or sum(cls[p] == LOCAL for p in combo) > 1:
                continue
            # every order within a class (the classes' order is fixed)
            parts = [[p for p in combo if cls[p] == c] for c in range(3)]
            for pick in itertools.product(*(set(itertools.permutations(q)) for q in parts)):
                mixes.add(tuple(itertools.chain.from_iterable(pick)))
    # Any weighted sum of the resources' busy times under any split is a weighted
    # average of what each pair puts on them with the whole batch, so at least the least
    # of them: a mix whose best such floor (over a few weightings) exceeds the best found
    # cannot win.
    mixes_l = sorted(mixes)
    if mixes_l:
        index = {p: i for i, p in enumerate(pairs)}
        rows = np.array([[index[p] for p in m] + [index[m[-1]]] * (3 - len(m)) for m in mixes_l])
        with np.errstate(invalid="ignore"):
            weighted = np.nan_to_num(loads[rows] @ _MIX_WEIGHTS, nan=np.inf)  # (M, 3, W)
        floor_mix = weighted.min(axis=1).max(axis=1)
        keep = floor_mix < ev.winner()[1]
        mixes_l = [m for m, k in zip(mixes_l, keep, strict=True) if k]
    coarse = max(step, B // 4)
    ev.sizes_pass(mixes_l, lambda k: _lattice(B, k, coarse))

    # c-e. Finer sizes for the best, exact sizes for the best of those, then local
    # search on their cuts (screening ranks tuples only roughly: many lie within 1%).
    fine = max(1, B // FINE_PARTS)
    ev.sizes_pass(ev.top(FINE_TUPLES), lambda k: _lattice(B, k, fine))
    _exact_sizes(ev, ev.top(EXACT_TUPLES))
    _local_search(ev)


def exhaustive(model: CostModel, batch_size: int) -> tuple[Cuts, float, tuple[int, ...]] | None:
    """The optimum over every cut tuple and every split of the batch (the reference the
    search is checked against; slow beyond small models or batches). None when nothing
    fits."""
    ev = _Evaluator(model, batch_size)
    N = model.num_units
    comps = {
        k: np.stack(
            [*compositions(batch_size, k)]
            + [np.zeros_like(compositions(batch_size, k)[0])] * (MAX_GROUPS - k),
            axis=1,
        ).astype(np.int64)
        for k in range(1, MAX_GROUPS + 1)
        if k <= batch_size
    }
    best: tuple[Cuts, float, tuple[int, ...]] | None = None
    batch: list[Cuts] = []

    def flush(k: int) -> None:
        nonlocal best
        if batch:
            sizes = np.broadcast_to(comps[k][None], (len(batch), *comps[k].shape))
            ev.clear()
            ev.times(batch, sizes)
            top = ev.winner()
            if top is not None and (best is None or top[1] < best[1]):
                best = top
            batch.clear()

    for k in sorted(comps):
        per = max(1, CHUNK_EVALS // len(comps[k]))
        for cuts in cut_tuples(N, k):
            if len(cuts) == k:
                batch.append(cuts)
                if len(batch) >= per:
                    flush(k)
        flush(k)
    return best


def _exhaustive_points(num_units: int, batch_size: int) -> int:
    n_cloud = num_units * (num_units + 1) // 2
    total = 0
    for k in range(1, MAX_GROUPS + 1):
        if k > batch_size:
            break
        count = 0
        for kc in range(k + 1):
            for ke in range(k - kc + 1):
                if k - kc - ke <= 1:
                    count += n_cloud**kc * num_units**ke
        total += count * len(compositions(batch_size, k)[0])
    return total


# --- lower bound ----------------------------------------------------------------------


def _load_matrix(model: CostModel, pairs: list[tuple[int, int]], batch_size: int) -> np.ndarray:
    """Per-resource busy seconds of one group on each pair with the whole batch alone:
    (P, R), columns device, edge, cloud, then the four link directions.

    Message overheads count on the sender and the receiver as in cost.py (half each);
    the `step` message, headers, replicas and the optimizer are left out (they only add),
    so no entry overestimates what a group of that pair puts on a resource.
    """
    fast = FastCost(model)
    N, B = model.num_units, 1.0
    D, E, C = fast.tiers
    c1 = np.array([p[0] for p in pairs])
    c2 = np.array([p[1] for p in pairs])
    cls = np.array([_depth(p, N) for p in pairs])
    cl, lo = cls == 0, cls == LOCAL
    zero = np.zeros(len(pairs), dtype=np.int64)
    full = np.full(len(pairs), N)

    def train(tier, a, b):  # fixed seconds and seconds per sample of fwd + bwd of [a, b)
        fixed = tier.fwd(a, b, 0.0) + tier.bwd(a, b, 0.0)
        return fixed, tier.fwd(a, b, B) + tier.bwd(a, b, B) - fixed

    cols_a = np.zeros((len(pairs), 7))
    cols_b = np.zeros((len(pairs), 7))
    da, db = train(D, zero, np.where(lo, N, c1))
    cols_a[:, 0] = da + np.where(lo, 0.0, 2 * D.half_s)
    cols_b[:, 0] = db
    ea_t, eb_t = train(E, np.where(lo, N, c1), np.where(cl, c2, full))
    cols_a[:, 1] = np.where(lo, 0.0, ea_t + np.where(cl, 4, 2) * E.half_s)
    cols_b[:, 1] = np.where(lo, 0.0, eb_t)
    ca, cb = train(C, np.where(cl, c2, full), full)
    cols_a[:, 2] = np.where(cl, ca + 2 * C.half_s, 0.0)
    cols_b[:, 2] = np.where(cl, cb, 0.0)
    act = fast.act.astype(float)
    per_byte = [1 / r if r > 0 else math.inf for r in fast.bps]
    link_bytes = (
        np.where(lo, 0.0, act[c1] + LABEL_BYTES),  # device -> edge: `fwd`
        np.where(~lo & (c1 > 0), act[c1], 0.0),  # edge -> device: `bwd`
        np.where(cl, act[np.minimum(c2, N)] + LABEL_BYTES, 0.0),  # edge -> cloud: `fwd`
        np.where(cl & (c2 > 0), act[np.minimum(c2, N)], 0.0),  # cloud -> edge: `bwd`
    )
    for i, nbytes in enumerate(link_bytes):
        with np.errstate(invalid="ignore"):
            cols_b[:, 3 + i] = np.where(nbytes > 0, nbytes * per_byte[i], 0.0)
    return cols_a + cols_b * batch_size


def game_value(cost: np.ndarray) -> float:
    """max over weights w on the simplex of min over rows p of cost[p] . w (cost >= 0,
    finite): the value of a zero-sum game, by the simplex method on its packing form
    max 1.y s.t. cost^T y <= 1, y >= 0, whose optimum is 1 / value."""
    P, R = cost.shape
    if P == 0:
        return 0.0
    tab = np.zeros((R + 1, P + R + 1))
    tab[:R, :P] = cost.T
    tab[:R, P : P + R] = np.eye(R)
    tab[:R, -1] = 1.0
    tab[R, :P] = -1.0
    for _ in range(50 * (R + 1)):
        enter = int(np.argmin(tab[R, :-1]))
        if tab[R, enter] >= -1e-12:
            break
        col = tab[:R, enter]
        pos = col > 1e-12
        if not pos.any():
            return 0.0  # a resource no row uses: weight on it bounds nothing
        ratios = np.where(pos, tab[:R, -1] / np.where(pos, col, 1.0), np.inf)
        leave = int(np.argmin(ratios))
        tab[leave] /= tab[leave, enter]
        others = np.arange(R + 1) != leave
        tab[others] -= np.outer(tab[others, enter], tab[leave])
    opt = tab[R, -1]
    return 1.0 / opt if opt > 0 else 0.0


RESOURCES = ("device", "edge", "cloud", *LINKS)


def load_bound(model: CostModel, batch_size: int, loads: np.ndarray | None = None) -> float:
    """max over weights w of min over cut pairs of w . (busy seconds of the pair with the
    whole batch): a lower bound on every schedule's step time (module docstring)."""
    if loads is None:
        loads = _load_matrix(model, cut_pairs(model.num_units), batch_size)
    cost = loads
    cost = cost[np.isfinite(cost).all(axis=1)]  # pairs that need a down link cannot run
    return game_value(cost)


# --- the planner --------------------------------------------------------------------


def plan(
    spec: ModelSpec | ModelFacts,
    profiles: dict[str, TierProfile],
    links: Links,
    batch_size: int,
    memory_budgets: dict[str, int] | None = None,
    checkpoints: Checkpoints | None = None,
) -> Plan:
    """The fastest schedule the planner finds for one step of `batch_size` samples.

    `memory_budgets` (bytes per tier) override the profiles' budgets; `checkpoints` prices
    the job's periodic snapshot in every step (see cost.py). The search has a
    fixed, small number of rounds, so it needs no time budget. Raises ScheduleError when
    no schedule fits memory and the links, ConfigError on bad inputs.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    model = CostModel.build(spec, profiles, links, checkpoints)  # sizes, FLOPs: cached
    if memory_budgets:
        model = _with_budgets(model, memory_budgets)
    t0 = time.perf_counter()
    N = model.num_units

    # 1. Every single group: the baselines, and a floor on the answer's quality.
    ev = _Evaluator(model, batch_size)
    pairs = cut_pairs(N)
    full = np.zeros((len(pairs), 1, MAX_GROUPS), dtype=np.int64)
    full[:, 0, 0] = batch_size
    ev.times([(p,) for p in pairs], full)
    results = {(p,): ev.best.get((p,), (math.inf, None)) for p in pairs}
    baselines, base_scheds = _baselines(results, N, batch_size)

    # 2./3. The whole space when small, else the search.
    loads = _load_matrix(model, pairs, batch_size)
    exact = _exhaustive_points(N, batch_size) <= EXHAUSTIVE_MAX_EVALS
    if exact:
        found = exhaustive(model, batch_size)
        if found is not None:
            ev.put(*found)
    else:
        _search(ev, loads)
    win = ev.winner()
    if win is None:
        raise ScheduleError(
            f"no schedule of {batch_size} samples fits: every tier's memory budget is "
            f"exceeded or a link it needs has 0 bandwidth ({_describe_links(links)})"
        )
    best_cuts, best_t, sizes = win
    schedule = _schedule(best_cuts, sizes)
    lower = best_t if exact else min(best_t, load_bound(model, batch_size, loads))
    gap = best_t / lower - 1 if lower > 0 else 0.0
    solve_ms = (time.perf_counter() - t0) * 1000
    log.debug(
        "planned %s: %.4f s per step (lower bound %.4f s, gap %.2f%%) in %.1f ms, %d points",
        schedule.describe(),
        best_t,
        lower,
        100 * gap,
        solve_ms,
        ev.points,
    )
    return Plan(
        schedule, best_t, lower, gap, baselines, solve_ms, exact, len(ev.best), base_scheds
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
    return CostModel(model.facts, tiers, model.links, model.checkpoints)


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
