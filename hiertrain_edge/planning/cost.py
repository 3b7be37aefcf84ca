"""The cost model: one training step's predicted time, found by replaying the runtime's
order of work on serial resources (three tiers, four link directions).

Every tier is one serial compute resource and every link direction one serial transfer
resource. A message of b bytes (payload and header) costs its sender `message_overhead_s / 2
+ wire_s_per_byte * b / 2` of compute (the profile's one-way costs, split evenly between
the two ends), then occupies its link for b / bandwidth, arrives one latency later, and
costs its receiver the other half, at its own profile's rates, when the receiver gets to
it. The per-byte part is what encrypting, copying and pushing the bytes through the TCP
stack costs the two tiers: an edge that relays a board's raw samples to the cloud pays it
twice per byte, on a core that also computes. The order of work is the runtime's `_step`
(runtime/device.py, edge.py, cloud.py):

    device: send `step`; for each offloaded group in dispatch order (cloud-bound first):
            forward [0, c1), send `fwd`; train local groups end to end; for each offloaded
            group: wait `bwd`, backward [0, c1); send `grads` of replicated units;
            optimizer; wait `weights`
    edge:   wait `step`, pass it to the cloud; for each offloaded group: wait `fwd`;
            cloud-bound: forward [c1, c2), send `fwd` on; edge-terminal: forward and
            backward [c1, N), send `bwd` at once; then for each cloud-bound group: wait
            `bwd`, backward [c1, c2), send `bwd` down; wait `grads` of the replicas, add
            them, optimizer, send `weights` to the device, then to the cloud
    cloud:  wait `step`; for each cloud-bound group: wait `fwd`, forward and backward
            [c2, N), send `bwd`; send `grads`; optimizer; wait `weights`

With `Checkpoints`, every `every`-th step also starts with the snapshot: the board and the
cloud send the edge the units they own (weights, buffers, optimizer state), the edge copies
its own and, when the board may train alone, mirrors every unit the board does not own to
it. A step is priced at 1/`every` of that traffic and work (the mean over a run, not one
step's: the snapshot step itself is `every` times longer).

A step's time is when the last tier is done. Every quantity is affine in the group
sizes, joined by max and +, so the same code runs on floats or on numpy arrays of
candidate sizes (the planner's vectorised search), and the step time is a convex,
piecewise-linear function of the sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hiertrain_edge.errors import ConfigError, ScheduleError
from hiertrain_edge.models import ModelSpec
from hiertrain_edge.planning.schedule import TIERS, Schedule
from hiertrain_edge.profiling.measure import ModelFacts, model_facts
from hiertrain_edge.profiling.profile import (
    BWD_FLOPS_RATIO,
    FIRST_UNIT_BWD_FLOPS_RATIO,
    TierProfile,
)

LINKS = ("device->edge", "edge->device", "edge->cloud", "cloud->edge")
HEADER_BYTES = 160  # msgpack header of a runtime message (codec.encode of a `fwd`: ~100-200)
LABEL_BYTES = 8  # int64 label per sample
OPTIMIZER_STATE_COPIES = 3  # weights, gradient, momentum (SGD) per parameter byte held
BITS_PER_BYTE = 8


@dataclass(frozen=True)
class Links:
    """Bandwidth of each link direction (Mbit/s) and one-way latency of each link (s).

    A bandwidth of 0 means the link is down: any schedule that needs it is infeasible.
    """

    de_mbps: float  # device -> edge
    ed_mbps: float  # edge -> device
    ec_mbps: float  # edge -> cloud
    ce_mbps: float  # cloud -> edge
    de_latency_s: float = 0.0
    ec_latency_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("de_mbps", "ed_mbps", "ec_mbps", "ce_mbps", "de_latency_s", "ec_latency_s"):
            value = getattr(self, name)
            if not value >= 0 or math.isnan(value):
                raise ConfigError(f"link {name} must be >= 0, got {value}")

    @classmethod
    def symmetric(
        cls,
        bw_de_mbps: float,
        bw_ec_mbps: float,
        de_latency_s: float = 0.0,
        ec_latency_s: float = 0.0,
    ) -> Links:
        """The same bandwidth both ways on each link."""
        return cls(bw_de_mbps, bw_de_mbps, bw_ec_mbps, bw_ec_mbps, de_latency_s, ec_latency_s)

    def bytes_per_s(self) -> tuple[float, float, float, float]:
        mbps = (self.de_mbps, self.ed_mbps, self.ec_mbps, self.ce_mbps)
        return tuple(m * 1e6 / BITS_PER_BYTE for m in mbps)  # type: ignore[return-value]


@dataclass(frozen=True)
class Checkpoints:
    """The job's periodic snapshot, which the cost model prices per step.

    `opt_copies` is how many tensors of a parameter's size its optimizer keeps (SGD with
    momentum 1, Adam 2, plain SGD 0); `mirror` says whether the edge mirrors the units the
    board does not own to it (the job's `device_fallback`).
    """

    every: int
    opt_copies: int = 1
    mirror: bool = True

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ConfigError(f"checkpoint interval must be >= 1 step, got {self.every}")
        if self.opt_copies < 0:
            raise ConfigError(f"optimizer state copies must be >= 0, got {self.opt_copies}")


@dataclass(frozen=True)
class TierCosts:
    """One tier's per-unit fits for one model, as prefix sums: the cost of units [a, b)
    for n samples is (fa[b] - fa[a]) + (fb[b] - fb[a]) * n (forward; likewise backward)."""

    fa: tuple[float, ...]
    fb: tuple[float, ...]
    ba: tuple[float, ...]
    bb: tuple[float, ...]
    message_s: float
    wire_s_per_byte: float
    optimizer_s_per_byte: float
    copy_s_per_byte: float
    memory_budget_bytes: int
    name: str

    def fwd(self, a: int, b: int, n: Any) -> Any:
        return (self.fa[b] - self.fa[a]) + (self.fb[b] - self.fb[a]) * n

    def bwd(self, a: int, b: int, n: Any) -> Any:
        return (self.ba[b] - self.ba[a]) + (self.bb[b] - self.bb[a]) * n


def _prefix(values: list[float]) -> tuple[float, ...]:
    out, acc = [0.0], 0.0
    for v in values:
        acc += v
        out.append(acc)
    return tuple(out)


def tier_costs(profile: TierProfile, facts: ModelFacts) -> TierCosts:
    """Per-unit forward and backward fits of `profile` for the model of `facts`.

    A measured profile must have been taken on this very model; an estimated one is
    mapped through each unit's FLOPs and activation bytes (see profiling/profile.py).
    """
    fa, fb, ba, bb = [], [], [], []
    if profile.units is not None:
        if profile.model != facts.name or len(profile.units) != facts.num_units:
            raise ConfigError(
                f"profile {profile.name!r} was measured on model {profile.model} "
                f"({len(profile.units)} units), not {facts.name} ({facts.num_units} units); "
                f"run `hiertrain-edge profile --model {facts.name}` on that host"
            )
        for u in profile.units:
            fa.append(u.fwd.a_s)
            fb.append(u.fwd.b_s)
            ba.append(u.bwd.a_s)
            bb.append(u.bwd.b_s)
    else:
        assert profile.compute is not None
        c = profile.compute
        for i in range(facts.num_units):
            in_bytes = facts.input_bytes if i == 0 else facts.out_bytes[i - 1]
            per_sample = facts.flops[i] / (c.gflops * 1e9) + (in_bytes + facts.out_bytes[i]) / (
                c.mem_gbps * 1e9
            )
            ratio = FIRST_UNIT_BWD_FLOPS_RATIO if i == 0 else BWD_FLOPS_RATIO
            fa.append(c.op_overhead_s)
            fb.append(per_sample)
            ba.append(c.op_overhead_s)
            bb.append(ratio * per_sample)
    return TierCosts(
        _prefix(fa),
        _prefix(fb),
        _prefix(ba),
        _prefix(bb),
        profile.message_overhead_s,
        profile.wire_s_per_byte,
        profile.optimizer_s_per_byte,
        profile.copy_s_per_byte,
        profile.memory_budget_bytes,
        profile.name,
    )


@dataclass(frozen=True)
class Event:
    """One busy interval of a resource in the predicted step (for the Gantt chart)."""

    resource: str  # a tier or a link direction such as "device->edge"
    start_s: float
    end_s: float
    label: str


@dataclass
class CostModel:
    """Everything needed to predict a step of one model on three profiled tiers."""

    facts: ModelFacts
    tiers: dict[str, TierCosts]
    links: Links
    checkpoints: Checkpoints | None = None  # None: snapshots are not priced
    _rep_cache: dict[frozenset, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls,
        spec: ModelSpec | ModelFacts,
        profiles: dict[str, TierProfile],
        links: Links,
        checkpoints: Checkpoints | None = None,
    ) -> CostModel:
        facts = spec if isinstance(spec, ModelFacts) else model_facts(spec)
        missing = [t for t in TIERS if t not in profiles]
        if missing:
            raise ConfigError(f"no profile for tier(s) {', '.join(missing)}; need {TIERS}")
        return cls(facts, {t: tier_costs(profiles[t], facts) for t in TIERS}, links, checkpoints)

    def with_links(self, links: Any) -> CostModel:
        """The same model and tiers on other links."""
        return CostModel(self.facts, self.tiers, links, self.checkpoints)

    def snapshot_bytes(self, cuts: frozenset[tuple[int, int]]) -> dict[str, float]:
        """Bytes of each tier's part of one snapshot (the units it owns: weights, buffers,
        optimizer state) and of the mirror the edge sends the board; all 0 without
        checkpoints."""
        ck = self.checkpoints
        if ck is None:
            return {"device": 0.0, "edge": 0.0, "cloud": 0.0, "mirror": 0.0}
        state = self.replication(cuts)["owned_state_bytes"]
        part = {t: float(state[t][0] + ck.opt_copies * state[t][1]) for t in TIERS}
        part["mirror"] = part["edge"] + part["cloud"] if ck.mirror else 0.0
        return part

    @property
    def num_units(self) -> int:
        return self.facts.num_units

    def act_bytes(self, cut: int) -> int:
        """Bytes per sample crossing a cut: the raw input at 0, else unit cut-1's output."""
        return self.facts.input_bytes if cut == 0 else self.facts.out_bytes[cut - 1]

    # --- replicated units: fixed traffic and work per step ---------------------------

    def replication(self, cuts: frozenset[tuple[int, int]]) -> dict[str, Any]:
        """Bytes and work of keeping replicated units identical, for a set of cut pairs."""
        hit = self._rep_cache.get(cuts)
        if hit is not None:
            return hit
        n = self.num_units
        sched = Schedule(tuple(_group(1, c) for c in sorted(cuts)))
        p, buf = self.facts.param_bytes, self.facts.buffer_bytes
        owned = {t: 0 for t in TIERS}
        owned_state = {t: 0 for t in TIERS}
        held = {t: 0 for t in TIERS}
        for u in range(n):
            owned[sched.owner(u, n)] += p[u]
            owned_state[sched.owner(u, n)] += p[u] + buf[u]
        for t in TIERS:
            for u in sched.units_on(t, n) | {u for u in range(n) if sched.owner(u, n) == t}:
                held[t] += p[u] + buf[u]
        rep = {t: sched.replicated(t, n) for t in ("device", "cloud")}
        out = {
            "owned_param_bytes": owned,
            # a snapshot's part per owner: (weights and buffers, parameters alone)
            "owned_state_bytes": {t: (owned_state[t], owned[t]) for t in TIERS},
            "held_bytes": held,
            "rep_units": rep,
            # grads message: one gradient per parameter plus the buffers
            "grads_bytes": {t: sum(p[u] + buf[u] for u in rep[t]) for t in rep},
            # weights message: the state dict, parameters and buffers
            "weights_bytes": {t: sum(p[u] + buf[u] for u in rep[t]) for t in rep},
        }
        self._rep_cache[cuts] = out
        return out

    # --- memory -----------------------------------------------------------------------

    def memory_bytes(self, cuts: list[tuple[int, int]], ns: list[Any]) -> dict[str, Any]:
        """Peak training memory per tier: held units' weights, gradients and optimizer
        state, plus every group's saved activations (all groups' graphs are alive at once,
        since every forward runs before the first backward returns)."""
        rep = self.replication(frozenset(cuts))
        saved = _prefix([float(s) for s in self.facts.saved_bytes])
        out: dict[str, Any] = {}
        for t in TIERS:
            total: Any = OPTIMIZER_STATE_COPIES * rep["held_bytes"][t]
            for (c1, c2), n in zip(cuts, ns, strict=True):
                a, b = _group(1, (c1, c2)).span(t, self.num_units)
                total = total + (saved[b] - saved[a]) * n
            out[t] = total
        return out

    def fits_memory(self, cuts: list[tuple[int, int]], ns: list[Any]) -> Any:
        mem = self.memory_bytes(cuts, ns)
        ok: Any = True
        for t in TIERS:
            ok = ok & (mem[t] <= self.tiers[t].memory_budget_bytes)
        return ok

    # --- the step ----------------------------------------------------------------------

    def step_time(
        self,
        cuts: list[tuple[int, int]],
        ns: list[Any],
        events: list[Event] | None = None,
    ) -> Any:
        """Predicted seconds of one step for groups with `cuts` and sizes `ns` (floats or
        numpy arrays of equal shape); inf when a needed link has no bandwidth."""
        vec = any(isinstance(n, np.ndarray) for n in ns)
        mx = np.maximum if vec else max
        N = self.num_units
        D, E, C = (self.tiers[t] for t in TIERS)
        bps = self.links.bytes_per_s()
        lat = (
            self.links.de_latency_s,
            self.links.de_latency_s,
            self.links.ec_latency_s,
            self.links.ec_latency_s,
        )
        src_of = (D, E, E, C)
        free: list[Any] = [0.0, 0.0, 0.0, 0.0]
        rec = events is not None

        def note(res: str, start: Any, end: Any, label: str) -> None:
            if rec and end > start:
                events.append(Event(res, float(start), float(end), label))

        def half_cost(tier: TierCosts, nbytes: Any) -> Any:
            """One end's share of a message's CPU cost: fixed plus per byte."""
            return (tier.message_s + tier.wire_s_per_byte * (nbytes + HEADER_BYTES)) / 2

        def send(
            clock: Any, li: int, nbytes: Any, label: str, share: float = 1.0
        ) -> tuple[Any, Any]:
            """Sender pays half the message cost, the link carries it; returns the sender's
            new clock and the arrival time. A message of every k-th step is sent with
            `share` 1/k: its costs and its time on the link are priced at that share."""
            t = clock + share * half_cost(src_of[li], nbytes)
            note(LINK_TIER[li], clock, t, f"send {label}")
            if bps[li] <= 0:
                # A link that is down carries no data; a bare control message (`step`)
                # is assumed to get through, so a device-only step needs no link.
                control = isinstance(nbytes, (int, float)) and nbytes == 0
                return t, (t + lat[li] if control else math.inf)
            start = mx(t, free[li])
            end = start + share * (nbytes + HEADER_BYTES) / bps[li]
            free[li] = end
            note(LINKS[li], start, end, label)
            return t, end + lat[li]

        def recv(
            clock: Any,
            tier: TierCosts,
            arrival: Any,
            nbytes: Any,
            res: str,
            label: str,
            share: float = 1.0,
        ) -> Any:
            t = mx(clock, arrival)
            end = t + share * half_cost(tier, nbytes)
            note(res, t, end, f"recv {label}")
            return end

        def work(clock: Any, dur: Any, res: str, label: str) -> Any:
            end = clock + dur
            note(res, clock, end, label)
            return end

        def fwd_bytes(n: Any, cut: int) -> Any:
            """A `fwd` message: activations at the cut and the labels."""
            return n * (self.act_bytes(cut) + LABEL_BYTES)

        def bwd_bytes(n: Any, cut: int) -> Any:
            """A `bwd` message: gradients at the cut, none at the raw input (cut 0)."""
            return n * self.act_bytes(cut) if cut > 0 else 0

        groups = [_group(1, c) for c in cuts]
        loss = [g.loss_tier(N) for g in groups]
        cloud_ids = [i for i in range(len(cuts)) if loss[i] == "cloud"]
        edge_ids = [i for i in range(len(cuts)) if loss[i] == "edge"]
        order = cloud_ids + edge_ids  # Schedule.dispatch_order: stable, cloud-bound first
        local = [i for i in range(len(cuts)) if loss[i] == "device"]
        uses_cloud = any(c2 < N for _, c2 in cuts)
        rep = self.replication(frozenset(cuts))
        rep_d, rep_c = rep["rep_units"]["device"], rep["rep_units"]["cloud"]
        arr_fwd: dict[int, Any] = {}
        arr_fwd_c: dict[int, Any] = {}
        arr_bwd_e: dict[int, Any] = {}
        arr_bwd_d: dict[int, Any] = {}
        # The snapshot: sent as whole messages every k-th step, priced at 1/k per step.
        snap = self.snapshot_bytes(frozenset(cuts))
        if bps[0] <= 0:  # a board cut off from its edge trains alone and sends no snapshot
            snap["device"] = 0.0
        share = 1.0 / self.checkpoints.every if self.checkpoints is not None else 1.0

        # Device, part 1: `step`, its snapshot part, forward of offloaded groups, local groups.
        dev: Any = 0.0
        dev, arr_step = send(dev, 0, 0, "step")
        if snap["device"]:
            if self.checkpoints is not None and self.checkpoints.mirror:
                # kept to be joined with the mirror
                keep = share * D.copy_s_per_byte * snap["device"]
                dev = work(dev, keep, "device", "keep own units")
            dev, arr_snap_d = send(dev, 0, snap["device"], "snapshot", share)
        for i in order:
            (c1, _), n = cuts[i], ns[i]
            if c1 > 0:
                dev = work(dev, D.fwd(0, c1, n), "device", f"fwd g{i} [0,{c1})")
            dev, arr_fwd[i] = send(dev, 0, fwd_bytes(n, c1), f"fwd g{i}")
        for i in local:
            n = ns[i]
            dev = work(dev, D.fwd(0, N, n) + D.bwd(0, N, n), "device", f"train g{i} [0,{N})")

        # Edge, part 1: `step`, then each offloaded group as it arrives.
        edge: Any = recv(0.0, E, arr_step, 0, "edge", "step")
        if uses_cloud:
            edge, arr_step_c = send(edge, 2, 0, "step")
        cloud: Any = 0.0
        if uses_cloud:
            cloud = recv(cloud, C, arr_step_c, 0, "cloud", "step")
        if snap["cloud"]:
            cloud, arr_snap_c = send(cloud, 3, snap["cloud"], "snapshot", share)
        # Edge: gather the snapshot (board's part, cloud's part, a copy of its own), mirror.
        if snap["device"]:
            edge = recv(edge, E, arr_snap_d, snap["device"], "edge", "snapshot", share)
        if snap["cloud"]:
            edge = recv(edge, E, arr_snap_c, snap["cloud"], "edge", "snapshot", share)
        if snap["edge"]:
            edge = work(edge, share * E.copy_s_per_byte * snap["edge"], "edge", "copy own units")
        if snap["mirror"]:
            edge, arr_mirror = send(edge, 1, snap["mirror"], "mirror", share)
        for i in order:
            (c1, c2), n = cuts[i], ns[i]
            edge = recv(edge, E, arr_fwd[i], fwd_bytes(n, c1), "edge", f"fwd g{i}")
            if loss[i] == "cloud":
                if c2 > c1:
                    edge = work(edge, E.fwd(c1, c2, n), "edge", f"fwd g{i} [{c1},{c2})")
                edge, arr_fwd_c[i] = send(edge, 2, fwd_bytes(n, c2), f"fwd g{i}")
            else:
                dur = E.fwd(c1, N, n) + E.bwd(c1, N, n)
                edge = work(edge, dur, "edge", f"train g{i} [{c1},{N})")
                edge, arr_bwd_d[i] = send(edge, 1, bwd_bytes(n, c1), f"bwd g{i}")

        # Cloud: each cloud-bound group to the loss and back, then its replicas.
        for i in cloud_ids:
            (_, c2), n = cuts[i], ns[i]
            cloud = recv(cloud, C, arr_fwd_c[i], fwd_bytes(n, c2), "cloud", f"fwd g{i}")
            dur = C.fwd(c2, N, n) + C.bwd(c2, N, n)
            cloud = work(cloud, dur, "cloud", f"train g{i} [{c2},{N})")
            cloud, arr_bwd_e[i] = send(cloud, 3, bwd_bytes(n, c2), f"bwd g{i}")
        if rep_c:
            cloud, arr_grads_c = send(cloud, 3, rep["grads_bytes"]["cloud"], "grads")
        if uses_cloud:
            opt = C.optimizer_s_per_byte * rep["owned_param_bytes"]["cloud"]
            cloud = work(cloud, opt, "cloud", "optimizer")

        # Edge, part 2: cloud gradients back down through the edge slices.
        for i in cloud_ids:
            (c1, c2), n = cuts[i], ns[i]
            edge = recv(edge, E, arr_bwd_e[i], bwd_bytes(n, c2), "edge", f"bwd g{i}")
            if c2 > c1:
                edge = work(edge, E.bwd(c1, c2, n), "edge", f"bwd g{i} [{c1},{c2})")
            edge, arr_bwd_d[i] = send(edge, 1, bwd_bytes(n, c1), f"bwd g{i}")

        # Device, part 2: finish the offloaded groups' backward, send replica grads.
        for i in order:
            (c1, _), n = cuts[i], ns[i]
            dev = recv(dev, D, arr_bwd_d[i], bwd_bytes(n, c1), "device", f"bwd g{i}")
            if c1 > 0:
                dev = work(dev, D.bwd(0, c1, n), "device", f"bwd g{i} [0,{c1})")
        if rep_d:
            dev, arr_grads_d = send(dev, 0, rep["grads_bytes"]["device"], "grads")
        opt = D.optimizer_s_per_byte * rep["owned_param_bytes"]["device"]
        dev = work(dev, opt, "device", "optimizer")

        # Edge, part 3: sum the replicas, step, send the weights back.
        if rep_d:
            edge = recv(edge, E, arr_grads_d, rep["grads_bytes"]["device"], "edge", "grads")
        if rep_c:
            edge = recv(edge, E, arr_grads_c, rep["grads_bytes"]["cloud"], "edge", "grads")
        rep_bytes = rep["grads_bytes"]["device"] + rep["grads_bytes"]["cloud"]
        opt = (
            E.copy_s_per_byte * rep_bytes
            + E.optimizer_s_per_byte * rep["owned_param_bytes"]["edge"]
        )
        edge = work(edge, opt, "edge", "sum replicas, optimizer")
        if rep_d:
            edge, arr_w_d = send(edge, 1, rep["weights_bytes"]["device"], "weights")
        if rep_c:
            edge, arr_w_c = send(edge, 2, rep["weights_bytes"]["cloud"], "weights")

        # Device and cloud load the new weights of their replicas.
        if rep_d:
            dev = recv(dev, D, arr_w_d, rep["weights_bytes"]["device"], "device", "weights")
            dev = work(dev, D.copy_s_per_byte * rep["weights_bytes"]["device"], "device", "load")
        if rep_c:
            cloud = recv(cloud, C, arr_w_c, rep["weights_bytes"]["cloud"], "cloud", "weights")
            cloud = work(cloud, C.copy_s_per_byte * rep["weights_bytes"]["cloud"], "cloud", "load")
        # The board takes the mirror (queued on its link ahead of the step's `bwd`) and
        # keeps a copy of it.
        if snap["mirror"]:
            dev = recv(dev, D, arr_mirror, snap["mirror"], "device", "mirror", share)
            dev = work(dev, share * D.copy_s_per_byte * snap["mirror"], "device", "keep mirror")
        return mx(mx(dev, edge), cloud)

    # --- schedules ----------------------------------------------------------------------

    def predict(self, schedule: Schedule) -> float:
        cuts, ns = _unpack(schedule, self.num_units)
        return float(self.step_time(cuts, ns))

    def timeline(self, schedule: Schedule) -> tuple[float, list[Event]]:
        cuts, ns = _unpack(schedule, self.num_units)
        events: list[Event] = []
        total = float(self.step_time(cuts, ns, events))
        return total, events


LINK_TIER = ("device", "edge", "edge", "cloud")  # the tier that sends on each link


def _group(n: int, cuts: tuple[int, int]):
    from hiertrain_edge.planning.schedule import Group

    return Group(n, cuts[0], cuts[1])


def _unpack(schedule: Schedule, num_units: int) -> tuple[list[tuple[int, int]], list[int]]:
    schedule.validate(num_units)
    return [(g.c1, g.c2) for g in schedule.groups], [g.n for g in schedule.groups]


def predict(
    schedule: Schedule,
    spec: ModelSpec | ModelFacts,
    profiles: dict[str, TierProfile],
    links: Links,
    checkpoints: Checkpoints | None = None,
) -> float:
    """Predicted seconds of one step of `schedule`; inf when a link it needs is down.

    Raises ScheduleError when the schedule does not fit the model.
    """
    model = CostModel.build(spec, profiles, links, checkpoints)
    if not isinstance(schedule, Schedule):
        raise ScheduleError(f"expected a Schedule, got {type(schedule).__name__}")
    return model.predict(schedule)


def timeline(
    schedule: Schedule,
    spec: ModelSpec | ModelFacts,
    profiles: dict[str, TierProfile],
    links: Links,
    checkpoints: Checkpoints | None = None,
) -> tuple[float, list[Event]]:
    """The predicted step as (seconds, busy intervals per tier and link direction)."""
    return CostModel.build(spec, profiles, links, checkpoints).timeline(schedule)
