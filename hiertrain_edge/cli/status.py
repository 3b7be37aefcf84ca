"""`hiertrain-edge status [EDGE_HOST]`: the edge's live view as a table, or as JSON for scripts."""

from __future__ import annotations

import argparse
import datetime
import json
import time
from typing import Any

from hiertrain_edge.cli.keys import add_security_flags, security_from_args
from hiertrain_edge.errors import PeerLostError


def _num(value: Any, fmt: str, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{fmt}}{unit}"


def _clock(t: float | None) -> str:
    if t is None:
        return "n/a"
    return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _ago(t: float | None, now: float) -> str:
    if t is None:
        return ""
    s = max(0.0, now - t)
    return f"{s:.0f} s ago" if s < 120 else f"{s / 60:.0f} min ago"


def render_status(st: dict[str, Any], where: str) -> str:
    """The status as aligned `name  value` rows, then the boards and the warnings."""
    now = st.get("time") or time.time()
    rows: list[tuple[str, str]] = [("edge", f"{where} (up {st['up_s']:.0f} s)")]
    job = st.get("job")
    if job:
        rows.append(
            (
                "job",
                f"{job['id']} {job.get('model', '')}, {job.get('steps', '?')} steps, "
                f"{job.get('state', 'running')}",
            )
        )
        step, total = st.get("step"), job.get("steps")
        shown = "n/a" if step is None else f"{step + 1}/{total}"
        rows.append(("step", shown))
    else:
        rows.append(("job", "none (waiting for a board)"))
    rows.append(("loss", _num(st.get("loss"), ".4f")))
    rows.append(("steps/s", _num(st.get("steps_per_s"), ".2f")))
    rows.append(
        (
            "step time",
            f"measured {_num(st.get('measured_s'), '.3f', ' s')} (board), "
            f"{_num(st.get('edge_step_s'), '.3f', ' s')} (edge); "
            f"predicted {_num(st.get('predicted_s'), '.3f', ' s')}",
        )
    )
    sched = st.get("schedule")
    if sched:
        rows.append(
            ("schedule", f"{sched['id']}  ({st.get('schedule_changes', 0)} switches so far)")
        )
        for i, g in enumerate(sched["groups"]):
            c1, c2 = g["cuts"]
            rows.append(
                (f"  group {i}", f"n={g['n']:<4d} cuts ({c1}, {c2})  loss on the {g['loss_tier']}")
            )
    bw = st.get("bandwidth_mbps") or {}
    rows.append(
        (
            "bandwidth",
            f"device<->edge {_num(bw.get('device_edge'), '.1f', ' Mbit/s')}, "
            f"edge<->cloud {_num(bw.get('edge_cloud'), '.1f', ' Mbit/s')}",
        )
    )
    cloud = st.get("cloud") or {}
    reason = f" ({cloud['reason']})" if cloud.get("reason") else ""
    if cloud.get("address"):
        rows.append(("cloud", f"{cloud['address']}: {cloud.get('state', 'n/a')}{reason}"))
    else:
        rows.append(("cloud", "none (this edge runs without --cloud)"))
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]

    lines.append("")
    boards = st.get("boards") or []
    if boards:
        lines.append(f"{'board':<12} {'address':<24} since")
        for b in boards:
            since = f"{_clock(b.get('since'))} ({_ago(b.get('since'), now)})"
            lines.append(f"{b['id']:<12} {b.get('address') or 'n/a':<24} {since}")
    else:
        lines.append("no board joined")

    warnings = st.get("warnings") or []
    lines.append("")
    lines.append(f"last warnings ({len(warnings)}):" if warnings else "no warnings")
    for w in warnings:
        lines.append(f"  {_clock(w['time'])} {w['level']} {w['logger']}: {w['message']}")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    from hiertrain_edge.runtime.status import query_status
    from hiertrain_edge.wire.transport import STATUS_PORT, endpoint

    address = endpoint(args.edge, STATUS_PORT)
    try:
        security = security_from_args(args, server=address, server_role="edge")
        st = query_status(address, args.timeout, configure=security)
    except PeerLostError as exc:
        raise PeerLostError(
            f"{exc}; is `hiertrain-edge serve` running there with its status port "
            f"(--status-listen, default port {STATUS_PORT})?"
        ) from exc
    if args.json:
        print(json.dumps(st, indent=1))
    else:
        print(render_status(st, address))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show what an edge is doing: boards, step, schedule, links")
    p.add_argument(
        "edge",
        metavar="EDGE_HOST",
        nargs="?",
        default="127.0.0.1",
        help="edge host[:port] (default 127.0.0.1, port 47811)",
    )
    p.add_argument("--json", action="store_true", help="print the raw status as JSON")
    p.add_argument(
        "--timeout", type=float, default=5.0, metavar="S", help="seconds to wait (default 5)"
    )
    add_security_flags(p, admits=None, connects="edge")
    p.set_defaults(func=cmd_status, tier="status")


def add_observe_options(
    p: argparse.ArgumentParser,
    default_status: str | None = None,
    status_default_text: str = "the --listen host, port 47811",
) -> None:
    """`--status-listen` and `--metrics-port` for the tiers that serve them."""
    p.add_argument(
        "--status-listen",
        metavar="ENDPOINT",
        default=default_status,
        help="host[:port] or endpoint for `hiertrain-edge status` queries (default: "
        f"{status_default_text}; 'none' turns the status port off)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on http://0.0.0.0:PORT/metrics (default: off)",
    )


def status_listen(value: str | None, listen: str) -> str | None:
    """The --status-listen value as an endpoint (None: turned off); by default the host of
    the board endpoint `listen` on the status port."""
    from hiertrain_edge.wire.transport import STATUS_PORT, endpoint

    if value is None:
        host = listen.split("://", 1)[-1].rsplit(":", 1)[0]
        return f"tcp://{host}:{STATUS_PORT}"
    if value.lower() == "none":
        return None
    return endpoint(value, STATUS_PORT)
