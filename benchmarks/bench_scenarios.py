"""The scenario benchmark: the planned schedule against the baselines in the emulated testbed.

    sudo python benchmarks/bench_scenarios.py [--quick] [--out DIR] [--models NAME ...]
        [--runs NAME ...] [--no-fluctuating]

The real `cloud`, `serve` and `join` run inside the testbed (hiertrain_edge.emulate), in
TIER_CPUS (device 1/4 core, edge and cloud 3/4 core each: 1.75 of this 2-core host, so the
tiers never ask for more than the host has and the driver, tc and the kernel's network work
keep a quarter core; the shipped scenarios' 0.25 + 1 + 1 overcommits it, and a pipeline
whose edge and cloud both compute then runs slower than any profile says), once per
distinct schedule and model:

- planned: the job has no fixed schedule, so the runtime plans by itself (the tiers profile
  themselves, the edge builds the schedule table, the board picks each step's schedule
  from its probed bandwidths); its report carries the runtime's predicted_s for every step;
- device, edge, cloud: the whole model on one tier;
- two-tier: the planner's best two-tier split for each cell's rates (planning.plan's
  `best_two_tier` baseline; cells that share a split share a run).

A schedule runs once: where the planner chose a baseline's own schedule (device-only on a
2 Mbit/s uplink), planned takes that baseline run's numbers (`same_run_as`). Two runs of
one schedule differ only by what else the host did meanwhile (the report of 2026-12-03
measured 64:6:6 at 0.19 s in one run and 0.11-0.13 s in the other, on a host at load 4-7),
which is noise, not a difference between schedules.

A bandwidth grid (device<->edge x edge<->cloud rates) is one *sweep* per schedule: after a
warm-up at fast rates, the links step through the cells, `segment_s` each, with the clock
starting when training does (scenario `changes_from = "training"`), and every step is
assigned to the cell it ran in (its start from the sum of the earlier steps' measured_s;
steps within GUARD_S of a change are left out). So one start-up (processes, profiling,
table) serves every cell. The shipped fixed-rate scenarios (thin-wan, good-wan,
weak-uplink) are cells of the grid; the fluctuating scenario runs on its own, every
schedule over one cycle of its rate changes.

A cell's step time is the mean of its steps (their total over their count): a board held
to a quarter core by a 100 ms cfs period runs a step that fits in what is left of the
period at full speed and waits out the period otherwise, so single steps of one schedule
alternate between lengths and their median lands on one of them (64:6:6 on an idle host:
median 0.092 s, mean 0.078 s, the profile 0.080 s), while the mean is the rate the cost
model predicts. Medians are in results.json too.
Each run records the host's CPU pressure (/proc/pressure/cpu, the share of its wall time in
which some task waited for a CPU) and load average, so a run that other work slowed down
shows in the report.

Baselines' predictions come from profiles this benchmark measures itself inside each
tier's namespace and CPU share (`quick_profile`, the same call the runtime makes),
PROFILE_ROUNDS times, each tier keeping the round whose whole-batch step is the median (one
quick profile can be 40% off when something else ran meanwhile: a board's 0.117 s against
the 0.080 s it trains at), at the cell's rates, with the scenario's delays only where the
kernel has netem. The planned run's predictions are the runtime's own.

DIR/report.md holds the tables and the issue's targets, met or missed; DIR/*.png the
plots; DIR/results.json every number; DIR/<model>/<run>/ each run's logs and report.
`--quick` is the CI smoke variant: small_cnn, two cells, three schedules.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hiertrain_edge.emulate import runner  # noqa: E402
from hiertrain_edge.emulate.netns import Testbed, require_root  # noqa: E402
from hiertrain_edge.emulate.runner import run_scenario  # noqa: E402
from hiertrain_edge.emulate.scenario import (  # noqa: E402
    Scenario,
    load_scenario,
    scenario_from_dict,
)
from hiertrain_edge.errors import HierTrainError  # noqa: E402
from hiertrain_edge.planning.cost import Links, predict  # noqa: E402
from hiertrain_edge.planning.planner import plan  # noqa: E402
from hiertrain_edge.planning.schedule import Schedule  # noqa: E402
from hiertrain_edge.profiling.measure import CPU_SHARE_ENV  # noqa: E402
from hiertrain_edge.profiling.profile import parse_profile  # noqa: E402

log = logging.getLogger("bench_scenarios")

PLANNED = "planned"
BASELINE_RUNS = ("device", "edge", "cloud", "two-tier")
ALL_RUNS = (PLANNED, *BASELINE_RUNS)
NEAR_BEST_TOLERANCE = 0.05  # planned may be at most 5% slower than the best baseline
THIN_WAN_SPEEDUP_TARGET = 3.0
PREDICTION_ERROR_TARGET = 0.15
PROFILE_TIMEOUT_S = 900.0
FAST_MBPS = 1000.0  # warm-up and final-model delivery run at this rate on both links
GUARD_S = 1.0  # steps that start this soon after a rate change are left out
# Steps for a sweep: predicted duration x this. Too few steps lose the last cells, too
# many add steps at the fast final rates, which cost little; the named cells run first.
STEPS_MARGIN = 1.5
STOP_AFTER_BOARD_S = 1.5  # an idle tier (the cloud of device-only) is stopped this soon
TIERS_SCENARIO = "thin-wan"  # the shipped scenario whose tiers every run uses, in TIER_CPUS
# CPU shares of the tiers (cores): they fit in the host with a quarter core to spare (see
# the module docstring); a host with more cores could give the edge and cloud more.
TIER_CPUS = {"device": 0.25, "edge": 0.75, "cloud": 0.75}
PROFILE_ROUNDS = 3
PRESSURE = Path("/proc/pressure/cpu")
FLUCTUATING = "fluctuating-uplink"

# The grid: (up, down) Mbit/s per link; "up" is toward the cloud.
DE_RATES = {"2/10": (2.0, 10.0), "20": (20.0, 20.0), "100": (100.0, 100.0)}
EC_RATES = {"5/20": (5.0, 20.0), "100": (100.0, 100.0), "200": (200.0, 200.0)}
# The shipped fixed-rate scenarios are cells of the grid.
NAMED_CELLS = {
    "thin-wan": ("100", "5/20"),
    "good-wan": ("100", "200"),
    "weak-uplink": ("2/10", "100"),
}

# Per model: batch size, cells, seconds per cell, warm-up seconds. The big models take
# seconds per step on a quarter core, so they get a small batch and the named cells only.
MODELS: dict[str, dict[str, Any]] = {
    "small_cnn": {"batch_size": 64, "cells": "grid", "segment_s": 4.0, "warmup_s": 3.0},
    "vgg11": {
        "batch_size": 16,
        "cells": ["thin-wan", "weak-uplink"],
        "segment_s": 8.0,
        "warmup_s": 5.0,
    },
    "mobilenetv2": {
        "batch_size": 16,
        "cells": ["thin-wan"],
        "segment_s": 8.0,
        "warmup_s": 5.0,
    },
}
QUICK_MODEL = {"batch_size": 32, "cells": ["thin-wan", "weak-uplink"], "segment_s": 4.0,
               "warmup_s": 3.0}  # fmt: skip
QUICK_RUNS = (PLANNED, "cloud", "two-tier")
FLUCTUATING_RUNS = (PLANNED, "device", "edge", "cloud")  # two-tier: in the grid
SYNTHETIC_SAMPLES = 1024  # the 3x32x32 models train on seeded random images

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


# --- cells and profiles --------------------------------------------------------------------


def cell_name(de: str, ec: str) -> str:
    return f"de {de} x ec {ec}"


def cells_of(model_cfg: dict[str, Any]) -> list[tuple[str, str]]:
    """The model's cells, the shipped scenarios' first."""
    if model_cfg["cells"] == "grid":
        grid = [(de, ec) for de in DE_RATES for ec in EC_RATES]
        first = [c for c in NAMED_CELLS.values() if c in grid]
        return first + [c for c in grid if c not in first]
    return [NAMED_CELLS[n] for n in model_cfg["cells"]]


def named(de: str, ec: str) -> str | None:
    return next((n for n, c in NAMED_CELLS.items() if c == (de, ec)), None)


def cell_links(de: str, ec: str, latency: tuple[float, float]) -> Links:
    (du, dd), (eu, ed) = DE_RATES[de], EC_RATES[ec]
    return Links(du, dd, eu, ed, *latency)


def with_tier_cpus(scenario: Scenario) -> Scenario:
    """`scenario` with the benchmark's TIER_CPUS in place of its tiers' CPU shares."""
    data = scenario.model_dump()
    for tier, cpus in TIER_CPUS.items():
        data["tiers"][tier]["cpus"] = cpus
    return scenario_from_dict(data, scenario.name)


def whole_batch_s(profile: Any) -> float:
    """A measured profile's forward and backward of every unit at its largest batch."""
    n = profile.batch_size or 1
    return sum(u.fwd.a_s + u.bwd.a_s + n * (u.fwd.b_s + u.bwd.b_s) for u in profile.units)


def profile_tiers(scenario: Scenario, out: Path) -> tuple[dict[str, Any], bool]:
    """Each tier's profile: PROFILE_ROUNDS rounds of `profile_round`, each tier keeping the
    round whose whole-batch step is the median; and whether the kernel has netem."""
    rounds = [profile_round(scenario, out / f"round{k}") for k in range(PROFILE_ROUNDS)]
    netem = rounds[0][1]
    profiles = {}
    for tier in ("device", "edge", "cloud"):
        ranked = sorted((whole_batch_s(r[0][tier]), k) for k, r in enumerate(rounds))
        _, k = ranked[len(ranked) // 2]
        profiles[tier] = rounds[k][0][tier]
        (out / f"{tier}.profile.json").write_text(profiles[tier].model_dump_json())
        log.info(
            "%s: whole batch %s s in the rounds, round %d kept",
            tier,
            " / ".join(f"{whole_batch_s(r[0][tier]):.4f}" for r in rounds),
            k,
        )
    return profiles, netem


def profile_round(scenario: Scenario, out: Path) -> tuple[dict[str, Any], bool]:
    """Each tier's profile, measured inside its namespace with its thread count: device
    and edge together, then the cloud; and whether the kernel has netem (else the
    scenario's delays are not applied).

    A tier below one core profiles in CPU time over its share (profiling/measure.py's
    Clock), which the quota does not change, so it runs with a whole core here: four
    times faster for the board, the same profile.
    """
    out.mkdir(parents=True, exist_ok=True)
    script = out / "profile_tier.py"
    script.write_text(PROFILE_SCRIPT)
    cpus = {t: max(c, runner.STARTUP_CPUS) for t, c in scenario.cpu_shares().items()}
    testbed = Testbed(links=scenario.link_shapes(), cpus=cpus)
    with testbed:
        for batch in (("device", "edge"), ("cloud",)):
            procs = {}
            for tier in batch:
                threads = scenario.tier(tier).threads
                argv = [sys.executable, str(script), json.dumps(scenario.job)]
                argv += [str(threads), tier, str(out / f"{tier}.profile.json")]
                env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
                if scenario.tier(tier).cpus is not None:
                    env[CPU_SHARE_ENV] = str(scenario.tier(tier).cpus)
                procs[tier] = testbed.popen(tier, argv, env=env)
            for tier, proc in procs.items():
                if proc.wait(timeout=PROFILE_TIMEOUT_S) != 0:
                    raise HierTrainError(f"profiling the {tier} failed (exit {proc.returncode})")
        netem = bool(testbed.netem)
    profiles = {
        t: parse_profile(json.loads((out / f"{t}.profile.json").read_text()), t)
        for t in ("device", "edge", "cloud")
    }
    return profiles, netem


def synthetic_data(out: Path, shape: tuple[int, ...]) -> str:
    """Seeded random uint8 images and labels, as an .npz the board can load."""
    path = out / f"synthetic-{'x'.join(map(str, shape))}.npz"
    if not path.exists():
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, size=(SYNTHETIC_SAMPLES, *shape), dtype=np.uint8)
        y = rng.integers(0, 10, size=SYNTHETIC_SAMPLES, dtype=np.int64)
        out.mkdir(parents=True, exist_ok=True)
        np.savez(path, x=x, y=y)
    return str(path)


def schedule_flag(schedule: Schedule) -> str:
    return ",".join(f"{g.n}:{g.c1}:{g.c2}" for g in schedule.groups)


def fixed_flags(num_units: int, batch: int) -> dict[str, str]:
    n = num_units
    return {"device": f"{batch}:{n}:{n}", "edge": f"{batch}:0:{n}", "cloud": f"{batch}:0:0"}


def _pred(flag: str, spec: Any, profiles: dict[str, Any], links: Links) -> float | None:
    t = predict(Schedule.parse(flag), spec, profiles, links)
    return t if math.isfinite(t) else None


# --- one run ---------------------------------------------------------------------------------


def cpu_pressure_us() -> float | None:
    """Microseconds in which some task waited for a CPU since boot (PSI), None without PSI."""
    try:
        for line in PRESSURE.read_text().splitlines():
            if line.startswith("some "):
                return float(line.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def step_s(r: dict[str, Any]) -> float | None:
    """A run's or cell's step time: the mean of its steps (see the module docstring)."""
    return r.get("mean_step_s") or r.get("median_step_s")


def run_one(scenario: Scenario, choice: str, flag: str, out: Path) -> dict[str, Any]:
    """Run one schedule; the run's numbers, or its error (the benchmark goes on)."""
    t0 = time.monotonic()
    stall0 = cpu_pressure_us()
    try:
        result = run_scenario(scenario, out, schedule=flag, log_level="info")
    except HierTrainError as exc:
        reason = failure_reason(str(exc))
        log.error("%s / %s failed: %s", scenario.name, choice, reason)
        return {"schedule": choice, "error": reason, "run_dir": str(out)}
    report = json.loads(Path(result.report_path).read_text()) if result.report_path else {}
    wall = time.monotonic() - t0
    stall1 = cpu_pressure_us()
    measured = [it["measured_s"] for it in report.get("iterations", [])[1:]]
    row = {
        "schedule": choice,
        "flag": flag,
        "median_step_s": result.median_step_s,
        "mean_step_s": statistics.mean(measured) if measured else None,
        # share of the run's wall time in which some task waited for a CPU
        "cpu_pressure": (
            (stall1 - stall0) / 1e6 / wall if stall0 is not None and stall1 is not None else None
        ),
        "load1_end": round(os.getloadavg()[0], 2),
        "runtime_predicted_s": result.median_predicted_s,
        "runtime_abs_error": result.median_abs_error,
        "steps": result.steps,
        "wall_s": round(wall, 1),
        "run_dir": str(out),
        "timeline_origin_s": result.timeline_origin_s,
        "rate_log": result.rate_log,
        "iterations": report.get("iterations", []),
        "step_offsets": step_offsets(out, report.get("iterations", [])),
        "schedule_changes": report.get("schedule_changes", []),
        "report_schedule": report.get("schedule"),
    }
    log.info(
        "%s / %s: mean step %.4f s, median %.4f s (%d steps, %.0f s wall, CPU pressure %s)",
        scenario.name,
        choice,
        row["mean_step_s"] or math.nan,
        row["median_step_s"] or math.nan,
        row["steps"],
        row["wall_s"],
        _fmt(row["cpu_pressure"], ".0%"),
    )
    return row


def failure_reason(text: str) -> str:
    """The runner's first line plus the last error a tier logged (the why)."""
    lines = text.splitlines()
    for line in reversed(lines[1:]):
        if "error:" in line or " ERROR " in line:
            return f"{lines[0]}: {line.strip()[:240]}"
    return lines[0] if lines else text


def known_schedules(row: dict[str, Any]) -> dict[str, Schedule]:
    known = {}
    if row.get("report_schedule"):
        first = Schedule.from_dict(row["report_schedule"])
        known[first.schedule_id()] = first
    for change in row.get("schedule_changes", []):
        for key in ("from_schedule", "to_schedule"):
            if change.get(key):
                sched = Schedule.from_dict(change[key])
                known[sched.schedule_id()] = sched
    return known


_STAMP = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) "
# runtime/device.py's Progress line, logged when a step ends: "step 25/198 loss ..."
PROGRESS_RE = re.compile(_STAMP + r"INFO \[device step \d+\] \S+: step (\d+)/\d+ loss ", re.M)
STARTED_RE = re.compile(_STAMP + r".*" + runner.TRAINING_STARTED_RE.pattern, re.M)
BOARD_RE = re.compile(_STAMP + r".*" + runner.BOARD_TRAINS_RE.pattern, re.M)


def _stamp_s(text: str) -> float:
    return time.mktime(time.strptime(text[:19], "%Y-%m-%d %H:%M:%S")) + int(text[20:]) / 1000


def step_offsets(run_dir: Path, iterations: list[dict[str, Any]]) -> list[list[float]]:
    """[steps done, seconds] pairs: how much later than the sum of the earlier steps'
    measured_s each logged step ended, on the changes' clock (which starts when the
    edge's "job started" and the board's "job ...: model" lines are both logged).

    The runner's clock used to start at the edge's line alone, 4.6-5.4 s before a
    quarter-core board's first step, so steps counted from the clock's start landed a
    whole 4 s cell early; the board still runs a little after its line (step 0 may wait
    for the table in a planned run) and some time passes between steps outside
    measured_s, which these offsets take out.
    """
    try:
        edge = (run_dir / "edge.log").read_text(errors="replace")
        board = (run_dir / "device.log").read_text(errors="replace")
    except OSError:
        return []
    started, joined = STARTED_RE.search(edge), BOARD_RE.search(board)
    if started is None or joined is None:
        return []
    origin = max(_stamp_s(started.group(1)), _stamp_s(joined.group(1)))
    ends = [0.0]
    for it in iterations:
        ends.append(ends[-1] + it["measured_s"])
    out = []
    for m in PROGRESS_RE.finditer(board):
        done = int(m.group(2))
        if done < len(ends):
            out.append([done, round(_stamp_s(m.group(1)) - origin - ends[done], 3)])
    return out


def step_windows(row: dict[str, Any]) -> list[tuple[float, float, dict[str, Any]]]:
    """(start, end, iteration) per step, in seconds on the changes' clock: the sum of the
    earlier steps' measured_s, moved by the offset of the next logged step end (the last
    one after it)."""
    marks = row.get("step_offsets") or [[0, 0.0]]
    t, out, j = 0.0, [], 0
    for k, it in enumerate(row.get("iterations", [])):
        while j + 1 < len(marks) and marks[j][0] < k + 1:
            j += 1
        shift = marks[j][1]
        out.append((t + shift, t + shift + it["measured_s"], it))
        t += it["measured_s"]
    return out


def split_by_cell(
    row: dict[str, Any], windows: list[tuple[str, float, float]]
) -> dict[str, list[dict[str, Any]]]:
    """The steps of a sweep run that ran wholly inside each cell's window (after GUARD_S);
    never the first step (connections, the step-0 snapshot, first-touch allocations)."""
    out: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in windows}
    for start, end, it in step_windows(row)[1:]:
        for name, lo, hi in windows:
            if start >= lo + GUARD_S and end <= hi:
                out[name].append(it)
    return out


def cell_numbers(its: list[dict[str, Any]], known: dict[str, Schedule]) -> dict[str, Any]:
    if not its:
        return {"steps": 0, "mean_step_s": None, "median_step_s": None}
    ids = [it["schedule_id"] for it in its]
    top = max(set(ids), key=ids.count)
    pairs = [(it["measured_s"], it["predicted_s"]) for it in its if it.get("predicted_s")]
    return {
        "steps": len(its),
        "mean_step_s": statistics.mean(it["measured_s"] for it in its),
        "median_step_s": statistics.median(it["measured_s"] for it in its),
        "runtime_predicted_s": statistics.median(p for _, p in pairs) if pairs else None,
        "runtime_abs_error": (
            statistics.median(abs(m / p - 1) for m, p in pairs) if pairs else None
        ),
        "schedule_used": schedule_flag(known[top]) if top in known else None,
        "schedules_used": len(set(ids)),
    }


# --- sweeps ----------------------------------------------------------------------------------


def sweep_scenario(
    base: Scenario,
    model: str,
    cfg: dict[str, Any],
    cells: list[tuple[str, str]],
    steps: int,
    data: str | None,
    name: str,
) -> tuple[Scenario, list[tuple[str, float, float]]]:
    """`base`'s tiers, fast links for the warm-up, then each cell for segment_s, then fast
    links again (the final model's delivery); the cells' windows on the changes' clock."""
    seg, warm = cfg["segment_s"], cfg["warmup_s"]
    changes, windows = [], []
    for k, (de, ec) in enumerate(cells):
        at = warm + k * seg
        (du, dd), (eu, ed) = DE_RATES[de], EC_RATES[ec]
        changes.append({"at_s": at, "link": "de", "up_mbps": du, "down_mbps": dd})
        changes.append({"at_s": at, "link": "ec", "up_mbps": eu, "down_mbps": ed})
        windows.append((cell_name(de, ec), at, at + seg))
    end = warm + len(cells) * seg
    for link in ("de", "ec"):
        changes.append({"at_s": end, "link": link, "up_mbps": FAST_MBPS, "down_mbps": FAST_MBPS})
    fast = {"up_mbps": FAST_MBPS, "down_mbps": FAST_MBPS}
    job = {
        "model": model,
        "batch_size": cfg["batch_size"],
        "steps": steps,
        "seed": 0,
        # Snapshots only at step 0 (in the warm-up): a periodic 78 MB snapshot of VGG-11
        # over a 2 Mbit/s uplink is not a step's cost.
        "checkpoint_every": steps + 1,
    }
    run = {**base.run.model_dump(), "changes_from": "training", "test_fraction": 0.0}
    if data:
        run["data"] = data
    scn = scenario_from_dict(
        {
            "name": name,
            "description": f"{model}: {len(cells)} cell(s) of {seg:g} s after {warm:g} s warm-up",
            "timeout_s": 600 + 3 * end,
            "job": job,
            "run": run,
            "tiers": {t: s.model_dump() for t, s in base.tiers.items()},
            "links": {"de": fast, "ec": fast},
            "changes": changes,
        },
        name,
    )
    return scn, windows


def sweep_steps(preds: list[float | None], cfg: dict[str, Any], fast: float | None) -> int:
    """Steps that cover the warm-up and every cell at the predicted step times, x margin."""
    total = cfg["warmup_s"] / (fast or 0.1)
    for p in preds:
        total += cfg["segment_s"] / max(p or 1.0, 1e-3)
    return int(math.ceil(total * STEPS_MARGIN)) + 2


def bench_model(
    model: str,
    cfg: dict[str, Any],
    base: Scenario,
    runs: tuple[str, ...],
    out: Path,
) -> dict[str, Any]:
    """Every schedule of `runs` over the model's cells; per cell, every run's numbers."""
    batch = cfg["batch_size"]
    probe_scn = scenario_from_dict(
        {**base.model_dump(), "job": {"model": model, "batch_size": batch, "steps": 1}}, model
    )
    spec = probe_scn.the_job().spec()
    data = None
    if tuple(spec.input_shape) != (1, 28, 28):
        data = synthetic_data(out.parent / "data", tuple(spec.input_shape))
    log.info("%s: profiling the tiers in their CPU shares", model)
    t0 = time.monotonic()
    profiles, netem = profile_tiers(probe_scn, out / "profiles")
    profile_s = time.monotonic() - t0
    latency = (0.0, 0.0)  # no netem: the testbed adds no delay, so neither does the model
    cells = cells_of(cfg)
    fast_links = Links(FAST_MBPS, FAST_MBPS, FAST_MBPS, FAST_MBPS, *latency)

    # The planner's view of every cell: its schedule and the best two-tier split.
    flags = fixed_flags(spec.num_units, batch)
    plans: dict[str, dict[str, Any]] = {}
    for de, ec in cells:
        links = cell_links(de, ec, latency)
        p = plan(spec, profiles, links, batch)
        two = p.baseline_schedules.get("best_two_tier")
        plans[cell_name(de, ec)] = {
            "links": links.__dict__,
            "planned": p.schedule.describe(),
            "planned_flag": schedule_flag(p.schedule),
            "planned_predicted_s": p.predicted_s if math.isfinite(p.predicted_s) else None,
            "two_tier_flag": schedule_flag(two) if two is not None else None,
            "offline": {k: _pred(f, spec, profiles, links) for k, f in flags.items()},
        }
        if two is not None:
            plans[cell_name(de, ec)]["offline"]["two-tier"] = _pred(
                schedule_flag(two), spec, profiles, links
            )

    # One sweep per fixed schedule; planned and two-tier: one per distinct schedule, over
    # the cells where the planner chose it. The whole-model baselines run first, so that a
    # planned or two-tier schedule that is one of them takes its run (`same_run_as`).
    jobs: list[tuple[str, str, list[tuple[str, str]]]] = []
    for choice in sorted(runs, key=lambda r: (r in (PLANNED, "two-tier"), r == PLANNED)):
        if choice in (PLANNED, "two-tier"):
            key = "planned_flag" if choice == PLANNED else "two_tier_flag"
            by_flag: dict[str, list[tuple[str, str]]] = {}
            for de, ec in cells:
                f = plans[cell_name(de, ec)][key]
                if f:
                    by_flag.setdefault(f, []).append((de, ec))
            jobs += [(choice, f, cs) for f, cs in by_flag.items()]
        else:
            jobs.append((choice, flags[choice], cells))

    rows: list[dict[str, Any]] = []
    for k, (choice, flag, cs) in enumerate(jobs):
        names = [cell_name(*c) for c in cs]
        same = next(
            (
                r
                for r in rows
                if r.get("flag") == flag and "error" not in r and set(names) <= set(r["cells"])
            ),
            None,
        )
        if same is not None:
            per = {c: dict(same["per_cell"][c]) for c in names}
            rows.append({"schedule": choice, "flag": flag, "same_run_as": same["schedule"],
                         "cells": names, "per_cell": per, "steps": same["steps"],
                         "wall_s": 0.0, "run_dir": same["run_dir"]})  # fmt: skip
            log.info("%s / %s: %s is the %s run's schedule", model, choice, flag, same["schedule"])
            continue
        preds = [_pred(flag, spec, profiles, cell_links(*c, latency)) for c in cs]
        steps = sweep_steps(preds, cfg, _pred(flag, spec, profiles, fast_links))
        tag = choice if choice in ("device", "edge", "cloud") else f"{choice}-{k}"
        scn, windows = sweep_scenario(base, model, cfg, cs, steps, data, f"{model}-{tag}")
        row = run_one(scn, choice, flag, out / tag)
        row["cells"] = [w[0] for w in windows]
        if "error" not in row:
            known = known_schedules(row)
            per_cell = split_by_cell(row, windows)
            row["per_cell"] = {c: cell_numbers(its, known) for c, its in per_cell.items()}
            for c, nums in row["per_cell"].items():
                links = Links(**plans[c]["links"])
                nums["offline_predicted_s"] = _pred(flag, spec, profiles, links)
        rows.append(row)

    # Per cell: every schedule's numbers side by side.
    table = {}
    for de, ec in cells:
        c = cell_name(de, ec)
        entry: dict[str, Any] = {"de": de, "ec": ec, "named": named(de, ec), "runs": {}}
        for row in rows:
            if c in row.get("cells", []):
                if "error" in row:
                    entry["runs"][row["schedule"]] = {"error": row["error"]}
                else:
                    entry["runs"][row["schedule"]] = {"flag": row["flag"], **row["per_cell"][c]}
        entry["summary"] = summarize_cell(entry["runs"])
        table[c] = entry
    return {
        "model": model,
        "batch_size": batch,
        "segment_s": cfg["segment_s"],
        "warmup_s": cfg["warmup_s"],
        "netem": netem,
        "profile_s": round(profile_s, 1),
        "plans": plans,
        "runs": rows,
        "cells": table,
    }


def phase_errors(fluct: dict[str, Any]) -> list[float]:
    """|mean measured / mean predicted - 1| of the planned run in each phase of the cycle
    (its steps after GUARD_S, as the grid's cells): the runtime prices the snapshot at its
    mean per step, so one step is compared with that mean only over many steps."""
    row = next((r for r in fluct["runs"] if r.get("schedule") == PLANNED), None)
    if row is None or "error" in row:
        return []
    bounds = [at for at, _ in fluct["phases"]] + [fluct["cycle_s"]]
    spans = zip(bounds, bounds[1:], strict=False)
    windows = [(str(k), lo, hi) for k, (lo, hi) in enumerate(spans)]
    errors = []
    for its in split_by_cell(row, windows).values():
        pairs = [(it["measured_s"], it["predicted_s"]) for it in its if it.get("predicted_s")]
        if pairs:
            measured = statistics.mean(m for m, _ in pairs)
            errors.append(abs(measured / statistics.mean(p for _, p in pairs) - 1))
    return errors


def summarize_cell(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    t = {k: step_s(r) for k, r in runs.items()}
    baselines = {k: v for k, v in t.items() if k != PLANNED and v}
    best = min(baselines, key=baselines.get) if baselines else None
    planned = t.get(PLANNED)
    errors = {}
    for k, r in runs.items():
        if r.get("runtime_abs_error") is not None:  # the runtime's own, per step
            errors[k] = r["runtime_abs_error"]
        elif step_s(r) and r.get("offline_predicted_s"):
            errors[k] = abs(step_s(r) / r["offline_predicted_s"] - 1)
    return {
        "best_baseline": best,
        "planned_vs_best": planned / baselines[best] if planned and best else None,
        "speedup_vs_cloud": t["cloud"] / planned if planned and t.get("cloud") else None,
        "planned_abs_error": errors.get(PLANNED),
        "median_abs_error_all": statistics.median(errors.values()) if errors else None,
    }


# --- the fluctuating scenario -----------------------------------------------------------------


def bench_fluctuating(
    scenario: Scenario, runs: tuple[str, ...], profiles: dict[str, Any], out: Path
) -> dict[str, Any]:
    """Every schedule over one cycle of the scenario's rate changes, clocked from training."""
    job = scenario.the_job()
    spec, batch = job.spec(), job.batch_size
    shapes = scenario.link_shapes()
    phases = [(0.0, {n: (s.up_mbps, s.down_mbps) for n, s in shapes.items()})]
    for ch in scenario.timeline():
        rates = {k: tuple(v) for k, v in phases[-1][1].items()}
        rates[ch.link] = (ch.up_mbps or rates[ch.link][0], ch.down_mbps or rates[ch.link][1])
        phases.append((ch.at_s, rates))
    cycle_s = phases[-1][0] + (phases[-1][0] - phases[-2][0] if len(phases) > 1 else 10.0)

    def links_of(r: dict[str, tuple[float, float]]) -> Links:
        return Links(r["de"][0], r["de"][1], r["ec"][0], r["ec"][1])

    flags = fixed_flags(spec.num_units, batch)
    p0 = plan(spec, profiles, links_of(phases[0][1]), batch)
    two = p0.baseline_schedules.get("best_two_tier")
    if two is not None:
        flags["two-tier"] = schedule_flag(two)
    rows = []
    for choice in runs:
        if choice != PLANNED and choice not in flags:
            rows.append({"schedule": choice, "error": "the planner found no feasible split"})
            continue
        # Steps for one cycle at the predicted step time of each phase.
        total = 0.0
        for k, (at, rates) in enumerate(phases):
            length = (phases[k + 1][0] if k + 1 < len(phases) else cycle_s) - at
            if choice == PLANNED:
                t = plan(spec, profiles, links_of(rates), batch).predicted_s
            else:
                t = _pred(flags[choice], spec, profiles, links_of(rates))
            total += length / max(t or 1.0, 1e-3)
        steps = int(math.ceil(total * 1.1)) + 2
        scn = scenario_from_dict(
            {
                **scenario.model_dump(),
                "job": {**scenario.job, "steps": steps},
                "run": {
                    **scenario.run.model_dump(),
                    "changes_from": "training",
                    "test_fraction": 0.0,
                },
            },
            scenario.name,
        )
        flag = PLANNED if choice == PLANNED else flags[choice]
        row = run_one(scn, choice, flag, out / choice)
        if "error" not in row and choice != PLANNED:
            row["offline_predicted_s"] = None  # one rate does not hold for the whole run
        rows.append(row)
    runs_by = {
        r["schedule"]: {
            "median_step_s": r.get("median_step_s"),
            "mean_step_s": r.get("mean_step_s"),
            "runtime_abs_error": r.get("runtime_abs_error"),
            "runtime_predicted_s": r.get("runtime_predicted_s"),
        }
        for r in rows
        if "error" not in r
    }
    return {
        "scenario": scenario.name,
        "description": scenario.description,
        "model": spec.name,
        "batch_size": batch,
        "cycle_s": cycle_s,
        "phases": [[at, {k: list(v) for k, v in r.items()}] for at, r in phases],
        "best_two_tier": flags.get("two-tier"),
        "runs": rows,
        "summary": summarize_cell(runs_by),
    }


# --- report ----------------------------------------------------------------------------------


def _fmt(x: float | None, spec: str = ".3f", unit: str = "") -> str:
    return "n/a" if x is None or not math.isfinite(x) else format(x, spec) + unit


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def write_report(data: dict[str, Any], out: Path) -> Path:
    facts, models, fluct = data["facts"], data["models"], data.get("fluctuating")
    lines = ["# Scenario benchmark", ""]
    lines += [f"- {k}: {v}" for k, v in facts.items()]
    lines += [
        "",
        "Step times are means of the board's measured_s per cell (a quarter-core board's "
        "single steps alternate between a full-speed and a throttled length, so the mean, "
        "not the median, is its rate; medians are in results.json). A planned schedule "
        "that is a baseline's own takes that baseline's run. A grid cell is a "
        "segment of a sweep run (see the module docstring of benchmarks/bench_scenarios.py): "
        f"steps within {GUARD_S:g} s of a rate change are left out. In the grid, planned is "
        "the planner's schedule for the cell's rates (from profiles the benchmark measured "
        "in the tiers' CPU shares), run as a fixed schedule; the runtime's own planning "
        "(its profiles, its table, its probes, its predictions) runs in the fluctuating "
        "scenario. Prediction error: |measured/predicted - 1| of the cell's mean against "
        "the cost model's prediction at the cell's rates (fluctuating: median over the "
        "planned run's steps against the runtime's per-step prediction). Rates are up/down "
        "Mbit/s (up: toward the cloud).",
        "",
        "## Summary",
        "",
        "| model | cell | planned s | device s | edge s | cloud s | two-tier s | best baseline "
        "| planned / best | speedup vs cloud | planned err | all-runs err |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in models:
        for c, e in m["cells"].items():
            s = e["summary"]
            label = f"{c} ({e['named']})" if e["named"] else c
            t = {k: step_s(r) for k, r in e["runs"].items()}
            lines.append(
                f"| {m['model']} | {label} | "
                + " | ".join(_fmt(t.get(k)) for k in ALL_RUNS)
                + f" | {s['best_baseline'] or 'n/a'} | {_fmt(s['planned_vs_best'], '.2f')} | "
                f"{_fmt(s['speedup_vs_cloud'], '.2f', 'x')} | "
                f"{_fmt(s['planned_abs_error'], '.1%')} | "
                f"{_fmt(s['median_abs_error_all'], '.1%')} |"
            )
    if fluct:
        s = fluct["summary"]
        t = {r["schedule"]: step_s(r) for r in fluct["runs"]}
        lines.append(
            f"| {fluct['model']} | {fluct['scenario']} (whole cycle) | "
            + " | ".join(_fmt(t.get(k)) for k in ALL_RUNS)
            + f" | {s['best_baseline'] or 'n/a'} | {_fmt(s['planned_vs_best'], '.2f')} | "
            f"{_fmt(s['speedup_vs_cloud'], '.2f', 'x')} | {_fmt(s['planned_abs_error'], '.1%')} "
            f"| {_fmt(s['median_abs_error_all'], '.1%')} |"
        )

    lines += ["", "## Targets", ""]
    missed = 0
    for m in models:
        for c, e in m["cells"].items():
            s, where = (
                e["summary"],
                f"{m['model']}, {c}" + (f" ({e['named']})" if e["named"] else ""),
            )
            if s["planned_vs_best"] is not None:
                ok = s["planned_vs_best"] <= 1 + NEAR_BEST_TOLERANCE
                missed += not ok
                flags = {k: r.get("flag") for k, r in e["runs"].items()}
                same = flags.get(PLANNED) == flags.get(s["best_baseline"])
                lines.append(
                    f"- {where}: planned within 5% of the best baseline ({s['best_baseline']}): "
                    f"{_verdict(ok)} ({s['planned_vs_best']:.2f}x)"
                    + (
                        f"; the planner chose the {s['best_baseline']} schedule itself "
                        f"({flags[PLANNED]}): one run serves both"
                        if same
                        else ""
                    )
                )
            if e["named"] == "thin-wan" and s["speedup_vs_cloud"] is not None:
                ok = s["speedup_vs_cloud"] >= THIN_WAN_SPEEDUP_TARGET
                lines.append(
                    f"- {where}: at least 3x faster than cloud-only: {_verdict(ok)} "
                    f"({s['speedup_vs_cloud']:.2f}x)"
                )
        errs = [e["summary"]["planned_abs_error"] for e in m["cells"].values()]
        errs = [x for x in errs if x is not None]
        for e in m["cells"].values():
            err = e["summary"]["planned_abs_error"]
            if err is not None and e["named"]:
                lines.append(
                    f"- {m['model']}, {e['named']}: planned median |measured/predicted - 1| "
                    f"<= 15%: {_verdict(err <= PREDICTION_ERROR_TARGET)} ({err:.1%})"
                )
        if errs:
            bad = sum(x > PREDICTION_ERROR_TARGET for x in errs)
            lines.append(
                f"- {m['model']}: planned prediction error <= 15% in {len(errs) - bad} of "
                f"{len(errs)} cells (median over cells {statistics.median(errs):.1%})"
            )
    if fluct:
        s = fluct["summary"]
        if s["planned_vs_best"] is not None:
            ok = s["planned_vs_best"] <= 1 + NEAR_BEST_TOLERANCE
            lines.append(
                f"- {fluct['scenario']}: planned within 5% of the best baseline "
                f"({s['best_baseline']}): {_verdict(ok)} ({s['planned_vs_best']:.2f}x)"
            )
        errs = phase_errors(fluct)
        if errs:
            ok = statistics.median(errs) <= PREDICTION_ERROR_TARGET
            lines.append(
                f"- {fluct['scenario']}: planned median over the cycle's {len(errs)} phases of "
                f"|mean measured / mean predicted - 1| <= 15%: {_verdict(ok)} "
                f"({statistics.median(errs):.1%}; phases "
                + ", ".join(f"{e:.0%}" for e in errs)
                + ")"
            )
        if s["planned_abs_error"] is not None:
            lines.append(
                f"- {fluct['scenario']}: for comparison, the median over single steps of "
                f"|measured/predicted - 1| is {s['planned_abs_error']:.1%} (a step is "
                "compared with a mean that holds the snapshot's share)"
            )
    failed = [
        (m["model"], r["schedule"], r["error"]) for m in models for r in m["runs"] if "error" in r
    ]
    if fluct:
        failed += [(fluct["scenario"], r["schedule"], r["error"]) for r in fluct["runs"]
                   if "error" in r]  # fmt: skip
    lines.append(f"- failed runs: {len(failed)}")
    lines += [f"  - {a} / {b}: {c}" for a, b, c in failed]

    for m in models:
        lines += ["", f"## {m['model']}", ""]
        lines.append(
            f"batch {m['batch_size']}; {m['warmup_s']:g} s warm-up at {FAST_MBPS:g} Mbit/s, then "
            f"{m['segment_s']:g} s per cell; tiers profiled by the benchmark in "
            f"{m['profile_s']:g} s; netem: {'yes' if m['netem'] else 'no (no delays applied)'}."
        )
        pngs = [f"{m['model']}-speedup.png", f"{m['model']}-bars.png"]
        lines += [""] + [f"![{p}]({p})" for p in pngs if (out / p).exists()]
        lines += [
            "",
            "| cell | planner's schedule (n:c1:c2) | best two-tier | predicted s (planned / "
            "device / edge / cloud / two-tier) | measured / predicted |",
            "|---|---|---|---|---|",
        ]
        for c, e in m["cells"].items():
            p = m["plans"][c]
            offl, ratio = [], []
            for k in ALL_RUNS:
                r = e["runs"].get(k, {})
                offl.append(r.get("offline_predicted_s"))
                ok = step_s(r) and r.get("offline_predicted_s")
                ratio.append(step_s(r) / r["offline_predicted_s"] if ok else None)
            lines.append(
                f"| {c} | {p['planned_flag']} | {p['two_tier_flag']} | "
                + " / ".join(_fmt(x, ".4f") for x in offl)
                + " | "
                + " / ".join(_fmt(x, ".2f") for x in ratio)
                + " |"
            )
        lines += [
            "",
            "| run | schedule | steps | wall s | CPU pressure | load (1 min) at end "
            "| cells (steps in each) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in m["runs"]:
            if "error" in r:
                lines.append(f"| {r['schedule']} | FAILED: {r['error']} | | | | | |")
                continue
            if r.get("same_run_as"):
                lines.append(
                    f"| {r['schedule']} | {r['flag']} | the {r['same_run_as']} run "
                    "(same schedule) | | | | |"
                )
                continue
            per = ", ".join(f"{c} ({v['steps']})" for c, v in r["per_cell"].items())
            lines.append(
                f"| {r['schedule']} | {r['flag']} | {r['steps']} | {r['wall_s']} | "
                f"{_fmt(r.get('cpu_pressure'), '.0%')} | {_fmt(r.get('load1_end'), '.2f')} "
                f"| {per} |"
            )
    if fluct:
        lines += ["", f"## {fluct['scenario']}", "", fluct["description"], ""]
        lines.append(
            f"{fluct['model']}, batch {fluct['batch_size']}; every run covers one "
            f"{fluct['cycle_s']:g} s cycle of the rate changes, clocked from its first step. "
            "planned is the runtime planning by itself (profiles, table, probes). Baselines "
            "have no single prediction (the rates change), so only planned is judged; the "
            "two-tier split is compared in the grid."
        )
        lines += [
            "",
            "| schedule | run as | mean measured s | median measured s | runtime predicted s "
            "| median err | steps | wall s | CPU pressure |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in fluct["runs"]:
            if "error" in r:
                lines.append(f"| {r['schedule']} | FAILED: {r['error']} | | | | | |")
                continue
            lines.append(
                f"| {r['schedule']} | {r['flag']} | {_fmt(r.get('mean_step_s'), '.4f')} | "
                f"{_fmt(r['median_step_s'], '.4f')} | {_fmt(r['runtime_predicted_s'], '.4f')} | "
                f"{_fmt(r['runtime_abs_error'], '.1%')} | {r['steps']} | {r['wall_s']} | "
                f"{_fmt(r.get('cpu_pressure'), '.0%')} |"
            )
        planned = next((r for r in fluct["runs"] if r["schedule"] == PLANNED), None)
        if planned and planned.get("iterations"):
            used = {i["schedule_id"] for i in planned["iterations"]}
            lines.append(
                f"\nplanned run: {len(used)} schedule(s) used, "
                f"{len(planned.get('schedule_changes', []))} switch(es)."
            )
        if (out / f"{fluct['scenario']}-timeline.png").exists():
            lines += ["", f"![timeline]({fluct['scenario']}-timeline.png)"]
    lines += ["", "## Predicted against measured", "", "![scatter](predicted-vs-measured.png)", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def draw_plots(data: dict[str, Any], out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no plots")
        return
    colors = {PLANNED: "#2ca02c", "device": "#1f77b4", "edge": "#ff7f0e", "cloud": "#7f7f7f",
              "two-tier": "#9467bd"}  # fmt: skip
    for m in data["models"]:
        cells = list(m["cells"])
        # Bars: every schedule per cell.
        fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(cells) + 2), 4))
        width = 0.16
        for k, run in enumerate(ALL_RUNS):
            vals = [step_s(m["cells"][c]["runs"].get(run, {})) or 0 for c in cells]
            xs = [i + (k - 2) * width for i in range(len(cells))]
            ax.bar(xs, vals, width, label=run, color=colors[run])
        ax.set_xticks(range(len(cells)))
        ax.set_xticklabels([c.replace(" x ", "\n") for c in cells], fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("mean step time (s)")
        ax.set_title(f"{m['model']}, batch {m['batch_size']}: step time per cell (Mbit/s)")
        ax.legend(fontsize=7, ncol=5)
        fig.tight_layout()
        fig.savefig(out / f"{m['model']}-bars.png", dpi=100)
        plt.close(fig)
        # Heat map of the speedup over cloud-only (grid models).
        des = sorted({e["de"] for e in m["cells"].values()}, key=lambda d: DE_RATES[d])
        ecs = sorted({e["ec"] for e in m["cells"].values()}, key=lambda d: EC_RATES[d])
        grid = np.full((len(des), len(ecs)), np.nan)
        for e in m["cells"].values():
            v = e["summary"]["speedup_vs_cloud"]
            if v:
                grid[des.index(e["de"]), ecs.index(e["ec"])] = v
        fig, ax = plt.subplots(figsize=(1.4 * len(ecs) + 2, 1.1 * len(des) + 1.5))
        ax.imshow(grid, cmap="Greens", origin="lower", aspect="auto")
        for i in range(len(des)):
            for j in range(len(ecs)):
                txt = "n/a" if np.isnan(grid[i, j]) else f"{grid[i, j]:.1f}x"
                ax.text(j, i, txt, ha="center", va="center", fontsize=9)
        ax.set_xticks(range(len(ecs)))
        ax.set_xticklabels(ecs)
        ax.set_yticks(range(len(des)))
        ax.set_yticklabels(des)
        ax.set_xlabel("edge<->cloud Mbit/s (up/down)")
        ax.set_ylabel("device<->edge Mbit/s")
        ax.set_title(f"{m['model']}: planned speedup over cloud-only", fontsize=9)
        fig.tight_layout()
        fig.savefig(out / f"{m['model']}-speedup.png", dpi=100)
        plt.close(fig)

    # Predicted against measured: every cell of every run.
    fig, ax = plt.subplots(figsize=(5.5, 5))
    lo, hi = math.inf, 0.0
    for m in data["models"]:
        for run in ALL_RUNS:
            xs, ys = [], []
            for e in m["cells"].values():
                r = e["runs"].get(run, {})
                pred = r.get("runtime_predicted_s") or r.get("offline_predicted_s")
                if pred and step_s(r):
                    xs.append(pred)
                    ys.append(step_s(r))
            if xs:
                ax.scatter(xs, ys, s=14, color=colors[run], alpha=0.7,
                           marker={"small_cnn": "o", "vgg11": "s"}.get(m["model"], "^"),
                           label=f"{m['model']} {run}")  # fmt: skip
                lo, hi = min(lo, *xs, *ys), max(hi, *xs, *ys)
    if hi > 0:
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.fill_between([lo, hi], [lo * 0.85, hi * 0.85], [lo * 1.15, hi * 1.15],
                        color="k", alpha=0.08, label="within 15%")  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("predicted step time (s)")
    ax.set_ylabel("measured step time (s)")
    ax.set_title("median per cell against the cost model at the cell's rates", fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "predicted-vs-measured.png", dpi=100)
    plt.close(fig)

    fluct = data.get("fluctuating")
    planned = fluct and next((r for r in fluct["runs"] if r["schedule"] == PLANNED), None)
    if planned and planned.get("iterations"):
        draw_fluct_timeline(fluct, planned, out / f"{fluct['scenario']}-timeline.png", plt)


def draw_fluct_timeline(fluct: dict[str, Any], row: dict[str, Any], path: Path, plt: Any) -> None:
    """Shaped rate and the board's estimate, schedule, and step time over the run's time."""
    wins = step_windows(row)
    t = [s for s, _, _ in wins]
    its = [it for _, _, it in wins]
    fig, (ax_bw, ax_s, ax_t) = plt.subplots(3, 1, figsize=(8, 6.5), sharex=True)
    for link, direction, style in (("de", "up", "-"), ("de", "down", ":"), ("ec", "up", "--")):
        pts = [
            e for e in row.get("rate_log", []) if e["link"] == link and e["direction"] == direction
        ]
        if pts:
            xs = [max(0.0, e["t_s"]) for e in pts] + [t[-1] if t else 0]
            ys = [e["mbps"] for e in pts] + [pts[-1]["mbps"]]
            ax_bw.step(xs, ys, where="post", ls=style, label=f"shaped {link} {direction}")
    for key, label in (("bw_de_mbps", "board's device<->edge estimate"),
                       ("bw_ec_mbps", "edge<->cloud estimate")):  # fmt: skip
        pts = [(x, it[key]) for x, it in zip(t, its, strict=True) if it.get(key)]
        if pts:
            ax_bw.plot(*zip(*pts, strict=True), ".", ms=3, label=label)
    ax_bw.set_yscale("log")
    ax_bw.set_ylabel("Mbit/s")
    ax_bw.legend(fontsize=6, loc="lower right")
    known = known_schedules(row)
    ids: list[str] = []
    for it in its:
        if it["schedule_id"] not in ids:
            ids.append(it["schedule_id"])
    ax_s.step(t, [ids.index(it["schedule_id"]) for it in its], where="post")
    ax_s.set_yticks(range(len(ids)))
    ax_s.set_yticklabels(
        [schedule_flag(known[i]) if i in known else i[:8] for i in ids], fontsize=6
    )
    ax_s.set_ylabel("schedule (n:c1:c2)")
    ax_t.plot(t, [it["measured_s"] for it in its], lw=0.8, label="measured")
    pts = [(x, it["predicted_s"]) for x, it in zip(t, its, strict=True) if it.get("predicted_s")]
    if pts:
        ax_t.plot(*zip(*pts, strict=True), "--", lw=0.8, label="runtime predicted")
    ax_t.set_yscale("log")
    ax_t.set_ylabel("step time (s)")
    ax_t.set_xlabel("seconds since the first step")
    ax_t.legend(fontsize=7)
    fig.suptitle(f"{fluct['scenario']}: planned run, {len(its)} steps", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
        "load average at start (1/5/15 min)": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke variant: small_cnn, two cells")
    ap.add_argument("--out", default="bench-scenarios", help="report folder")
    ap.add_argument("--models", nargs="*", choices=list(MODELS), help="default: all")
    ap.add_argument("--runs", nargs="*", choices=list(ALL_RUNS), help="default: all")
    ap.add_argument("--no-fluctuating", action="store_true", help="skip the fluctuating scenario")
    ap.add_argument("--from-results", action="store_true",
                    help="only redraw the report and plots from DIR/results.json")  # fmt: skip
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("hiertrain_edge.emulate.netns").setLevel(logging.ERROR)
    out = Path(args.out)
    if args.from_results:
        data = json.loads((out / "results.json").read_text())
        draw_plots(data, out)
        print(f"report: {write_report(data, out)}")
        return 0
    require_root()
    runner.STOP_AFTER_BOARD_S = STOP_AFTER_BOARD_S
    out.mkdir(parents=True, exist_ok=True)
    base = with_tier_cpus(load_scenario(TIERS_SCENARIO))

    if args.quick:
        models = {"small_cnn": QUICK_MODEL}
        runs = QUICK_RUNS
        with_fluct = False
    else:
        models = {m: MODELS[m] for m in (args.models or MODELS)}
        runs = ALL_RUNS
        with_fluct = not args.no_fluctuating
    if args.runs:
        runs = tuple(args.runs)

    t0 = time.monotonic()
    facts = machine_facts()
    facts["tier CPU shares"] = ", ".join(
        f"{t} {base.tier(t).cpus} CPU / {base.tier(t).threads} thread(s)"
        for t in ("device", "edge", "cloud")
    ) + (
        f" ({sum(TIER_CPUS.values()):g} of the host's {os.cpu_count()} cores: the rest for "
        "the driver, tc and the kernel's network work; the shipped scenarios ask for 2.25)"
    )
    data: dict[str, Any] = {"facts": facts, "models": []}
    for model, cfg in models.items():
        data["models"].append(bench_model(model, cfg, base, runs, out / model))
        (out / "results.json").write_text(json.dumps(data, indent=1, default=str))
    if with_fluct:
        scn = with_tier_cpus(load_scenario(FLUCTUATING))
        small = next((m for m in data["models"] if m["model"] == scn.the_job().model), None)
        if small is not None and small["batch_size"] == scn.the_job().batch_size:
            profiles = {
                t: parse_profile(
                    json.loads((out / "small_cnn" / "profiles" / f"{t}.profile.json").read_text()),
                    t,
                )
                for t in ("device", "edge", "cloud")
            }
        else:
            profiles, _ = profile_tiers(scn, out / FLUCTUATING / "profiles")
        fruns = tuple(r for r in runs if r in FLUCTUATING_RUNS)
        data["fluctuating"] = bench_fluctuating(scn, fruns, profiles, out / FLUCTUATING)
    facts["load average at end (1/5/15 min)"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    facts["benchmark wall time"] = f"{time.monotonic() - t0:.0f} s"
    facts["command"] = "python benchmarks/bench_scenarios.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    (out / "results.json").write_text(json.dumps(data, indent=1, default=str))
    draw_plots(data, out)
    path = write_report(data, out)
    print(f"report: {path} ({time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
