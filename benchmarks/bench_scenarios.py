"""The scenario benchmark: the planned schedule against the baselines in the emulated testbed.

    sudo python benchmarks/bench_scenarios.py [--quick] [--out DIR] [--scenarios NAME ...]
        [--steps N] [--fluctuating-steps N]

For each scenario (default: every shipped one) the real `cloud`, `serve` and `join` run
inside the testbed (hiertrain_edge.emulate) once per schedule:

- planned: the job has no fixed schedule, so the runtime plans by itself (the tiers profile
  themselves, the edge builds the schedule table, the board picks each step's schedule
  from its probed bandwidths); its report carries predicted_s for every step;
- device, edge, cloud: the whole model on one tier;
- two-tier: the planner's best two-tier split (planning.plan's `best_two_tier` baseline)
  for the scenario's initial link rates.

The two-tier split and the baselines' predicted step times come from profiles this
benchmark measures itself, one tier at a time, inside that tier's namespace and CPU share
(`quick_profile`, the same call the runtime makes). The planned run's predictions are the
runtime's own.

DIR/report.md holds, per scenario, the median measured step time (first step left out) of
every schedule, the speedup over cloud-only, the median |measured/predicted - 1| and the
issue's targets, met or missed; DIR/*.png the plots; DIR/results.json every number;
DIR/<scenario>/<schedule>/ each run's logs and report. `--quick` is the smoke variant:
one small scenario, a few steps, small_cnn.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hiertrain_edge.emulate import runner  # noqa: E402
from hiertrain_edge.emulate.netns import Testbed, require_root  # noqa: E402
from hiertrain_edge.emulate.runner import run_scenario  # noqa: E402
from hiertrain_edge.emulate.scenario import (  # noqa: E402
    Scenario,
    load_scenario,
    scenario_from_dict,
    shipped_scenarios,
)
from hiertrain_edge.errors import HierTrainError  # noqa: E402
from hiertrain_edge.planning.cost import Links, predict  # noqa: E402
from hiertrain_edge.planning.planner import plan  # noqa: E402
from hiertrain_edge.planning.schedule import Schedule  # noqa: E402
from hiertrain_edge.profiling.profile import parse_profile  # noqa: E402

log = logging.getLogger("bench_scenarios")

PLANNED = "planned"
BASELINE_RUNS = ("device", "edge", "cloud", "two-tier")
FLUCTUATING = "fluctuating-uplink"
NEAR_BEST_TOLERANCE = 0.05  # planned may be at most 5% slower than the best baseline
THIN_WAN_SPEEDUP_TARGET = 3.0
PREDICTION_ERROR_TARGET = 0.15
PROFILE_TIMEOUT_S = 600.0

# --quick: the thin WAN with a small batch and few steps.
QUICK_SCENARIO = {
    "name": "quick-thin-wan",
    "description": "smoke test: slow board on a LAN edge, thin WAN to a faster cloud",
    "timeout_s": 240,
    "job": {"model": "small_cnn", "batch_size": 32, "steps": 4, "seed": 0},
    "run": {"schedule": "planned", "secure": False, "test_fraction": 0.05},
    "tiers": {
        "device": {"cpus": 0.25, "threads": 1},
        "edge": {"cpus": 1.0, "threads": 1},
        "cloud": {"cpus": 1.0, "threads": 1},
    },
    "links": {
        "de": {"up_mbps": 100, "down_mbps": 100},
        "ec": {"up_mbps": 5, "down_mbps": 20},
    },
}
QUICK_RUNS = (PLANNED, "cloud", "two-tier")
# A tier that is not in the schedule (the cloud of device-only) waits for a job that never
# comes; the runner stops it after this long instead of its default 30 s.
STOP_AFTER_BOARD_S = 3.0
CYCLE_GAP_S = 15.0  # repeated rate changes: the cycle restarts this long after its last change

PROFILE_SCRIPT = """
import json, sys, torch
from hiertrain_edge.profiling.measure import quick_profile
from hiertrain_edge.runtime.job import job_from_dict
job_json, threads, name, out = sys.argv[1:5]
job = job_from_dict(json.loads(job_json), "job")
torch.set_num_threads(int(threads))
p = quick_profile(job.spec(), job.batch_size, int(threads), name=name)
open(out, "w").write(p.model_dump_json())
"""


# --- profiles and the planner's view -----------------------------------------------------


def profile_tiers(scenario: Scenario, out: Path, together: bool = False) -> dict[str, Any]:
    """Each tier's profile, measured inside its namespace and CPU share, one at a time
    (`together`: all three at once, faster but contended on a small host)."""
    out.mkdir(parents=True, exist_ok=True)
    script = out / "profile_tier.py"
    script.write_text(PROFILE_SCRIPT)
    testbed = Testbed(links=scenario.link_shapes(), cpus=scenario.cpu_shares())
    tiers = ("device", "edge", "cloud")
    with testbed:
        procs = {}
        for tier in tiers:
            threads = scenario.tier(tier).threads
            argv = [sys.executable, str(script), json.dumps(scenario.job)]
            argv += [str(threads), tier, str(out / f"{tier}.profile.json")]
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
            procs[tier] = testbed.popen(tier, argv, env=env)
            if not together:
                procs[tier].wait(timeout=PROFILE_TIMEOUT_S)
        for tier, proc in procs.items():
            if proc.wait(timeout=PROFILE_TIMEOUT_S) != 0:
                raise HierTrainError(f"profiling the {tier} failed (exit {proc.returncode})")
    return {
        t: parse_profile(json.loads((out / f"{t}.profile.json").read_text()), t) for t in tiers
    }


def profile_key(scenario: Scenario) -> str:
    job = scenario.the_job()
    tiers = {t: scenario.tier(t).model_dump() for t in ("device", "edge", "cloud")}
    return json.dumps([job.model, job.batch_size, tiers], sort_keys=True)


def initial_links(scenario: Scenario) -> Links:
    shapes = scenario.link_shapes()
    de, ec = shapes["de"], shapes["ec"]
    return Links(
        de.up_mbps, de.down_mbps, ec.up_mbps, ec.down_mbps, de.delay_ms / 1e3, ec.delay_ms / 1e3
    )


def repeat_changes(scenario: Scenario) -> Scenario:
    """The scenario's rate changes repeated as a cycle until its timeout, with the initial
    rates restored at the start of every cycle, so that a run whose steps start late (the
    planned one profiles first) still trains through the changes."""
    if not scenario.changes:
        return scenario
    first = scenario.timeline()
    period = first[-1].at_s + CYCLE_GAP_S
    shapes = scenario.link_shapes()
    reset = [
        {"at_s": 0.0, "link": n, "up_mbps": shapes[n].up_mbps, "down_mbps": shapes[n].down_mbps}
        for n in sorted({c.link for c in first})
    ]
    changes, k = [], 0
    while k * period < scenario.timeout_s:
        for c in [*(reset if k else []), *(c.model_dump() for c in first)]:
            changes.append({**c, "at_s": c["at_s"] + k * period})
        k += 1
    return scenario_from_dict({**scenario.model_dump(), "changes": changes}, scenario.name)


def most_used(row: dict[str, Any]) -> str | None:
    """The flag of the schedule a run used for most of its steps."""
    known = {}
    if row.get("report_schedule"):
        first = Schedule.from_dict(row["report_schedule"])
        known[first.schedule_id()] = first
    for change in row.get("schedule_changes", []):
        for key in ("from_schedule", "to_schedule"):
            if change.get(key):
                sched = Schedule.from_dict(change[key])
                known[sched.schedule_id()] = sched
    ids = [it["schedule_id"] for it in row.get("iterations", [])]
    if not ids:
        return None
    top = max(set(ids), key=ids.count)
    return schedule_flag(known[top]) if top in known else None


def schedule_flag(schedule: Schedule) -> str:
    return ",".join(f"{g.n}:{g.c1}:{g.c2}" for g in schedule.groups)


# --- one scenario ------------------------------------------------------------------------


def run_one(scenario: Scenario, choice: str, flag: str, out: Path) -> dict[str, Any]:
    """Run one schedule; the run's numbers, or its error."""
    t0 = time.monotonic()
    try:
        result = run_scenario(scenario, out, schedule=flag, log_level="info")
    except HierTrainError as exc:
        log.error("%s / %s failed: %s", scenario.name, choice, str(exc).splitlines()[0])
        return {"schedule": choice, "error": str(exc).splitlines()[0], "run_dir": str(out)}
    report = json.loads(Path(result.report_path).read_text()) if result.report_path else {}
    row = {
        "schedule": choice,
        "flag": flag,
        "median_step_s": result.median_step_s,
        "runtime_predicted_s": result.median_predicted_s,
        "runtime_abs_error": result.median_abs_error,
        "steps": result.steps,
        "wall_s": round(time.monotonic() - t0, 1),
        "run_dir": str(out),
        "iterations": report.get("iterations", []),
        "schedule_changes": report.get("schedule_changes", []),
        "report_schedule": report.get("schedule"),
    }
    log.info(
        "%s / %s: median step %.4f s (%d steps, %.0f s wall)",
        scenario.name,
        choice,
        row["median_step_s"] or math.nan,
        row["steps"],
        row["wall_s"],
    )
    return row


def bench_scenario(
    scenario: Scenario, runs: tuple[str, ...], profiles: dict[str, Any], out: Path
) -> dict[str, Any]:
    spec = scenario.the_job().spec()
    batch = scenario.the_job().batch_size
    links = initial_links(scenario)
    p = plan(spec, profiles, links, batch)
    n = spec.num_units
    flags = {
        PLANNED: PLANNED,
        "device": "device",
        "edge": "edge",
        "cloud": "cloud",
    }
    two = p.baseline_schedules.get("best_two_tier")
    if two is not None:
        flags["two-tier"] = schedule_flag(two)
    offline = {
        "device": f"{batch}:{n}:{n}",
        "edge": f"{batch}:0:{n}",
        "cloud": f"{batch}:0:0",
        "two-tier": flags.get("two-tier"),
    }
    rows = []
    for choice in runs:
        if choice not in flags:
            rows.append({"schedule": choice, "error": "the planner found no feasible split"})
            continue
        row = run_one(scenario, choice, flags[choice], out / choice.replace(":", "_"))
        # The offline prediction from our own profiles and the initial link rates.
        sched = offline.get(choice) if choice != PLANNED else most_used(row)
        if sched is not None:
            t = predict(Schedule.parse(sched), spec, profiles, links)
            row["offline_predicted_s"] = t if math.isfinite(t) else None
        rows.append(row)
    return {
        "scenario": scenario.name,
        "description": scenario.description,
        "model": spec.name,
        "batch_size": batch,
        "steps": scenario.the_job().steps,
        "links": links.__dict__ if hasattr(links, "__dict__") else str(links),
        "changes": len(scenario.changes),
        "plan": {
            "schedule": p.schedule.describe(),
            "predicted_s": p.predicted_s,
            "baselines": {k: (v if math.isfinite(v) else None) for k, v in p.baselines.items()},
            "best_two_tier": two.describe() if two is not None else None,
        },
        "runs": rows,
    }


# --- report ------------------------------------------------------------------------------


def _fmt(x: float | None, spec: str = ".3f", unit: str = "") -> str:
    return "n/a" if x is None or not math.isfinite(x) else format(x, spec) + unit


def predicted_of(row: dict[str, Any], fluctuating: bool) -> float | None:
    """The prediction a run is judged against: the runtime's own where it planned, else the
    offline one (not for fixed schedules under changing rates: one rate does not hold)."""
    if row.get("runtime_predicted_s"):
        return row["runtime_predicted_s"]
    return None if fluctuating else row.get("offline_predicted_s")


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    runs = {r["schedule"]: r for r in result["runs"]}
    fluct = result["changes"] > 0
    t = {k: r.get("median_step_s") for k, r in runs.items()}
    baselines = {k: v for k, v in t.items() if k != PLANNED and v}
    best_name = min(baselines, key=baselines.get) if baselines else None
    planned = t.get(PLANNED)
    errors = []
    for r in result["runs"]:
        pred = predicted_of(r, fluct)
        if r.get("median_step_s") and pred:
            errors.append(abs(r["median_step_s"] / pred - 1))
    return {
        "best_baseline": best_name,
        "planned_vs_best": planned / baselines[best_name] if planned and best_name else None,
        "speedup_vs_cloud": t["cloud"] / planned if planned and t.get("cloud") else None,
        "planned_abs_error": runs.get(PLANNED, {}).get("runtime_abs_error"),
        "median_abs_error_all": statistics.median(errors) if errors else None,
    }


def write_report(results: list[dict[str, Any]], out: Path, facts: dict[str, Any]) -> Path:
    lines = ["# Scenario benchmark", ""]
    lines += [f"- {k}: {v}" for k, v in facts.items()]
    lines += ["", "Step times are medians of measured_s over the steps after the first.", ""]
    lines += [
        "| scenario | planned s | device s | edge s | cloud s | two-tier s | best baseline | "
        "planned / best | speedup vs cloud | planned median err | all-runs median err |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        s = res["summary"]
        t = {r["schedule"]: r.get("median_step_s") for r in res["runs"]}
        lines.append(
            f"| {res['scenario']} | "
            + " | ".join(_fmt(t.get(k)) for k in (PLANNED, *BASELINE_RUNS))
            + f" | {s['best_baseline'] or 'n/a'} | {_fmt(s['planned_vs_best'], '.2f')} | "
            f"{_fmt(s['speedup_vs_cloud'], '.2f', 'x')} | {_fmt(s['planned_abs_error'], '.1%')} | "
            f"{_fmt(s['median_abs_error_all'], '.1%')} |"
        )
    lines += ["", "## Targets", ""]
    for res in results:
        s, name = res["summary"], res["scenario"]
        pvb = s["planned_vs_best"]
        if pvb is not None:
            ok = pvb <= 1 + NEAR_BEST_TOLERANCE
            lines.append(
                f"- {name}: planned within 5% of the best baseline ({s['best_baseline']}): "
                f"{'met' if ok else 'MISSED'} ({pvb:.2f}x)"
            )
        err = s["planned_abs_error"]
        if err is not None:
            ok = err <= PREDICTION_ERROR_TARGET
            lines.append(
                f"- {name}: planned median |measured/predicted - 1| <= 15%: "
                f"{'met' if ok else 'MISSED'} ({err:.1%})"
            )
        if name == "thin-wan" and s["speedup_vs_cloud"] is not None:
            ok = s["speedup_vs_cloud"] >= THIN_WAN_SPEEDUP_TARGET
            lines.append(
                f"- thin-wan: at least 3x faster than cloud-only: "
                f"{'met' if ok else 'MISSED'} ({s['speedup_vs_cloud']:.2f}x)"
            )
    for res in results:
        lines += ["", f"## {res['scenario']}", "", res["description"], ""]
        lines.append(
            f"{res['model']}, batch {res['batch_size']}, {res['steps']} steps; planner at the "
            f"initial rates: {res['plan']['schedule']} predicted "
            f"{_fmt(res['plan']['predicted_s'], '.4f')} s; best two-tier split "
            f"{res['plan']['best_two_tier']}."
        )
        lines += ["", f"![bars]({res['scenario']}-bars.png)", ""]
        lines += [
            "| schedule | run as | median measured s | runtime predicted s | "
            "offline predicted s | median err | steps | wall s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in res["runs"]:
            if "error" in r:
                lines.append(f"| {r['schedule']} | FAILED: {r['error']} | | | | | | |")
                continue
            lines.append(
                f"| {r['schedule']} | {r['flag']} | {_fmt(r['median_step_s'], '.4f')} | "
                f"{_fmt(r['runtime_predicted_s'], '.4f')} | "
                f"{_fmt(r.get('offline_predicted_s'), '.4f')} | "
                f"{_fmt(r['runtime_abs_error'], '.1%')} | {r['steps']} | {r['wall_s']} |"
            )
        planned = next((r for r in res["runs"] if r["schedule"] == PLANNED), None)
        if planned and planned.get("iterations"):
            used = sorted({i["schedule_id"] for i in planned["iterations"]})
            lines.append(
                f"\nplanned run: {len(used)} schedule(s) used, "
                f"{len(planned.get('schedule_changes', []))} switch(es); most steps ran "
                f"{most_used(planned)} (n:c1:c2)."
            )
        if (out / f"{res['scenario']}-timeline.png").exists():
            lines += ["", f"![timeline]({res['scenario']}-timeline.png)"]
    lines += ["", "## Predicted against measured", "", "![scatter](predicted-vs-measured.png)", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def draw_plots(results: list[dict[str, Any]], out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no plots")
        return
    for res in results:
        names = [r["schedule"] for r in res["runs"] if r.get("median_step_s")]
        vals = [r["median_step_s"] for r in res["runs"] if r.get("median_step_s")]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        colors = ["#2ca02c" if n == PLANNED else "#7f7f7f" for n in names]
        ax.bar(names, vals, color=colors)
        ax.set_ylabel("median step time (s)")
        ax.set_title(f"{res['scenario']} ({res['model']}, batch {res['batch_size']})")
        for i, v in enumerate(vals):
            ax.text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"{res['scenario']}-bars.png", dpi=100)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 5))
    lo, hi = math.inf, 0.0
    for res in results:
        fluct = res["changes"] > 0
        xs, ys = [], []
        for r in res["runs"]:
            if r.get("schedule") == PLANNED:
                for it in r.get("iterations", [])[1:]:
                    if it.get("predicted_s"):
                        xs.append(it["predicted_s"])
                        ys.append(it["measured_s"])
            else:
                pred = predicted_of(r, fluct)
                if pred and r.get("median_step_s"):
                    xs.append(pred)
                    ys.append(r["median_step_s"])
        if xs:
            ax.scatter(xs, ys, s=10, label=res["scenario"], alpha=0.7)
            lo, hi = min(lo, *xs, *ys), max(hi, *xs, *ys)
    if hi > 0:
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="measured = predicted")
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("predicted step time (s)")
    ax.set_ylabel("measured step time (s)")
    ax.set_title("per step (planned) and per run median (baselines)", fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "predicted-vs-measured.png", dpi=100)
    plt.close(fig)

    from hiertrain_edge.cli.timeline import draw_timeline

    for res in results:
        planned = next((r for r in res["runs"] if r["schedule"] == PLANNED), None)
        if res["changes"] and planned and planned.get("iterations"):
            report = json.loads(Path(planned["run_dir"], "report.json").read_text())
            draw_timeline(report).savefig(out / f"{res['scenario']}-timeline.png", dpi=100)


def machine_facts() -> dict[str, Any]:
    import platform

    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "machine": f"{cpu}, {os.cpu_count()} logical CPUs, Linux {platform.release()}",
        "python / torch": f"{platform.python_version()} / {torch.__version__}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke variant: one small scenario")
    ap.add_argument("--out", default="bench-scenarios", help="report folder")
    ap.add_argument("--scenarios", nargs="*", help="names or files (default: all shipped)")
    ap.add_argument("--runs", nargs="*", help=f"subset of {PLANNED} {' '.join(BASELINE_RUNS)}")
    ap.add_argument("--steps", type=int, help="override the steps of fixed-rate scenarios")
    ap.add_argument("--fluctuating-steps", type=int, help="override the steps of scenarios "
                    "with rate changes")  # fmt: skip
    ap.add_argument("--from-results", action="store_true",
                    help="only redraw the report and plots from DIR/results.json")  # fmt: skip
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("hiertrain_edge.emulate.netns").setLevel(logging.ERROR)
    if args.from_results:
        out = Path(args.out)
        data = json.loads((out / "results.json").read_text())
        draw_plots(data["results"], out)
        print(f"report: {write_report(data['results'], out, data['facts'])}")
        return 0
    require_root()
    runner.STOP_AFTER_BOARD_S = STOP_AFTER_BOARD_S
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    if args.quick:
        scenarios = [scenario_from_dict(QUICK_SCENARIO, "quick scenario")]
        runs = QUICK_RUNS
    else:
        names = args.scenarios or list(shipped_scenarios())
        scenarios = [load_scenario(n) for n in names]
        runs = (PLANNED, *BASELINE_RUNS)
    if args.runs:
        runs = tuple(args.runs)
    adjusted = []
    for s in scenarios:
        steps = args.fluctuating_steps if s.changes else args.steps
        if steps and not args.quick:
            s = s.model_copy(update={"job": {**s.job, "steps": steps}})
        adjusted.append(repeat_changes(s))

    t0 = time.monotonic()
    facts = machine_facts()
    profile_cache: dict[str, Any] = {}
    results = []
    for s in adjusted:
        key = profile_key(s)
        if key not in profile_cache:
            log.info("profiling the tiers of %s in their CPU shares", s.name)
            profile_cache[key] = profile_tiers(s, out / s.name / "profiles", together=args.quick)
        res = bench_scenario(s, runs, profile_cache[key], out / s.name)
        res["summary"] = summarize(res)
        results.append(res)
        blob = {"facts": facts, "results": results}
        (out / "results.json").write_text(json.dumps(blob, indent=1, default=str))
    facts["tier CPU shares"] = ", ".join(
        f"{t} {adjusted[0].tier(t).cpus} CPU / {adjusted[0].tier(t).threads} thread(s)"
        for t in ("device", "edge", "cloud")
    )
    facts["benchmark wall time"] = f"{time.monotonic() - t0:.0f} s"
    facts["command"] = "python benchmarks/bench_scenarios.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    blob = {"facts": facts, "results": results}
    (out / "results.json").write_text(json.dumps(blob, indent=1, default=str))
    draw_plots(results, out)
    path = write_report(results, out, facts)
    print(f"report: {path} ({time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
