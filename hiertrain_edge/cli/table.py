"""`hiertrain-edge table build|show`: make a schedule table offline, print it, draw its map."""

from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path

from hiertrain_edge.cli.common import add_checkpoints, checkpoints, describe_checkpoints
from hiertrain_edge.errors import ConfigError

FIGURE_SIZE_IN = (10.0, 7.5)
FIGURE_DPI = 100
DOWN_COLOR = "#ffffff"  # slots where no schedule fits


def cmd_build(args: argparse.Namespace) -> int:
    from hiertrain_edge.models import get_model
    from hiertrain_edge.planning.table import Grid, build_table
    from hiertrain_edge.profiling.measure import model_facts
    from hiertrain_edge.profiling.profile import load_profile

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    for flag, value in (
        ("--latency-de-ms", args.latency_de_ms),
        ("--latency-ec-ms", args.latency_ec_ms),
    ):
        if not value >= 0:
            raise ConfigError(f"{flag} must be >= 0 ms, got {value}")
    spec = get_model(args.model)
    profiles = {t: load_profile(getattr(args, t)) for t in ("device", "edge", "cloud")}
    grid = Grid.spanning(args.min_mbps, args.max_mbps, args.points_per_decade)
    facts = model_facts(spec)
    # The planner logs every solve at INFO; a table solves dozens of times.
    planner_log = logging.getLogger("hiertrain_edge.planning.planner")
    if planner_log.getEffectiveLevel() == logging.INFO:
        planner_log.setLevel(logging.WARNING)
    t0 = time.perf_counter()
    table = build_table(
        facts,
        profiles,
        args.batch_size,
        latency_s=(args.latency_de_ms / 1000, args.latency_ec_ms / 1000),
        grid=grid,
        seed_stride=args.seed_stride,
        max_refine_calls=args.refine_calls,
        checkpoints=checkpoints(args),
    )
    build_s = time.perf_counter() - t0
    path = table.save(args.out)
    print(
        f"built table for {spec.name} at B={args.batch_size}: {len(table.schedules)} schedules "
        f"over {grid.size}x{grid.size} cells, {table.build['planner_calls']} planner calls, "
        f"{build_s:.2f} s; wrote {path} ({path.stat().st_size} bytes, "
        f"sha256 {table.content_hash[:12]})"
    )
    return 0


def _fmt_ms(t: float) -> str:
    return f"{t * 1000:.1f} ms" if math.isfinite(t) else "infeasible"


def _cuts(schedule, num_units: int) -> str:
    parts = []
    for g in schedule.groups:
        spans = [g.span(t, num_units) for t in ("device", "edge", "cloud")]
        tiers = " ".join(
            f"{t[0].upper()}[{a},{b})"
            for t, (a, b) in zip(("device", "edge", "cloud"), spans, strict=True)
            if b > a
        )
        parts.append(f"n={g.n} cuts ({g.c1},{g.c2}) {tiers}")
    return "; ".join(parts)


def summary(table) -> str:
    """The text `table show` prints."""
    g = table.grid
    n = g.size
    lines = [
        f"schedule table {table.content_hash[:12]} (format version 1)",
        f"model {table.model} ({table.num_units} units), batch size {table.batch_size}",
        "profiles: " + ", ".join(f"{t} {h[:12]}" for t, h in table.profiles.items()),
        f"grid: {n} x {n} cells, {g.min_mbps:g} .. {g.max_mbps:g} Mbit/s, "
        f"{g.points_per_decade} per decade; latency device<->edge "
        f"{table.latency_s[0] * 1000:g} ms, edge<->cloud {table.latency_s[1] * 1000:g} ms",
        f"built with {table.build.get('planner_calls', '?')} planner calls "
        f"({table.build.get('seed_calls', '?')} seeds, {table.build.get('refine_calls', '?')} "
        f"on boundaries), {table.build.get('candidates', '?')} candidate schedules",
        describe_checkpoints(table.build.get("checkpoints")),
        "",
        f"{len(table.schedules)} distinct schedules:",
    ]
    usage = table.usage()
    for k, s in enumerate(table.schedules):
        times = [table.slot_time_s[i] for i in range(table.num_slots) if table.slot_index[i] == k]
        span = f"{_fmt_ms(min(times))} .. {_fmt_ms(max(times))}" if times else "-"
        lines.append(f"  [{k}] {s.describe():28s} wins {usage[k]:5d} slots, {span}")
        lines.append(f"      {_cuts(s, table.num_units)}")
    lines.append("")
    lines.append("cloud unreachable (by device<->edge bandwidth):")
    start = 0
    for i in range(1, n + 1):
        here = table.slot_index[table.cloud_down_slot(start)]
        if i == n or table.slot_index[table.cloud_down_slot(i)] != here:
            lines.append(
                f"  {g.value(start):9.3g} .. {g.value(i - 1):9.3g} Mbit/s: {_label(table, here)}"
            )
            start = i
    e = table.edge_down_slot
    lines.append(
        f"edge unreachable: {_label(table, table.slot_index[e])}, {_fmt_ms(table.slot_time_s[e])}"
    )
    return "\n".join(lines)


def _label(table, k: int) -> str:
    return f"[{k}] {table.schedules[k].describe()}" if k >= 0 else "no schedule fits"


def draw_map(table, out: str | Path) -> Path:
    """The two bandwidths on log axes, each region coloured by its schedule and labelled
    with its groups and cuts; a strip on the right for "cloud unreachable"."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import ListedColormap

    g = table.grid
    n = g.size
    idx = np.array(table.slot_index[: n * n], dtype=float).reshape(n, n)  # [de, ec]
    down = np.array([table.slot_index[table.cloud_down_slot(i)] for i in range(n)], float)
    edges = g.min_mbps * 10 ** ((np.arange(n + 1) - 0.5) / g.points_per_decade)
    palette = plt.get_cmap("tab20").colors
    colors = [palette[k % len(palette)] for k in range(max(1, len(table.schedules)))]
    cmap = ListedColormap(colors).with_extremes(under=DOWN_COLOR)
    vmax = max(1, len(table.schedules)) - 0.5

    fig, (ax, strip) = plt.subplots(
        1,
        2,
        figsize=FIGURE_SIZE_IN,
        sharey=True,
        gridspec_kw={"width_ratios": [12, 1], "wspace": 0.05},
    )
    ax.pcolormesh(edges, edges, np.where(idx < 0, -1, idx), cmap=cmap, vmin=-0.5, vmax=vmax)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("edge <-> cloud bandwidth (Mbit/s)")
    ax.set_ylabel("device <-> edge bandwidth (Mbit/s)")
    values = np.array(g.values())
    for k, s in enumerate(table.schedules):
        where = np.argwhere(idx == k)
        if len(where) == 0:
            continue
        # Label at the region's cell nearest its centroid (on the log axes).
        centre = where.mean(axis=0)
        i, j = where[np.argmin(((where - centre) ** 2).sum(axis=1))]
        ax.text(
            values[j],
            values[i],
            f"[{k}] " + s.describe().replace(", ", "\n"),
            ha="center",
            va="center",
            fontsize=8,
            bbox={"boxstyle": "round", "fc": "white", "alpha": 0.8, "lw": 0},
        )
    strip.pcolormesh([0, 1], edges, down[:, None], cmap=cmap, vmin=-0.5, vmax=vmax)
    strip.set_xticks([])
    strip.set_xlabel("cloud\nunreachable")
    e = table.slot_index[table.edge_down_slot]
    ax.set_title(
        f"{table.model}, B={table.batch_size}: schedule per bandwidth pair "
        f"(edge unreachable: {_label(table, e)})",
        fontsize=10,
    )
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[k]) for k in range(len(table.schedules))]
    labels = [f"[{k}] {s.describe()}" for k, s in enumerate(table.schedules)]
    fig.legend(
        handles,
        labels,
        loc="lower center",
        ncol=min(3, max(1, len(labels))),
        fontsize=8,
        frameon=False,
    )
    fig.subplots_adjust(bottom=0.12 + 0.03 * math.ceil(len(labels) / 3))
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return path


def cmd_show(args: argparse.Namespace) -> int:
    from hiertrain_edge.planning.table import ScheduleTable

    table = ScheduleTable.load(args.table)
    print(summary(table))
    if args.plot:
        path = draw_map(table, args.plot)
        print(f"wrote {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("table", help="build, print and draw schedule tables")
    tsub = p.add_subparsers(dest="table_command", required=True, metavar="ACTION")

    b = tsub.add_parser("build", help="plan every bandwidth pair and write a table file")
    b.add_argument("--model", required=True, help="zoo name or package.module:function")
    b.add_argument("--batch-size", type=int, required=True, metavar="B")
    for tier in ("device", "edge", "cloud"):
        b.add_argument(
            f"--{tier}",
            required=True,
            metavar="PROFILE",
            help=f"{tier} profile: JSON path or hw_profiles name",
        )
    b.add_argument(
        "--latency-de-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="one-way device<->edge latency (default 0)",
    )
    b.add_argument(
        "--latency-ec-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="one-way edge<->cloud latency (default 0)",
    )
    add_checkpoints(b)
    b.add_argument("--min-mbps", type=float, default=0.1, help="grid start (default 0.1)")
    b.add_argument(
        "--max-mbps", type=float, default=10_000.0, help="grid end (default 10000 = 10 Gbit/s)"
    )
    b.add_argument("--points-per-decade", type=int, default=8, help="(default 8, minimum 8)")
    b.add_argument(
        "--seed-stride",
        type=int,
        default=8,
        metavar="K",
        help="planner seeds every K grid points per axis (default 8)",
    )
    b.add_argument(
        "--refine-calls",
        type=int,
        default=48,
        metavar="N",
        help="planner calls on region boundaries after the seeds (default 48)",
    )
    b.add_argument("--out", required=True, metavar="FILE", help="table file to write")
    b.set_defaults(func=cmd_build, tier="table")

    s = tsub.add_parser("show", help="print a table's summary and optionally draw its map")
    s.add_argument("table", metavar="FILE")
    s.add_argument("--plot", metavar="FILE.png", help="draw the schedule map")
    s.set_defaults(func=cmd_show, tier="table")
