"""Planner solve time, certified gap, and gap to the exhaustive optimum, for the zoo models
(estimated profiles: rpi4 device, x86_edge edge, gpu_cloud cloud).

    python benchmarks/bench_planner.py [--models ...] [--batch-sizes 64 256] [--repeats 3]
    python benchmarks/bench_planner.py --reference-only [--ref-cases small_cnn:16 vgg11:4]
    python benchmarks/bench_planner.py --partial-only [--models vgg11] [--batch-sizes 64]

1. Speed and answers: `plan()` over a grid of bandwidths (device<->edge 1, 10, 100 and
   edge<->cloud 5, 50, 500 Mbit/s, latencies 2 ms / 20 ms) at each batch size; per cell
   the median solve time of `--repeats` calls, the predicted step, the certified gap
   (predicted / lower bound - 1, the bound of planner.load_bound) and the schedule.
2. `--reference`: on instances small enough to enumerate (every cut tuple times every
   split of the batch: planner.exhaustive, seconds to minutes each) the planner's answer
   against the true optimum, gap = planner / optimum - 1.
3. `--partial`: on the full-size models, where enumerating three groups is out of reach,
   the planner against the best of a large exactly-solved part of the space: every
   schedule of one or two groups (every cut pair, every split) and every pipeline of
   three groups on one cut pair (every split); gap = planner / that best - 1 (negative:
   the planner found something better outside that part).

Timings are wall-clock on a shared machine: compare them within one run. No pass/fail.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from hiertrain_edge.models import get_model
from hiertrain_edge.planning.cost import CostModel, Links
from hiertrain_edge.planning.planner import (
    MAX_GROUPS,
    _Evaluator,
    _exhaustive_points,
    compositions,
    cut_pairs,
    cut_tuples,
    exhaustive,
    plan,
)
from hiertrain_edge.profiling.measure import model_facts
from hiertrain_edge.profiling.profile import load_profile

BW_DE_MBPS = (1, 10, 100)
BW_EC_MBPS = (5, 50, 500)
LATENCY_S = (0.002, 0.02)
REF_CASES = ("small_cnn:16", "small_cnn:32", "resnet18:8", "vgg11:4")


def bench_speed(args, profiles) -> None:
    print(
        f"## plan(): median of {args.repeats} calls per cell, profiles "
        f"{args.device}/{args.edge}/{args.cloud}\n"
    )
    print("| model | N | B | de | ec | solve ms | predicted ms | certified gap % | schedule |")
    print("|---|---|---|---|---|---|---|---|---|")
    summary = []
    for name in args.models:
        spec = get_model(name)
        facts = model_facts(spec)  # sizing once per model, outside the timed solve
        for batch_size in args.batch_sizes:
            times, gaps = [], []
            for de in BW_DE_MBPS:
                for ec in BW_EC_MBPS:
                    links = Links.symmetric(de, ec, *LATENCY_S)
                    runs = [plan(facts, profiles, links, batch_size) for _ in range(args.repeats)]
                    r = runs[-1]
                    ms = statistics.median(x.solve_ms for x in runs)
                    times.append(ms)
                    gaps.append(r.gap)
                    print(
                        f"| {name} | {facts.num_units} | {batch_size} | {de:g} | {ec:g} | "
                        f"{ms:.1f} | {1000 * r.predicted_s:.2f} | {100 * r.gap:.1f} | "
                        f"{r.schedule.describe()} |",
                        flush=True,
                    )
            summary.append((name, facts.num_units, batch_size, times, gaps))
    print("\n| model | N | B | median solve ms | max solve ms | median certified gap % |")
    print("|---|---|---|---|---|---|")
    for name, n, b, times, gaps in summary:
        print(
            f"| {name} | {n} | {b} | {statistics.median(times):.1f} | {max(times):.1f} | "
            f"{100 * statistics.median(gaps):.1f} |"
        )


def bench_reference(args, profiles) -> None:
    print("\n## planner against the exhaustive optimum\n")
    print("| model | N | B | de | ec | points | planner ms | optimum ms | gap % | exhaustive s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    worst = 0.0
    for case in args.ref_cases:
        name, b = case.split(":")
        batch_size = int(b)
        facts = model_facts(get_model(name))
        points = _exhaustive_points(facts.num_units, batch_size)
        for de in BW_DE_MBPS:
            for ec in BW_EC_MBPS:
                links = Links.symmetric(de, ec, *LATENCY_S)
                mine = plan(facts, profiles, links, batch_size)
                t0 = time.perf_counter()
                ref = exhaustive(CostModel.build(facts, profiles, links), batch_size)
                ref_s = time.perf_counter() - t0
                assert ref is not None
                gap = mine.predicted_s / ref[1] - 1
                worst = max(worst, gap)
                print(
                    f"| {name} | {facts.num_units} | {batch_size} | {de:g} | {ec:g} | {points} | "
                    f"{1000 * mine.predicted_s:.3f} | {1000 * ref[1]:.3f} | {100 * gap:.3f} | "
                    f"{ref_s:.1f} |",
                    flush=True,
                )
    print(f"\nworst gap to the optimum: {100 * worst:.3f}%")


def partial_optimum(model: CostModel, batch_size: int) -> float:
    """Best time over every schedule of one or two groups and every three-group pipeline
    on one cut pair, each with every split of the batch."""
    ev = _Evaluator(model, batch_size)
    N = model.num_units
    for k in (1, 2, 3):
        cols = compositions(batch_size, k)
        splits = np.stack([*cols] + [np.zeros_like(cols[0])] * (MAX_GROUPS - k), axis=1)
        if k < 3:
            tuples = [c for c in cut_tuples(N, k) if len(c) == k]
        else:
            tuples = [(p,) * 3 for p in cut_pairs(N) if p != (N, N)]
        per = max(1, 200_000 // len(splits))
        for i in range(0, len(tuples), per):
            chunk = tuples[i : i + per]
            ev.times(chunk, np.broadcast_to(splits[None], (len(chunk), *splits.shape)))
    return ev.winner()[1]


def bench_partial(args, profiles) -> None:
    print("\n## planner against every 1-2 group schedule and every 3-group pipeline\n")
    print("| model | N | B | de | ec | planner ms | partial optimum ms | gap % | partial s |")
    print("|---|---|---|---|---|---|---|---|---|")
    worst = -1.0
    for name in args.models:
        facts = model_facts(get_model(name))
        for batch_size in args.batch_sizes:
            for de in BW_DE_MBPS:
                for ec in BW_EC_MBPS:
                    links = Links.symmetric(de, ec, *LATENCY_S)
                    mine = plan(facts, profiles, links, batch_size)
                    t0 = time.perf_counter()
                    ref = partial_optimum(CostModel.build(facts, profiles, links), batch_size)
                    ref_s = time.perf_counter() - t0
                    gap = mine.predicted_s / ref - 1
                    worst = max(worst, gap)
                    print(
                        f"| {name} | {facts.num_units} | {batch_size} | {de:g} | {ec:g} | "
                        f"{1000 * mine.predicted_s:.3f} | {1000 * ref:.3f} | {100 * gap:.3f} | "
                        f"{ref_s:.1f} |",
                        flush=True,
                    )
    print(f"\nworst gap to the partial optimum: {100 * worst:.3f}%")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--models", nargs="+", default=["small_cnn", "vgg11", "resnet18", "mobilenetv2"]
    )
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 256])
    ap.add_argument("--repeats", type=int, default=3, help="plan() calls per cell (median)")
    ap.add_argument("--reference", action="store_true", help="also the exhaustive comparison")
    ap.add_argument("--reference-only", action="store_true", help="only that")
    ap.add_argument("--partial", action="store_true", help="also the partial comparison")
    ap.add_argument("--partial-only", action="store_true", help="only that")
    ap.add_argument(
        "--ref-cases", nargs="+", default=list(REF_CASES), help="MODEL:BATCH, small enough"
    )
    ap.add_argument("--device", default="rpi4")
    ap.add_argument("--edge", default="x86_edge")
    ap.add_argument("--cloud", default="gpu_cloud")
    args = ap.parse_args()
    profiles = {t: load_profile(getattr(args, t)) for t in ("device", "edge", "cloud")}
    if not (args.reference_only or args.partial_only):
        bench_speed(args, profiles)
    if args.reference or args.reference_only:
        bench_reference(args, profiles)
    if args.partial or args.partial_only:
        bench_partial(args, profiles)
    return 0


if __name__ == "__main__":
    sys.exit(main())
