"""Planner solve time and certified gap for the zoo models at B=64 and B=256 over a grid
of bandwidths (estimated profiles: rpi4 device, x86_edge edge, gpu_cloud cloud).

    python benchmarks/bench_planner.py [--budget-ms 1000] [--gap-tol 0.02] [--models ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys

from hiertrain_edge.models import get_model
from hiertrain_edge.planning.cost import Links
from hiertrain_edge.planning.planner import plan
from hiertrain_edge.profiling.measure import model_facts
from hiertrain_edge.profiling.profile import load_profile

BW_DE_MBPS = (1, 10, 100)
BW_EC_MBPS = (5, 50, 500)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--models", nargs="+", default=["small_cnn", "vgg11", "resnet18", "mobilenetv2"]
    )
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 256])
    ap.add_argument("--budget-ms", type=float, default=1000.0)
    ap.add_argument("--gap-tol", type=float, default=0.02)
    ap.add_argument("--device", default="rpi4")
    ap.add_argument("--edge", default="x86_edge")
    ap.add_argument("--cloud", default="gpu_cloud")
    args = ap.parse_args()
    profiles = {
        "device": load_profile(args.device),
        "edge": load_profile(args.edge),
        "cloud": load_profile(args.cloud),
    }
    print(
        f"profiles {args.device}/{args.edge}/{args.cloud}, budget {args.budget_ms:g} ms, "
        f"gap tolerance {args.gap_tol:g}"
    )
    print(f"{'model':12s} {'N':>3s} {'B':>4s} {'de':>4s} {'ec':>4s} {'solve ms':>9s} "
          f"{'gap %':>7s} {'exact':>5s} {'x best base':>11s}  schedule")  # fmt: skip
    for name in args.models:
        spec = get_model(name)
        model_facts(spec)  # sizing once per model, outside the timed solve
        for batch_size in args.batch_sizes:
            times, gaps = [], []
            for de in BW_DE_MBPS:
                for ec in BW_EC_MBPS:
                    r = plan(
                        spec,
                        profiles,
                        Links.symmetric(de, ec, 0.002, 0.02),
                        batch_size,
                        budget_s=args.budget_ms / 1000,
                        gap_tol=args.gap_tol,
                    )
                    base = min(r.baselines.values())
                    times.append(r.solve_ms)
                    gaps.append(r.gap)
                    print(
                        f"{name:12s} {spec.num_units:3d} {batch_size:4d} {de:4g} {ec:4g} "
                        f"{r.solve_ms:9.1f} {100 * r.gap:7.2f} {str(r.exact):>5s} "
                        f"{base / r.predicted_s:11.2f}  {r.schedule.describe()}",
                        flush=True,
                    )
            print(
                f"{name:12s} {spec.num_units:3d} {batch_size:4d} summary: median solve "
                f"{statistics.median(times):.1f} ms, max {max(times):.1f} ms; median gap "
                f"{100 * statistics.median(gaps):.2f}%, max {100 * max(gaps):.2f}%",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
