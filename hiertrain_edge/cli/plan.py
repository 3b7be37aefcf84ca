"""The planning commands: `plan` (choose a schedule from three profiles) and `profile`
(measure this host for a model)."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict

from hiertrain_edge.cli.common import (
    add_checkpoints,
    add_threads,
    checkpoints,
    describe_checkpoints,
)
from hiertrain_edge.errors import ConfigError


def _mbit(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected Mbit/s as a number, got {text!r}") from exc
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"bandwidth must be >= 0 Mbit/s, got {text}")
    return value


def _fmt_s(t: float) -> str:
    return f"{t * 1000:10.2f} ms" if math.isfinite(t) else "  infeasible"


def cmd_plan(args: argparse.Namespace) -> int:
    from hiertrain_edge.models import get_model
    from hiertrain_edge.planning.cost import CostModel, Links
    from hiertrain_edge.planning.planner import plan
    from hiertrain_edge.profiling.profile import load_profile

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    spec = get_model(args.model)
    profiles = {
        "device": load_profile(args.device),
        "edge": load_profile(args.edge),
        "cloud": load_profile(args.cloud),
    }
    links = Links(
        args.bw_de,
        args.bw_ed if args.bw_ed is not None else args.bw_de,
        args.bw_ec,
        args.bw_ce if args.bw_ce is not None else args.bw_ec,
        args.latency_de_ms / 1000,
        args.latency_ec_ms / 1000,
    )
    ck = checkpoints(args)
    result = plan(spec, profiles, links, args.batch_size, checkpoints=ck)
    if args.gantt:
        from hiertrain_edge.planning.gantt import draw_gantt

        total, events = CostModel.build(spec, profiles, links, ck).timeline(result.schedule)
        draw_gantt(
            events,
            total,
            args.gantt,
            f"{spec.name}, B={args.batch_size}: {result.schedule.describe()} "
            f"({total * 1000:.1f} ms)",
        )
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0
    print(f"model {spec.name} ({spec.num_units} units), batch {args.batch_size}")
    for tier, p in profiles.items():
        print(f"  {tier:6s} {p.name} ({p.provenance.kind})")
    print(
        f"  links: device<->edge {links.de_mbps:g}/{links.ed_mbps:g} Mbit/s, "
        f"edge<->cloud {links.ec_mbps:g}/{links.ce_mbps:g} Mbit/s"
    )
    print(f"  {describe_checkpoints(None if ck is None else asdict(ck))}")
    print()
    print(f"{'group':>5} {'n':>5} {'cuts':>9}  device  edge  cloud")
    n_units = spec.num_units
    for i, g in enumerate(result.schedule.groups):
        spans = [g.span(t, n_units) for t in ("device", "edge", "cloud")]
        cols = "  ".join(f"[{a},{b})" if b > a else "-" for a, b in spans)
        print(f"{i:>5} {g.n:>5} {f'({g.c1},{g.c2})':>9}  {cols}")
    print()
    print(f"{'planned':15s}{_fmt_s(result.predicted_s)}")
    for name, t in result.baselines.items():
        speedup = f"  x{t / result.predicted_s:.2f}" if math.isfinite(t) else ""
        print(f"{name:15s}{_fmt_s(t)}{speedup}")
    bound_note = "  (without the snapshot)" if ck is not None else ""
    print(f"{'lower bound':15s}{_fmt_s(result.lower_bound_s)}{bound_note}")
    print(f"gap {100 * result.gap:.2f}%, solved in {result.solve_ms:.1f} ms")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from hiertrain_edge.models import get_model
    from hiertrain_edge.profiling.measure import measure_profile

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    spec = get_model(args.model)
    profile = measure_profile(
        spec,
        args.batch_size,
        threads=args.threads,
        repeats=args.repeats,
        name=args.name,
        memory_budget=args.memory_budget_mb * 1_000_000 if args.memory_budget_mb else None,
    )
    path = profile.save(args.out)
    print(
        f"profiled {spec.name} on {profile.provenance.host} ({profile.threads} thread(s)): "
        f"{len(profile.units or [])} units, message {profile.message_overhead_s * 1e6:.0f} us; "
        f"wrote {path}"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="choose the fastest schedule for three tier profiles")
    p.add_argument("--model", default="small_cnn", help="zoo model or package.module:function")
    p.add_argument(
        "--batch-size", type=int, default=64, metavar="B", help="samples per step (default 64)"
    )
    for tier in ("device", "edge", "cloud"):
        p.add_argument(
            f"--{tier}",
            required=True,
            metavar="PROFILE",
            help="profile JSON file, or a name in hw_profiles/ (e.g. rpi4)",
        )
    p.add_argument(
        "--bw-de",
        type=_mbit,
        required=True,
        metavar="MBIT",
        help="device->edge bandwidth, Mbit/s (also edge->device unless --bw-ed)",
    )
    p.add_argument(
        "--bw-ec",
        type=_mbit,
        required=True,
        metavar="MBIT",
        help="edge->cloud bandwidth, Mbit/s (also cloud->edge unless --bw-ce)",
    )
    p.add_argument("--bw-ed", type=_mbit, metavar="MBIT", help="edge->device bandwidth")
    p.add_argument("--bw-ce", type=_mbit, metavar="MBIT", help="cloud->edge bandwidth")
    p.add_argument("--latency-de-ms", type=float, default=0.0, help="device<->edge one-way")
    p.add_argument("--latency-ec-ms", type=float, default=0.0, help="edge<->cloud one-way")
    add_checkpoints(p)
    p.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    p.add_argument("--gantt", metavar="FILE.png", help="draw the predicted step")
    p.set_defaults(func=cmd_plan, tier="plan")

    p = sub.add_parser("profile", help="measure this host for a model, write a profile JSON")
    p.add_argument(
        "--model",
        default="small_cnn",
        help="zoo model or package.module:function (default small_cnn)",
    )
    p.add_argument(
        "--batch-size", type=int, default=64, help="largest group size n to time (default 64)"
    )
    p.add_argument("--out", required=True, metavar="FILE.json", help="profile file to write")
    p.add_argument("--name", help="profile name (default HOST-MODEL)")
    p.add_argument("--repeats", type=int, default=7, help="timed runs per unit and n (default 7)")
    p.add_argument(
        "--memory-budget-mb",
        type=int,
        help="memory this tier may use, MB (default: the memory available now)",
    )
    add_threads(p)
    p.set_defaults(func=cmd_profile, tier="profile")
