"""The `emulate` command: one scenario on the emulated board-edge-cloud testbed (needs root)."""

from __future__ import annotations

import argparse
import tempfile


def cmd_emulate(args: argparse.Namespace) -> int:
    from hiertrain_edge.emulate.netns import cleanup_leftovers, require_root, signals_raise
    from hiertrain_edge.emulate.runner import run_scenario
    from hiertrain_edge.emulate.scenario import load_scenario, shipped_scenarios
    from hiertrain_edge.errors import ConfigError

    if args.list:
        for name, path in shipped_scenarios().items():
            print(f"{name:22s} {load_scenario(path).description}")
        return 0
    if args.cleanup:
        require_root()
        removed = cleanup_leftovers()
        print(f"removed {len(removed)} leftovers" + (f": {', '.join(removed)}" if removed else ""))
        if not args.scenario:
            return 0
    if not args.scenario:
        raise ConfigError("give --scenario FILE.toml or a shipped name (see --list)")
    scenario = load_scenario(args.scenario)
    require_root()
    out = args.out or tempfile.mkdtemp(prefix=f"hiertrain-emulate-{scenario.name}-")
    with signals_raise():
        result = run_scenario(scenario, out, args.schedule, log_level=args.log_level)
    for notice in result.notices:
        print(f"note: {notice}")
    step = "n/a" if result.median_step_s is None else f"{result.median_step_s * 1000:.1f} ms"
    print(
        f"scenario {result.scenario}: schedule {result.schedule}, {result.steps} steps in "
        f"{result.wall_s:.1f} s, median step {step}; report {result.report_path}, "
        f"summary {out}/emulation.json"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "emulate",
        help="run cloud, edge and board in network namespaces with shaped links; needs root "
        "(from a venv: sudo .venv/bin/hiertrain-edge emulate ...)",
    )
    p.add_argument("--scenario", metavar="FILE.toml", help="scenario file or shipped name")
    p.add_argument("--out", metavar="DIR", help="folder for logs, report and emulation.json")
    p.add_argument(
        "--schedule",
        metavar="CHOICE",
        help="planned | device | edge | cloud | de:C | dc:C | ec:C | n:c1:c2,... "
        "(default: the scenario's [run] schedule)",
    )
    p.add_argument("--list", action="store_true", help="list the shipped scenarios and exit")
    p.add_argument(
        "--cleanup",
        action="store_true",
        help="remove (and list) what killed runs left behind, then run the scenario if given "
        "(a run always sweeps leftovers first)",
    )
    p.set_defaults(func=cmd_emulate, tier="emulate")
