"""The cost model's step time for many schedules at once: numpy over cut tuples and sizes.

cost.py replays one step for one schedule in Python; the planner needs millions of
(cut tuple, sizes) points. This module replays the same order of work, operation for
operation, on arrays: a *batch* is T cut tuples of up to three groups each, each tried
with S size vectors. Every step of the replay is computed for all tuples and kept only
where it applies (a mask per group class, per cut at 0, per tier holding replicas), so
one batch takes tuples of every kind. tests/planning/test_fastcost_equality.py checks it
against cost.py on random schedules, so a change to cost.py not mirrored here fails loudly.

Shapes: cuts are (G, T) integer arrays (G = 3 group slots, -1 for an absent group),
sizes (G, T, S) or (G, 1, S) floats; results are (T, S).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hiertrain_edge.planning.cost import (
    HEADER_BYTES,
    LABEL_BYTES,
    OPTIMIZER_STATE_COPIES,
    CostModel,
)
from hiertrain_edge.planning.schedule import TIERS

CLOUD, EDGE, LOCAL = 0, 1, 2  # a group's class, also its rank in the dispatch order


def pair_class(c1: int, c2: int, num_units: int) -> int:
    """CLOUD when the cloud runs a unit, EDGE when the edge computes the loss, else LOCAL."""
    if c2 < num_units:
        return CLOUD
    return EDGE if c1 < num_units else LOCAL


@dataclass
class _Tier:
    fa: np.ndarray  # prefix sums of per-unit fixed forward seconds, length N + 1
    fb: np.ndarray
    ba: np.ndarray
    bb: np.ndarray
    half_s: float  # half the per-message cost: paid by the sender, and by the receiver
    wire_half_s_per_byte: float  # half the per-byte message cost, likewise
    opt_s_per_byte: float
    copy_s_per_byte: float
    budget_bytes: int

    def fwd(self, a, b, n):
        return (self.fa[b] - self.fa[a]) + (self.fb[b] - self.fb[a]) * n

    def bwd(self, a, b, n):
        return (self.ba[b] - self.ba[a]) + (self.bb[b] - self.bb[a]) * n

    def train(self, a, b, n):
        return self.fwd(a, b, n) + self.bwd(a, b, n)

    def per_byte(self, s_per_byte: float, nbytes):
        return s_per_byte * nbytes

    def half_cost(self, nbytes):
        """One end's share of a message's CPU cost (cost.py's half_cost)."""
        return self.half_s + self.wire_half_s_per_byte * (nbytes + HEADER_BYTES)


class FastCost:
    """Vectorised step time and memory check of one CostModel (same links, same tiers)."""

    def __init__(self, model: CostModel) -> None:
        self.model = model
        facts = model.facts
        self.num_units = N = facts.num_units
        self.tiers = [
            _Tier(
                np.array(t.fa),
                np.array(t.fb),
                np.array(t.ba),
                np.array(t.bb),
                t.message_s / 2,
                t.wire_s_per_byte / 2,
                t.optimizer_s_per_byte,
                t.copy_s_per_byte,
                t.memory_budget_bytes,
            )
            for t in (model.tiers[name] for name in TIERS)
        ]
        self.act = np.array([model.act_bytes(c) for c in range(N + 1)], dtype=np.int64)
        self.param = np.array(facts.param_bytes, dtype=np.int64)
        self.state = self.param + np.array(facts.buffer_bytes, dtype=np.int64)
        saved = [0.0]
        for s in facts.saved_bytes:
            saved.append(saved[-1] + float(s))
        self.saved = np.array(saved)
        self.bps = model.links.bytes_per_s()
        lat = (model.links.de_latency_s, model.links.ec_latency_s)
        self.lat = (lat[0], lat[0], lat[1], lat[1])
        self.src = (0, 1, 1, 2)  # the tier that sends on each link: device, edge, edge, cloud
        ck = model.checkpoints
        self.share = 1.0 / ck.every if ck is not None else 1.0
        # A unit's part of a snapshot: weights, buffers, optimizer state (0: not priced).
        self.snap_unit = self.state + ck.opt_copies * self.param if ck is not None else np.zeros(N)
        self.mirror = ck is not None and ck.mirror

    # --- replicas --------------------------------------------------------------------

    def replication(self, c1: np.ndarray, c2: np.ndarray) -> dict[str, np.ndarray]:
        """Per tuple (cuts (3, T), -1 for an absent group): which tiers hold replicas,
        their traffic in bytes, the parameter bytes each tier owns and the bytes each
        tier holds, as cost.CostModel.replication."""
        N = self.num_units
        u = np.arange(N)[None, None, :]  # (1, 1, N)
        on = (c2 >= 0)[:, :, None]
        run_d = (on & (u < c1[:, :, None])).any(axis=0)  # (T, N)
        run_e = (on & (c1[:, :, None] <= u) & (u < c2[:, :, None])).any(axis=0)
        run_c = (on & (u >= c2[:, :, None])).any(axis=0)
        runners = run_d.astype(int) + run_e + run_c
        single = runners == 1
        own_d, own_c = single & run_d, single & run_c
        own_e = ~(own_d | own_c)  # the edge owns whatever runs on several tiers
        rep_d, rep_c = run_d & ~own_d, run_c & ~own_c
        return {
            "rep_d": rep_d.any(axis=1),
            "rep_c": rep_c.any(axis=1),
            "grads_d": rep_d @ self.state,
            "grads_c": rep_c @ self.state,
            "owned": [own @ self.param for own in (own_d, own_e, own_c)],
            "snap": [own @ self.snap_unit for own in (own_d, own_e, own_c)],
            "held": [
                (run | own) @ self.state
                for run, own in ((run_d, own_d), (run_e, own_e), (run_c, own_c))
            ],
        }

    # --- memory -----------------------------------------------------------------------

    def fits_memory(self, c1: np.ndarray, c2: np.ndarray, ns: np.ndarray, rep=None) -> np.ndarray:
        """Whether every tier's peak memory is within its budget (cost.memory_bytes)."""
        rep = rep if rep is not None else self.replication(c1, c2)
        N = self.num_units
        on = c2 >= 0
        a1, a2 = np.where(on, c1, 0), np.where(on, c2, 0)
        ok = np.ones(np.broadcast_shapes(ns.shape[1:], (c1.shape[1], 1)), dtype=bool)
        spans = ((np.zeros_like(a1), a1), (a1, a2), (a2, np.full_like(a2, N)))
        for t, (a, b) in enumerate(spans):
            total = (OPTIMIZER_STATE_COPIES * rep["held"][t])[:, None]
            for i in range(c1.shape[0]):
                add = total + (self.saved[b[i]] - self.saved[a[i]])[:, None] * ns[i]
                total = np.where(on[i][:, None], add, total)
            ok &= total <= self.tiers[t].budget_bytes
        return ok

    # --- the step ---------------------------------------------------------------------

    def step_time(self, c1: np.ndarray, c2: np.ndarray, ns: np.ndarray, rep=None) -> np.ndarray:
        """Predicted seconds (T, S) of T cut tuples, each tried with S size vectors.

        `c1`, `c2` are (G, T) cuts with the groups of each tuple in dispatch order
        (cloud-bound first, then edge-terminal, then device-local; see `canonical`),
        -1 in both for an absent group; `ns` is (G, T or 1, S). Mirrors
        CostModel.step_time line by line, each step masked to the groups it concerns.
        """
        G, T = c1.shape
        N = self.num_units
        D, E, C = self.tiers
        bps, lat = self.bps, self.lat
        rep = rep if rep is not None else self.replication(c1, c2)
        shape = np.broadcast_shapes(ns.shape[1:], (T, 1))
        free = [np.zeros(shape) for _ in range(4)]
        present = c2 >= 0
        a_col = [np.where(present[i], c1[i], 0)[:, None] for i in range(G)]  # (T, 1)
        b_col = [np.where(present[i], c2[i], 0)[:, None] for i in range(G)]
        cl = [(present[i] & (c2[i] < N))[:, None] for i in range(G)]
        ed = [(present[i] & (c2[i] == N) & (c1[i] < N))[:, None] for i in range(G)]
        lo = [(present[i] & (c1[i] == N))[:, None] for i in range(G)]
        off = [cl[i] | ed[i] for i in range(G)]
        uses_cloud = np.logical_or.reduce(cl)
        # A mask that holds for every tuple or for none becomes True or False: the step
        # is then computed plainly or skipped.
        cl, ed, lo, off = ([_uniform(m) for m in ms] for ms in (cl, ed, lo, off))
        uses_cloud = _uniform(uses_cloud)

        def send(clock, li, on, nbytes, *args, share=1.0):
            """(sender's clock, arrival) of a message sent where `on` holds; its size is
            `nbytes`, or `nbytes(*args)` when arguments are given (computed only if sent);
            priced at `share` (cost.py's send)."""
            if on is False:
                return clock, clock  # no message: the arrival is never read
            nbytes = nbytes(*args) if args else nbytes
            t = clock + share * self.tiers[self.src[li]].half_cost(nbytes)
            if bps[li] <= 0:
                # cost.py: only a bare control message (0 bytes) crosses a down link.
                arrival = np.where(np.asarray(nbytes) == 0, t + lat[li], math.inf)
            else:
                start = np.maximum(t, free[li])
                end = start + share * (nbytes + HEADER_BYTES) / bps[li]
                free[li] = end if on is True else np.where(on, end, free[li])
                arrival = end + lat[li]
            return (t if on is True else np.where(on, t, clock)), arrival

        def recv(clock, tier, arrival, on, nbytes, *args, share=1.0):
            """The receiver's clock after taking a message of `nbytes` (or `nbytes(*args)`)."""
            if on is False:
                return clock
            nbytes = nbytes(*args) if args else nbytes
            end = np.maximum(clock, arrival) + share * tier.half_cost(nbytes)
            return end if on is True else np.where(on, end, clock)

        def work(clock, on, dur, *args):
            """`clock` + `dur(*args)` where `on` holds (computed only if needed)."""
            if on is False:
                return clock
            end = clock + dur(*args)
            return end if on is True else np.where(on, end, clock)

        rep_d, rep_c = _uniform(rep["rep_d"][:, None]), _uniform(rep["rep_c"][:, None])
        grads_d, grads_c = rep["grads_d"][:, None], rep["grads_c"][:, None]
        zero = np.zeros(shape)
        arr_fwd, arr_fwd_c, arr_bwd_e, arr_bwd_d = {}, {}, {}, {}

        # The snapshot's parts (cost.py): whole messages, priced at 1/every per step.
        share = self.share
        snap_d, snap_e, snap_c = (v[:, None] for v in rep["snap"])
        mirror = snap_e + snap_c if self.mirror else np.zeros_like(snap_e)
        has_d, has_c, has_m = (_uniform(v > 0) for v in (snap_d, snap_c, mirror))
        if bps[0] <= 0:  # cost.py: a board cut off from its edge sends no snapshot
            has_d = False

        # Device, part 1: `step`, its snapshot part, forward of offloaded groups, local groups.
        dev, arr_step = send(zero, 0, True, 0)
        keep = share * D.copy_s_per_byte
        dev = work(dev, has_d if self.mirror else False, D.per_byte, keep, snap_d)
        dev, arr_snap_d = send(dev, 0, has_d, snap_d, share=share)
        for i in range(G):
            a, n = a_col[i], ns[i]
            dev = work(dev, off[i], D.fwd, 0, a, n)
            dev, arr_fwd[i] = send(dev, 0, off[i], self._fwd_bytes, n, a)
        for i in range(G):
            n = ns[i]
            dev = work(dev, lo[i], D.train, 0, N, n)

        # Edge, part 1: `step`, then each offloaded group as it arrives.
        edge = recv(zero, E, arr_step, True, 0)
        edge, arr_step_c = send(edge, 2, uses_cloud, 0)
        cloud = recv(zero, C, arr_step_c, uses_cloud, 0)
        cloud, arr_snap_c = send(cloud, 3, has_c, snap_c, share=share)
        edge = recv(edge, E, arr_snap_d, has_d, snap_d, share=share)
        edge = recv(edge, E, arr_snap_c, has_c, snap_c, share=share)
        edge = work(edge, _uniform(snap_e > 0), E.per_byte, share * E.copy_s_per_byte, snap_e)
        edge, arr_mirror = send(edge, 1, has_m, mirror, share=share)
        for i in range(G):
            a, b, n = a_col[i], b_col[i], ns[i]
            edge = recv(edge, E, arr_fwd[i], off[i], self._fwd_bytes, n, a)
            edge = work(edge, cl[i], E.fwd, a, b, n)
            edge, arr_fwd_c[i] = send(edge, 2, cl[i], self._fwd_bytes, n, b)
            edge = work(edge, ed[i], E.train, a, N, n)
            edge, arr_bwd_d[i] = send(edge, 1, ed[i], self._bwd_bytes, n, a)

        # Cloud: each cloud-bound group to the loss and back, then its replicas.
        for i in range(G):
            b, n = b_col[i], ns[i]
            cloud = recv(cloud, C, arr_fwd_c[i], cl[i], self._fwd_bytes, n, b)
            cloud = work(cloud, cl[i], C.train, b, N, n)
            cloud, arr_bwd_e[i] = send(cloud, 3, cl[i], self._bwd_bytes, n, b)
        cloud, arr_grads_c = send(cloud, 3, rep_c, grads_c)
        cloud = work(cloud, uses_cloud, C.per_byte, C.opt_s_per_byte, rep["owned"][2][:, None])

        # Edge, part 2: cloud gradients back down through the edge slices.
        for i in range(G):
            a, b, n = a_col[i], b_col[i], ns[i]
            edge = recv(edge, E, arr_bwd_e[i], cl[i], self._bwd_bytes, n, b)
            edge = work(edge, cl[i], E.bwd, a, b, n)
            edge, arr = send(edge, 1, cl[i], self._bwd_bytes, n, a)
            if cl[i] is not False:
                arr_bwd_d[i] = arr if cl[i] is True else np.where(cl[i], arr, arr_bwd_d[i])

        # Device, part 2: finish the offloaded groups' backward, send replica grads.
        for i in range(G):
            a, n = a_col[i], ns[i]
            dev = recv(dev, D, arr_bwd_d[i], off[i], self._bwd_bytes, n, a)
            dev = work(dev, off[i], D.bwd, 0, a, n)
        dev, arr_grads_d = send(dev, 0, rep_d, grads_d)
        dev = dev + D.opt_s_per_byte * rep["owned"][0][:, None]

        # Edge, part 3: sum the replicas, step, send the weights back.
        edge = recv(edge, E, arr_grads_d, rep_d, grads_d)
        edge = recv(edge, E, arr_grads_c, rep_c, grads_c)
        rep_bytes = grads_d + grads_c
        edge = edge + (E.copy_s_per_byte * rep_bytes + E.opt_s_per_byte * rep["owned"][1][:, None])
        edge, arr_w_d = send(edge, 1, rep_d, grads_d)
        edge, arr_w_c = send(edge, 2, rep_c, grads_c)

        # Device and cloud load the new weights of their replicas.
        dev = recv(dev, D, arr_w_d, rep_d, grads_d)
        dev = work(dev, rep_d, D.per_byte, D.copy_s_per_byte, grads_d)
        cloud = recv(cloud, C, arr_w_c, rep_c, grads_c)
        cloud = work(cloud, rep_c, C.per_byte, C.copy_s_per_byte, grads_c)
        # The board takes the mirror and keeps a copy of it.
        dev = recv(dev, D, arr_mirror, has_m, mirror, share=share)
        dev = work(dev, has_m, D.per_byte, share * D.copy_s_per_byte, mirror)
        return np.maximum(np.maximum(dev, edge), cloud)

    def _fwd_bytes(self, n, cut):
        """A `fwd` message: activations at the cut and the labels."""
        return n * (self.act[cut] + LABEL_BYTES)

    def _bwd_bytes(self, n, cut):
        """A `bwd` message: gradients at the cut, none at the raw input (cut 0)."""
        return np.where(cut > 0, n * self.act[cut], 0)

    def evaluate(self, c1: np.ndarray, c2: np.ndarray, ns: np.ndarray) -> np.ndarray:
        """Step times (T, S), inf where a tier's memory budget is exceeded."""
        rep = self.replication(c1, c2)
        times = self.step_time(c1, c2, ns, rep)
        return np.where(self.fits_memory(c1, c2, ns, rep), times, np.inf)


def _uniform(mask: np.ndarray):
    """True or False when a mask holds for every tuple or for none, else the mask."""
    if mask.all():
        return True
    return False if not mask.any() else mask


def canonical(cuts, num_units: int) -> list[int]:
    """The dispatch order of a schedule's groups (indices into `cuts`): cloud-bound, then
    edge-terminal, then device-local, each class in its given order, as cost.py orders
    them (Schedule.dispatch_order)."""
    return sorted(range(len(cuts)), key=lambda i: pair_class(*cuts[i], num_units))
