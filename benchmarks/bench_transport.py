"""Transport figures: codec + ZeroMQ Link/Listener against raw pyzmq, and goodput on a shaped link.

    python benchmarks/bench_transport.py [--quick] [--trials N] [--json FILE] [--no-shaped]

1. Throughput on loopback TCP, 4 KiB to 64 MiB: a float32 tensor sent as a `bwd` message
   through our Link -> Listener (encode, send, receive, decode, schema check) against raw
   pyzmq DEALER -> ROUTER sending a bytes buffer of the same size. Both zero-copy the same
   way (pyzmq copies frames under 64 KiB, sends larger ones without a copy, receives
   without a copy), both with the receiver in the main thread and the sender in a second
   thread of the same process. Trials alternate raw and ours, so drift in the machine's
   load hits both; the ratio is the median over trials of ours / raw of the same pair, with
   the lowest and highest pair beside it. The target is >= 0.9 for 1 MiB and more.
2. Per-message overhead: a ping-pong of a 4 KiB message, ours against raw, in alternating
   trials; half the round-trip difference of a pair is the overhead per message (target:
   <= 50 us above raw). The median over pairs is the figure; the lowest and highest pair
   show the spread, and the difference of the best trials what a quiet machine would see.
3. Goodput (needs root): the device sends tensors of >= 1 MiB to the edge over the
   testbed's tbf-shaped veth; each transfer is timed to the edge's answer. Goodput as a
   fraction of the shaped rate (target: >= 0.8).

Prints Markdown tables; no pass/fail, these are measurements.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch
import zmq

from hiertrain_edge.wire.transport import Link, Listener

KIB = 1024
MIB = 1024 * KIB
SIZES_BYTES = [4 * KIB, 64 * KIB, MIB, 4 * MIB, 16 * MIB, 64 * MIB]
QUICK_SIZES_BYTES = [4 * KIB, MIB, 16 * MIB]
BUDGET_BYTES = 256 * MIB  # per trial, so a trial takes roughly the same time at every size
MIN_MESSAGES, MAX_MESSAGES = 8, 2000
TRIALS = 5
QUICK_TRIALS = 2
PINGS = 1000  # round trips per trial
PING_BYTES = 4 * KIB
SHAPED_RATES_MBPS = [20.0, 100.0]
SHAPED_SIZES_BYTES = [MIB, 4 * MIB, 16 * MIB]
SHAPED_REPEATS = 3
SHAPED_PORT = 47990
RECV_TIMEOUT_S = 120.0


def _security(insecure: bool) -> dict[str, Any]:
    """Keyword arguments that let a Link/Listener run plaintext off loopback, where the
    transport has a security layer (plaintext is what raw pyzmq is measured with)."""
    try:
        from hiertrain_edge.wire.security import Security
    except ImportError:
        return {}
    return {"security": Security.from_files(insecure=insecure)}


def _curve(keys: Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(listener, link) keyword arguments: CurveZMQ with a key pair each in `keys`,
    made on first use; plaintext when `keys` is None."""
    if keys is None:
        return _security(True), _security(True)
    from hiertrain_edge.wire.security import Security, generate_keypair

    if not (keys / "server.key_secret").exists():
        generate_keypair(keys, "server")
        generate_keypair(keys, "client")
    server = Security.from_files(
        secret_key=keys / "server.key_secret", allow=[keys / "client.key"]
    )
    client = Security.from_files(
        secret_key=keys / "client.key_secret", server_key=keys / "server.key"
    )
    return {"security": server}, {"security": client}


def _bwd(step: int, t: torch.Tensor) -> dict[str, Any]:
    return {"type": "bwd", "step": step, "gid": 0, "grad": t, "loss": 0.0}


def _tensor(size: int) -> torch.Tensor:
    return torch.ones(size // 4, dtype=torch.float32)


def _bound(listener: Listener) -> str:
    """The endpoint a listener bound to a free port ("*") got. Fixed ports clashed: they lie
    in the kernel's range for outgoing ports, where any connection on the host may hold one."""
    return listener.sock.getsockopt(zmq.LAST_ENDPOINT).decode()


def _count(size: int) -> int:
    return max(MIN_MESSAGES, min(MAX_MESSAGES, BUDGET_BYTES // size))


# --- 1. throughput ---------------------------------------------------------------------------


def _raw_trial(ctx: zmq.Context, size: int, n: int) -> tuple[float, float]:
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    payload = bytes(size)
    dealer.send(b"hello")
    router.recv_multipart()

    def send() -> None:
        for _ in range(n):
            dealer.send(payload, copy=False)

    started, cpu = time.perf_counter(), time.process_time()
    sender = threading.Thread(target=send)
    sender.start()
    for _ in range(n):
        router.recv_multipart(copy=False)
    elapsed = time.perf_counter() - started
    sender.join()
    cpu = time.process_time() - cpu
    dealer.close(linger=0)
    router.close(linger=0)
    return n * size / elapsed, cpu / n


def _ours_trial(
    ctx: zmq.Context, size: int, n: int, keys: Path | None = None
) -> tuple[float, float]:
    server, client = _curve(keys) if keys else (_security(False), _security(False))
    listener = Listener(ctx, "tcp://127.0.0.1:*", **server)
    link = Link(ctx, _bound(listener), **client)
    t = _tensor(size)
    link.send({"type": "ready", "step": 0})
    listener.recv(RECV_TIMEOUT_S)

    def send() -> None:
        for i in range(n):
            link.send(_bwd(i, t))

    started, cpu = time.perf_counter(), time.process_time()
    sender = threading.Thread(target=send)
    sender.start()
    for _ in range(n):
        _, msg = listener.recv(RECV_TIMEOUT_S)
    elapsed = time.perf_counter() - started
    sender.join()
    cpu = time.process_time() - cpu
    assert msg["grad"].numel() * 4 == size
    link.close()
    listener.close()
    return n * size / elapsed, cpu / n


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def throughput(sizes: list[int], trials: int, keys: Path | None) -> list[dict[str, Any]]:
    """Per size: both throughputs (median over trials), ours / raw per alternating pair of
    trials (median, lowest, highest), and the process CPU time per message (both ends,
    ZeroMQ's I/O thread included), which a busy machine disturbs less than wall time."""
    ctx = zmq.Context()
    rows = []
    for size in sizes:
        n = _count(size)
        raw, ours = [], []
        for _ in range(trials):  # alternating, so drift in the machine's load hits both
            raw.append(_raw_trial(ctx, size, n))
            ours.append(_ours_trial(ctx, size, n))
        curve = None
        if keys is not None:  # one trial: encryption dominates, noise matters less
            curve = _ours_trial(ctx, size, n, keys)[0] / 1e6
        ratios = [b[0] / a[0] for a, b in zip(raw, ours, strict=True)]
        rows.append(
            {
                "size_bytes": size,
                "messages": n,
                "trials": trials,
                "raw_MBps": statistics.median(x[0] for x in raw) / 1e6,
                "ours_MBps": statistics.median(x[0] for x in ours) / 1e6,
                "ratio": _spread(ratios),
                "raw_cpu_us_per_msg": statistics.median(x[1] for x in raw) * 1e6,
                "ours_cpu_us_per_msg": statistics.median(x[1] for x in ours) * 1e6,
                "curve_MBps": curve,
            }
        )
    ctx.term()
    return rows


# --- 2. per-message overhead -----------------------------------------------------------------


def _pingpong_raw(ctx: zmq.Context, n: int) -> tuple[float, float]:
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    payload = bytes(PING_BYTES)

    def echo() -> None:
        for _ in range(n + 1):
            frames = router.recv_multipart(copy=False)
            router.send_multipart(frames, copy=False)

    server = threading.Thread(target=echo)
    server.start()
    dealer.send(payload)
    dealer.recv(copy=False)
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        dealer.send(payload, copy=False)
        dealer.recv(copy=False)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    server.join()
    dealer.close(linger=0)
    router.close(linger=0)
    return elapsed / n, cpu / n


def _pingpong_ours(ctx: zmq.Context, n: int) -> tuple[float, float]:
    listener = Listener(ctx, "tcp://127.0.0.1:*", **_security(False))
    link = Link(ctx, _bound(listener), **_security(False))
    t = _tensor(PING_BYTES)

    def echo() -> None:
        for _ in range(n + 1):
            peer, msg = listener.recv(RECV_TIMEOUT_S)
            listener.send(peer, msg)

    server = threading.Thread(target=echo)
    server.start()
    link.send(_bwd(0, t))
    link.recv(RECV_TIMEOUT_S)
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        link.send(_bwd(i, t))
        link.recv(RECV_TIMEOUT_S)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    server.join()
    link.close()
    listener.close()
    return elapsed / n, cpu / n


def overhead(pings: int, trials: int) -> dict[str, Any]:
    """Round trips of both, in alternating trials; per pair, half the difference of the
    round trips is our overhead per message (a round trip is two messages, each encoded,
    sent, received, decoded and checked once)."""
    ctx = zmq.Context()
    raw, ours = [], []
    for _ in range(trials):
        raw.append(_pingpong_raw(ctx, pings))
        ours.append(_pingpong_ours(ctx, pings))
    ctx.term()
    wall = [(b[0] - a[0]) / 2 * 1e6 for a, b in zip(raw, ours, strict=True)]
    cpu = [(b[1] - a[1]) / 2 * 1e6 for a, b in zip(raw, ours, strict=True)]
    return {
        "trials": trials,
        "round_trips": pings,
        "raw_rtt_us": statistics.median(x[0] for x in raw) * 1e6,
        "ours_rtt_us": statistics.median(x[0] for x in ours) * 1e6,
        "overhead_per_message_us": _spread(wall),
        "best_overhead_per_message_us": (min(x[0] for x in ours) - min(x[0] for x in raw))
        / 2
        * 1e6,
        "raw_cpu_us_per_rtt": statistics.median(x[1] for x in raw) * 1e6,
        "ours_cpu_us_per_rtt": statistics.median(x[1] for x in ours) * 1e6,
        "cpu_overhead_per_message_us": _spread(cpu),
    }


# --- 3. goodput on a shaped link -------------------------------------------------------------


def _sink(addr: str, count: int, keys: Path | None) -> None:
    """Edge side: answer every message with a `ready` carrying its step."""
    ctx = zmq.Context()
    listener = Listener(ctx, f"tcp://{addr}:{SHAPED_PORT}", **_curve(keys)[0])
    print("ready", flush=True)
    for _ in range(count):
        peer, msg = listener.recv(RECV_TIMEOUT_S)
        listener.send(peer, {"type": "ready", "step": msg["step"]})
    listener.close()
    ctx.term()


def _source(addr: str, sizes: list[int], repeats: int, keys: Path | None) -> None:
    """Device side: time each transfer to the edge's answer; print JSON seconds."""
    ctx = zmq.Context()
    link = Link(ctx, f"tcp://{addr}:{SHAPED_PORT}", **_curve(keys)[1])
    step = 0
    out: dict[str, list[float]] = {}
    for size in [sizes[0], *sizes]:  # the first is a warm-up (connection, slow start)
        t = _tensor(size)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            link.send(_bwd(step, t))
            assert link.recv(RECV_TIMEOUT_S)["step"] == step
            times.append(time.perf_counter() - started)
            step += 1
        out[str(size)] = times
    print(json.dumps(out), flush=True)
    link.close()
    ctx.term()


def goodput(
    rates: list[float], sizes: list[int], repeats: int, keys: Path | None
) -> list[dict[str, Any]]:
    """Median seconds per transfer to the edge's answer, plaintext and (with `keys`)
    CurveZMQ, at every shaped rate."""
    from hiertrain_edge.emulate.netns import LinkShape, Testbed

    me = [sys.executable, str(Path(__file__).resolve())]
    rows = []
    with Testbed({"de": LinkShape(rates[0], rates[0])}) as tb:
        addr = tb.address("edge")
        for rate in rates:
            tb.set_rate("de", "up", rate)
            tb.set_rate("de", "down", rate)
            for mode in ["plaintext", "curve"] if keys else ["plaintext"]:
                key_args = ["--keys", str(keys)] if mode == "curve" else []
                count = str((len(sizes) + 1) * repeats)
                sink = tb.popen(
                    "edge",
                    [*me, "--role", "sink", "--addr", addr, "--count", count, *key_args],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                assert sink.stdout.readline().strip() == "ready"
                sizes_arg = ",".join(map(str, sizes))
                src = tb.run(
                    "device",
                    [*me, "--role", "source", "--addr", addr, "--sizes", sizes_arg]
                    + ["--repeats", str(repeats), *key_args],
                    timeout_s=600,
                )
                sink.wait(timeout=30)
                times = json.loads(src.strip().splitlines()[-1])
                for size in sizes:
                    secs = statistics.median(times[str(size)])
                    mbps = size * 8 / secs / 1e6
                    rows.append(
                        {
                            "rate_mbps": rate,
                            "mode": mode,
                            "size_bytes": size,
                            "seconds": secs,
                            "goodput_mbps": mbps,
                            "fraction": mbps / rate,
                        }
                    )
    return rows


# --- report ----------------------------------------------------------------------------------


def _size(n: int) -> str:
    return f"{n // MIB} MiB" if n >= MIB else f"{n // KIB} KiB"


def markdown(results: dict[str, Any]) -> str:
    load = ", ".join(f"{x:.1f}" for x in results["load_average"])
    lines = [f"Machine: {results['machine']}; load average at start {load}.", ""]
    if "throughput" in results:
        trials = results["throughput"][0]["trials"]
        lines += [
            "### Codec + ZeroMQ transport vs raw pyzmq (loopback TCP)",
            "",
            f"Medians of {trials} alternating trials; the ratio is ours / raw per pair of "
            "trials, its median and (lowest-highest) pair.",
            "",
            "| size | messages | raw pyzmq MB/s | Link/Listener MB/s | ratio (spread) | "
            "CPU us/msg raw | CPU us/msg ours | with CurveZMQ MB/s |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in results["throughput"]:
            q = r["ratio"]
            lines.append(
                f"| {_size(r['size_bytes'])} | {r['messages']} | {r['raw_MBps']:.0f} | "
                f"{r['ours_MBps']:.0f} | {q['median']:.2f} ({q['min']:.2f}-{q['max']:.2f}) | "
                f"{r['raw_cpu_us_per_msg']:.0f} | {r['ours_cpu_us_per_msg']:.0f} | "
                + ("n/a |" if r["curve_MBps"] is None else f"{r['curve_MBps']:.0f} |")
            )
        o = results["overhead"]
        w, c = o["overhead_per_message_us"], o["cpu_overhead_per_message_us"]
        lines += [
            "",
            f"Per-message overhead ({_size(PING_BYTES)} ping-pong, {o['trials']} alternating "
            f"trials of {o['round_trips']} round trips): raw round trip {o['raw_rtt_us']:.0f} "
            f"us, ours {o['ours_rtt_us']:.0f} us (medians); overhead {w['median']:.1f} us "
            f"per message above raw (pairs {w['min']:.1f} to {w['max']:.1f}; best trials "
            f"{o['best_overhead_per_message_us']:.1f}); CPU time {o['raw_cpu_us_per_rtt']:.0f} "
            f"us vs {o['ours_cpu_us_per_rtt']:.0f} us per round trip, {c['median']:.1f} us per "
            f"message above raw (pairs {c['min']:.1f} to {c['max']:.1f}).",
        ]
    if results.get("goodput"):
        lines += [
            "",
            "### Goodput on a tbf-shaped veth (device -> edge namespaces)",
            "",
            "| shaped rate | link | size | seconds | goodput Mbit/s | fraction |",
            "|---:|---|---:|---:|---:|---:|",
        ]
        for r in results["goodput"]:
            lines.append(
                f"| {r['rate_mbps']:g} Mbit/s | {r['mode']} | {_size(r['size_bytes'])} | "
                f"{r['seconds']:.3f} | "
                f"{r['goodput_mbps']:.1f} | {r['fraction']:.2f} |"
            )
    elif results.get("goodput_skipped"):
        lines += ["", f"Goodput: skipped ({results['goodput_skipped']})."]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer sizes and trials")
    ap.add_argument("--trials", type=int, help=f"alternating trials per figure (default {TRIALS})")
    ap.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    ap.add_argument("--no-shaped", action="store_true", help="skip the goodput part")
    ap.add_argument("--only-shaped", action="store_true", help="only the goodput part")
    ap.add_argument("--role", choices=["sink", "source"], help=argparse.SUPPRESS)
    ap.add_argument("--addr", help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--sizes", help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--keys", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.role == "sink":
        _sink(args.addr, args.count, Path(args.keys) if args.keys else None)
        return 0
    if args.role == "source":
        sizes = [int(s) for s in args.sizes.split(",")]
        _source(args.addr, sizes, args.repeats, Path(args.keys) if args.keys else None)
        return 0

    trials = args.trials or (QUICK_TRIALS if args.quick else TRIALS)
    keys = None
    if _security(True):  # the transport has CurveZMQ: measure it too, with throwaway keys
        keys = Path(tempfile.mkdtemp(prefix="bench-transport-keys-"))
    results: dict[str, Any] = {
        "machine": f"{os.uname().machine}, {os.cpu_count()} CPUs, kernel {os.uname().release}",
        "load_average": os.getloadavg(),
    }
    if not args.only_shaped:
        sizes = QUICK_SIZES_BYTES if args.quick else SIZES_BYTES
        results["throughput"] = throughput(sizes, trials, keys)
        results["overhead"] = overhead(PINGS // (4 if args.quick else 1), trials)
    if args.no_shaped:
        results["goodput_skipped"] = "--no-shaped"
    elif os.geteuid() != 0:
        results["goodput_skipped"] = "needs root for network namespaces"
    else:
        sizes = SHAPED_SIZES_BYTES[:2] if args.quick else SHAPED_SIZES_BYTES
        repeats = 1 if args.quick else SHAPED_REPEATS
        results["goodput"] = goodput(SHAPED_RATES_MBPS, sizes, repeats, keys)
    print(markdown(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
