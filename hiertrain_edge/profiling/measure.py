"""Measuring a tier: time every unit's forward and backward at several batch sizes, fit
a + b * n, and time the per-message, per-byte and optimizer costs of the runtime."""

from __future__ import annotations

import logging
import os
import platform
import socket
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hiertrain_edge.errors import ConfigError
from hiertrain_edge.models import ModelSpec, build_units, describe
from hiertrain_edge.models.units import input_bytes
from hiertrain_edge.profiling.profile import (
    LinearFit,
    Provenance,
    TierProfile,
    UnitProfile,
    today,
)

log = logging.getLogger(__name__)

QUICK_REPEATS = 3  # timed runs per (unit, n), at least; their mean is kept
FULL_REPEATS = 7
FULL_BLOCK_S = 0.2  # seconds of timed runs per (unit, n), at least: many cfs periods
QUICK_BLOCK_S = 0.03
CHAIN_REPEATS = 5  # timed runs of the whole model per n, at least (see calibrate_to_chain)
CHAIN_BLOCK_S = 0.1
BYTES_PROBE = 4 << 20  # 4 MiB tensors for the per-byte costs
MESSAGE_PINGS = 200
WIRE_PROBE_BYTES = 1 << 20  # one large message: 1 MiB
WIRE_SENDS = 20
HEADER_BYTES = 160  # msgpack header of a typical runtime message, measured on codec.encode
CGROUP_ROOT = Path("/sys/fs/cgroup")
CPU_SHARE_ENV = "HIERTRAIN_EDGE_CPU_SHARE"  # cores this tier may use, e.g. 0.25


@dataclass(frozen=True)
class ModelFacts:
    """Hardware-independent sizes of every unit, per sample where they scale with n."""

    name: str
    num_units: int
    input_bytes: int
    out_bytes: tuple[int, ...]
    param_bytes: tuple[int, ...]
    buffer_bytes: tuple[int, ...]
    flops: tuple[int, ...]  # forward FLOPs per sample
    saved_bytes: tuple[int, ...]  # activation bytes autograd keeps for backward, per sample


def _saved_bytes(unit: torch.nn.Module, x: torch.Tensor, input_grad: bool) -> int:
    seen: set[tuple[int, int]] = set()
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        key = (t.untyped_storage().data_ptr(), t.numel())
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
        return t

    x = x.detach().requires_grad_(input_grad)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        unit(x)
    return total


@lru_cache(maxsize=16)
def _facts_cached(spec: ModelSpec) -> ModelFacts:
    infos = describe(spec)
    units = build_units(spec, range(spec.num_units), seed=0)
    saved = []
    x1 = torch.zeros((1, *spec.input_shape))
    x3 = torch.zeros((3, *spec.input_shape))
    for i in range(spec.num_units):
        unit = units[i].train()
        # Per sample: the difference between 3 and 1 samples drops the saved weights.
        s = (_saved_bytes(unit, x3, i > 0) - _saved_bytes(unit, x1, i > 0)) // 2
        saved.append(max(0, s))
        with torch.no_grad():
            x1, x3 = unit(x1), unit(x3)
    return ModelFacts(
        name=spec.name,
        num_units=spec.num_units,
        input_bytes=input_bytes(spec),
        out_bytes=tuple(u.out_bytes for u in infos),
        param_bytes=tuple(u.param_bytes for u in infos),
        buffer_bytes=tuple(u.buffer_bytes for u in infos),
        flops=tuple(u.forward_flops for u in infos),
        saved_bytes=tuple(saved),
    )


def model_facts(spec: ModelSpec) -> ModelFacts:
    """Sizes and FLOPs of every unit (cached per spec)."""
    return _facts_cached(spec)


# --- timing -------------------------------------------------------------------------


def cpu_share(
    root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")
) -> float | None:
    """This process's CPU quota in cores (cgroup v2 `cpu.max` or v1 `cpu.cfs_quota_us` over
    the period), the lowest on the path to the root; None when nothing limits it.

    CPU_SHARE_ENV, when set, wins: `ip netns exec` mounts a fresh /sys without the cgroup
    tree, so the emulator tells its tiers their share this way.
    """
    given = os.environ.get(CPU_SHARE_ENV)
    if given:
        try:
            value = float(given)
        except ValueError as exc:
            raise ConfigError(f"{CPU_SHARE_ENV} must be a number of cores, got {given!r}") from exc
        return value if value > 0 else None
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    share: float | None = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "" and (root / "cgroup.controllers").exists():
            files = [("cpu.max", None)]
            base = root
        elif "cpu" in controllers.split(","):
            files = [("cpu.cfs_quota_us", "cpu.cfs_period_us")]
            base = root / controllers
            if not base.exists():
                base = root / "cpu"
        else:
            continue
        folder = base / path.lstrip("/")
        while True:
            for quota_file, period_file in files:
                q = _cgroup_quota(folder, quota_file, period_file)
                if q is not None:
                    share = q if share is None else min(share, q)
            if folder == base or folder.parent == folder:
                break
            folder = folder.parent
    return share


def _cgroup_quota(folder: Path, quota_file: str, period_file: str | None) -> float | None:
    try:
        text = (folder / quota_file).read_text().split()
        if period_file is None:  # v2: "max 100000" or "25000 100000"
            quota, period = text[0], text[1]
        else:
            quota, period = text[0], (folder / period_file).read_text().split()[0]
    except (OSError, IndexError):
        return None
    if quota in ("max", "-1") or not period.isdigit() or int(period) <= 0:
        return None
    return int(quota) / int(period)


class Clock:
    """Seconds of a tier's work as the tier experiences them.

    Wall time of short runs on a shared or throttled host is mostly luck. Under a cgroup
    CPU quota below the thread count (a board held to a quarter core), a run that fits in
    what is left of the current cfs period (100 ms) runs at the host's full speed, one
    that does not waits out the rest of the period; and a one-thread tier profiled while
    other tiers (or other work) share the host's cores takes longer than when it has its
    core, as it does when it trains. So a one-thread tier, and any tier whose quota is
    below its thread count, counts the process's CPU time divided by the cores it may use
    (`cores`): what the tier takes when it gets its share. A multi-threaded tier with a
    core per thread counts wall time (its CPU time would not show how well it scales).
    """

    def __init__(self, share: float | None, threads: int) -> None:
        if share is not None and share < threads:
            self.cores: float | None = share
        elif threads == 1:
            self.cores = 1.0
        else:
            self.cores = None

    def now(self) -> float:
        if self.cores is None:
            return time.perf_counter()
        return time.process_time() / self.cores


WALL_CLOCK = Clock(None, 2)  # several threads, no quota: wall time


def fit_line(ns: list[int], times: list[float]) -> LinearFit:
    """Least-squares a + b * n, clipped to a, b >= 0, with the largest relative residual."""
    k = len(ns)
    mean_n, mean_t = sum(ns) / k, sum(times) / k
    var = sum((n - mean_n) ** 2 for n in ns)
    b = (
        sum((n - mean_n) * (t - mean_t) for n, t in zip(ns, times, strict=True)) / var
        if var
        else 0
    )
    b = max(0.0, b)
    a = max(0.0, mean_t - b * mean_n)
    err = max(abs(a + b * n - t) / t for n, t in zip(ns, times, strict=True) if t > 0)
    return LinearFit(a_s=a, b_s=b, rel_err=round(err, 4))


def _mean_time(fn, repeats: int, min_block_s: float = 0.05, clock: Clock = WALL_CLOCK) -> float:
    """Mean seconds of fn() over at least `repeats` calls and `min_block_s` seconds."""
    fn()  # warm-up: allocator, kernel selection
    total, runs = 0.0, 0
    while runs < repeats or total < min_block_s:
        t0 = clock.now()
        fn()
        total += clock.now() - t0
        runs += 1
    return total / runs


def _time_unit(
    unit: torch.nn.Module,
    x: torch.Tensor,
    input_grad: bool,
    repeats: int,
    min_block_s: float,
    clock: Clock = WALL_CLOCK,
):
    """Mean forward and backward seconds of `unit` on the batch `x`, as the runtime runs
    them: autograd on, the input requiring grad unless this is unit 0.

    A mean over at least `repeats` runs and `min_block_s` seconds, not a median of single
    runs: under a CPU quota (cgroup cfs) short runs often fit inside one unthrottled slice,
    so a median would report the host's speed rather than the tier's share of it (and
    the clock may be CPU time over the tier's cores, see `Clock`).
    """

    def once() -> tuple[float, float]:
        for p in unit.parameters():
            p.grad = None
        x_in = x.detach().requires_grad_(input_grad)
        t0 = clock.now()
        h = unit(x_in)
        t1 = clock.now()
        h.backward(torch.ones_like(h))
        return t1 - t0, clock.now() - t1

    once()  # warm-up: allocator, kernel selection
    fwd = bwd = 0.0
    runs = 0
    while runs < repeats or fwd + bwd < min_block_s:
        f, b = once()
        fwd, bwd, runs = fwd + f, bwd + b, runs + 1
    return fwd / runs, bwd / runs


def sample_sizes(batch_size: int) -> list[int]:
    """The n at which units are timed: 1 .. batch_size, a few points in between."""
    ns = {1, max(1, batch_size // 4), max(1, batch_size // 2), batch_size}
    return sorted(ns)


def measure_units(
    spec: ModelSpec,
    batch_size: int,
    repeats: int,
    min_block_s: float = 0.0,
    clock: Clock = WALL_CLOCK,
) -> list[UnitProfile]:
    facts = model_facts(spec)
    units = build_units(spec, range(spec.num_units), seed=0)
    ns = sample_sizes(batch_size)
    gen = torch.Generator().manual_seed(0)
    xs = {n: torch.randn((n, *spec.input_shape), generator=gen) for n in ns}
    inputs = dict(xs)
    out: list[UnitProfile] = []
    for i in range(spec.num_units):
        unit = units[i].train()
        fwd, bwd = [], []
        for n in ns:
            f, b = _time_unit(unit, xs[n], i > 0, repeats, min_block_s, clock)
            fwd.append(f)
            bwd.append(b)
        with torch.no_grad():
            xs = {n: unit(x) for n, x in xs.items()}
        out.append(
            UnitProfile(
                index=i,
                fwd=fit_line(ns, fwd),
                bwd=fit_line(ns, bwd),
                out_bytes=facts.out_bytes[i],
                param_bytes=facts.param_bytes[i],
                saved_bytes=facts.saved_bytes[i],
            )
        )
        log.debug("unit %d: fwd %s, bwd %s", i, out[-1].fwd, out[-1].bwd)
    return calibrate_to_chain(out, units, inputs, repeats, min_block_s, clock)


def _chain_time(
    units: Any, x: torch.Tensor, repeats: int, min_block_s: float, clock: Clock
) -> float:
    """Mean seconds of forward, loss and one backward through every unit, as a tier that
    trains a group end to end runs them."""
    params = [p for i in range(len(units)) for p in units[i].parameters()]
    y = torch.zeros(x.shape[0], dtype=torch.long)

    def once() -> None:
        for p in params:
            p.grad = None
        h = x
        for i in range(len(units)):
            h = units[i](h)
        torch.nn.functional.cross_entropy(h.reshape(h.shape[0], -1), y).backward()

    return _mean_time(once, repeats, min_block_s, clock)


def calibrate_to_chain(
    profiles: list[UnitProfile],
    units: Any,
    inputs: dict[int, torch.Tensor],
    repeats: int,
    min_block_s: float,
    clock: Clock,
) -> list[UnitProfile]:
    """Scale the units' fits so that their sum equals the whole model trained in one graph.

    Timed one by one, units cost more than in one graph (an autograd call, a gradient of
    ones and a timer read per unit), and a least-squares line through n = 1 .. B bends
    above a convolution's measured time at n = B: on small_cnn at B = 32 the fits summed
    to 0.028 s where the model took 0.018 s. The model in one graph is timed at B/4 and
    B; the fixed parts (a) and the per-sample parts (b) of every fit get one factor each,
    so that the summed fits pass through both points (B/4 and B: most groups are that
    large; smaller ones are predicted less well).
    """
    ns = sorted(inputs)
    n1, n2 = (ns[1], ns[-1]) if len(ns) > 1 else (ns[-1], ns[-1])
    repeats, min_block_s = max(repeats, CHAIN_REPEATS), max(min_block_s, CHAIN_BLOCK_S)
    t1 = _chain_time(units, inputs[n1], repeats, min_block_s, clock)
    t2 = _chain_time(units, inputs[n2], repeats, min_block_s, clock) if n2 != n1 else t1
    a_sum = sum(p.fwd.a_s + p.bwd.a_s for p in profiles)
    b_sum = sum(p.fwd.b_s + p.bwd.b_s for p in profiles)
    if b_sum <= 0 or n1 == n2:
        ra = rb = t2 / (a_sum + b_sum * n2) if a_sum + b_sum * n2 > 0 else 1.0
    else:
        rb = max(0.0, (t2 - t1) / (b_sum * (n2 - n1)))
        rest = t2 - rb * b_sum * n2
        ra = rest / a_sum if a_sum > 0 and rest > 0 else 0.0
        if a_sum <= 0 or rest <= 0:  # the line through both points has no fixed part
            rb = t2 / (b_sum * n2)
    log.debug("units scaled to the chained model: fixed x%.3f, per sample x%.3f", ra, rb)

    def scaled(fit: LinearFit) -> LinearFit:
        return LinearFit(a_s=fit.a_s * ra, b_s=fit.b_s * rb, rel_err=fit.rel_err)

    return [p.model_copy(update={"fwd": scaled(p.fwd), "bwd": scaled(p.bwd)}) for p in profiles]


def optimizer_s_per_byte(repeats: int, clock: Clock = WALL_CLOCK) -> float:
    """SGD with momentum over a 4 MiB parameter, per parameter byte."""
    p = torch.nn.Parameter(torch.zeros(BYTES_PROBE // 4))
    p.grad = torch.ones_like(p)
    opt = torch.optim.SGD([p], lr=0.01, momentum=0.9)
    return _mean_time(opt.step, repeats, clock=clock) / BYTES_PROBE


def copy_s_per_byte(repeats: int, clock: Clock = WALL_CLOCK) -> float:
    """An in-place add of a 4 MiB tensor (summing replicas, loading weights), per byte."""
    a, b = torch.zeros(BYTES_PROBE // 4), torch.ones(BYTES_PROBE // 4)
    return _mean_time(lambda: a.add_(b), repeats, clock=clock) / BYTES_PROBE


def message_overhead_s(pings: int = MESSAGE_PINGS, clock: Clock = WALL_CLOCK) -> float:
    """Half a round trip of a small msgpack message between a ZeroMQ DEALER and ROUTER on
    TCP loopback in this process: the fixed cost the runtime pays per message, on
    `clock` (a quarter-core board pays four times what the host's full speed pays, as
    for its compute).

    The wire layer sits above profiling, so this uses pyzmq and msgpack directly in the
    way wire/transport.py does (a header frame plus a tensor frame, copy=False).
    """
    import msgpack
    import zmq

    ctx = zmq.Context.instance()
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    try:
        port = router.bind_to_random_port("tcp://127.0.0.1")
        dealer.connect(f"tcp://127.0.0.1:{port}")
        payload = torch.zeros(64)
        header = {"v": 1, "type": "fwd", "step": 0, "gid": 0, "pad": "x" * 64}

        def ping() -> None:
            dealer.send_multipart([msgpack.packb(header), payload.numpy()], copy=False)
            peer, head, body = router.recv_multipart(copy=False)
            msgpack.unpackb(head.bytes)
            np.frombuffer(body.buffer, dtype=np.float32)
            router.send_multipart([peer, msgpack.packb(header), payload.numpy()], copy=False)
            head, body = dealer.recv_multipart(copy=False)
            msgpack.unpackb(head.bytes)
            np.frombuffer(body.buffer, dtype=np.float32)

        for _ in range(20):
            ping()
        t0 = clock.now()
        for _ in range(pings):
            ping()
        return (clock.now() - t0) / pings / 2
    finally:
        dealer.close(linger=0)
        router.close(linger=0)


def wire_s_per_byte(
    nbytes: int = WIRE_PROBE_BYTES, sends: int = WIRE_SENDS, clock: Clock | None = None
) -> float:
    """CPU seconds per byte of a large message, one way, sender and receiver together, as
    the runtime's links carry it: a ZeroMQ DEALER to a ROUTER on TCP loopback encrypted with
    CurveZMQ (the runtime's default), a copy of the tensor sent (the runtime sends copies),
    less a small message's cost (message_overhead_s has that).

    Process CPU time, not wall time: ZeroMQ's I/O thread encrypts and decrypts beside the
    sending thread; divided by the cores `clock` says the tier may use.
    """
    cores = clock.cores if clock is not None and clock.cores is not None else 1.0
    import zmq

    if not zmq.has("curve"):
        log.warning("this libzmq has no CurveZMQ: wire cost measured without encryption")
    ctx = zmq.Context()
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    try:
        if zmq.has("curve"):
            server_pub, server_sec = zmq.curve_keypair()
            client_pub, client_sec = zmq.curve_keypair()
            router.curve_server = True
            router.curve_secretkey, router.curve_publickey = server_sec, server_pub
            dealer.curve_serverkey = server_pub
            dealer.curve_publickey, dealer.curve_secretkey = client_pub, client_sec
        port = router.bind_to_random_port("tcp://127.0.0.1")
        dealer.connect(f"tcp://127.0.0.1:{port}")
        big, small = torch.zeros(nbytes // 4), torch.zeros(16)

        def one_way(t: torch.Tensor) -> float:
            t0 = time.process_time()
            for _ in range(sends):
                dealer.send_multipart([b"h" * 64, t.clone().numpy()], copy=False)
                _, _, body = router.recv_multipart(copy=False)
                torch.from_numpy(np.frombuffer(body.buffer, dtype=np.float32))
            return (time.process_time() - t0) / sends

        one_way(small), one_way(big)  # warm-up: the handshake, buffers
        return max(0.0, one_way(big) - one_way(small)) / nbytes / cores
    finally:
        dealer.close(linger=0)
        router.close(linger=0)
        ctx.term()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_budget_bytes() -> int:
    """Available memory (MemAvailable), or the cgroup's limit when that is lower."""
    budget = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    budget = int(line.split()[1]) * 1024
    except OSError:
        budget = 1 << 32
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            budget = min(budget, int(text))
    return budget


def busy_host_warning(threads: int, load: float, cores: int) -> str | None:
    """Why a profile taken with `threads` torch threads on a host this busy is too slow,
    or None. Threads of one operator wait for each other: on a 2-core host with other work
    running, a 2-thread profile came out 19x slower than the tier really trains."""
    if threads <= 1 or load + threads <= cores + 0.5:
        return None
    return (
        f"profiling with {threads} torch threads while this host's load average is "
        f"{load:.1f} on {cores} cores: threads that wait on each other make the profile "
        f"too slow; profile with --threads 1, or when the host is quiet"
    )


def measure_profile(
    spec: ModelSpec,
    batch_size: int,
    threads: int | None = None,
    repeats: int = FULL_REPEATS,
    name: str | None = None,
    memory_budget: int | None = None,
    message_s: float | None = None,
    min_block_s: float = FULL_BLOCK_S,
) -> TierProfile:
    """Profile this host for `spec`: every unit at several n, plus the fixed costs."""
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    if threads:
        torch.set_num_threads(threads)
    warning = busy_host_warning(torch.get_num_threads(), os.getloadavg()[0], os.cpu_count() or 1)
    if warning:
        log.warning(warning)
    t0 = time.perf_counter()
    clock = Clock(cpu_share(), torch.get_num_threads())
    units = measure_units(spec, batch_size, repeats, min_block_s, clock)
    optimizer_s = optimizer_s_per_byte(repeats, clock)
    copy_s = copy_s_per_byte(repeats, clock)
    msg_s = message_overhead_s(clock=clock) if message_s is None else message_s
    wire_s = wire_s_per_byte(clock=clock)
    host = socket.gethostname()
    profile = TierProfile(
        name=name or f"{host}-{spec.name}",
        description=f"{spec.name} on {host}, {torch.get_num_threads()} torch thread(s)",
        provenance=Provenance(
            kind="measured",
            method=(
                f"hiertrain-edge profile: mean of >= {repeats} runs and >= {min_block_s} s per "
                f"unit and n in "
                f"{sample_sizes(batch_size)}, autograd on, least-squares a + b*n; "
                + (
                    f"CPU time / {clock.cores:g} core(s); "
                    if clock.cores is not None
                    else "wall time; "
                )
                + f"torch {torch.__version__}, pid {os.getpid()}"
            ),
            host=host,
            date=today(),
        ),
        cpu_model=cpu_model(),
        threads=torch.get_num_threads(),
        memory_budget_bytes=memory_budget or memory_budget_bytes(),
        message_overhead_s=msg_s,
        optimizer_s_per_byte=optimizer_s,
        copy_s_per_byte=copy_s,
        wire_s_per_byte=wire_s,
        model=spec.name,
        batch_size=batch_size,
        units=units,
    )
    log.info(
        "profiled %s for %s at n up to %d in %.1f s",
        host,
        spec.name,
        batch_size,
        time.perf_counter() - t0,
    )
    return profile


def quick_profile(
    spec: ModelSpec, batch_size: int, threads: int | None = None, name: str | None = None
) -> TierProfile:
    """A profile in seconds, for a tier that joins a job: fewer repeats, same fits."""
    return measure_profile(
        spec, batch_size, threads, repeats=QUICK_REPEATS, name=name, min_block_s=QUICK_BLOCK_S
    )
