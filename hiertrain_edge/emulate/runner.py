"""Run a scenario: the real `cloud`, `serve` and `join` commands inside the testbed's namespaces.

The runner starts the three tiers with `ip netns exec`, each in its CPU share with its
torch thread count (a tier below one core gets its share once it is up), applies the
scenario's rate changes on time, and collects the board's `--report` together with what
it did to the links into `emulation.json`.

Which schedule runs is the caller's choice (`--schedule`): a fixed schedule, one of the
baselines, or "planned". "planned" asks the PLANNER hook; until a planner is plugged in the
hook returns None and the edge runs its own choice (the job's schedule, or its default).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hiertrain_edge.emulate.netns import Testbed
from hiertrain_edge.emulate.scenario import BASELINES, PLANNED, Scenario
from hiertrain_edge.errors import ConfigError, HierTrainError
from hiertrain_edge.models import ModelSpec
from hiertrain_edge.planning.schedule import Group, Schedule, device_only
from hiertrain_edge.profiling.measure import CPU_SHARE_ENV
from hiertrain_edge.runtime.demo import write_job_file
from hiertrain_edge.wire.transport import CLOUD_PORT, EDGE_PORT

log = logging.getLogger(__name__)

TIER_ORDER = ("cloud", "edge", "device")  # the order the tiers start in
POLL_S = 0.05
STOP_AFTER_BOARD_S = 30.0
LOG_TAIL_LINES = 8
# The edge logs this when a job's first step is about to run (runtime/edge.py), after the
# tiers profiled themselves and the table was built: the origin of changes_from="training".
TRAINING_STARTED_RE = re.compile(r"job \w+ started with ")
# ...and the board logs this when it has taken the job and built its units (runtime/
# device.py), right before its first step of a fixed schedule: a quarter-core board does
# that 4-5 s after the edge's line, so the clock waits for both.
BOARD_TRAINS_RE = re.compile(r"job \w+: model \S+, steps ")
# A tier held below STARTUP_CPUS starts with that much and gets its share once its log shows
# it up (imports and data loading of a quarter-core board take ~10 s and are no step's
# cost); what it logs then, per tier (runtime/device.py, edge.py, cloud.py).
STARTUP_CPUS = 1.0
UP_RE = {
    "device": re.compile(r"joining the edge"),
    "edge": re.compile(r"listening for boards"),
    "cloud": re.compile(r"listening for edges"),
}
# Key sets made in this process, by folder: `keys generate` starts a Python process per
# tier (seconds each on a loaded host), so the runs of one process share one set.
_KEYS_MADE: dict[str, Path] = {}

# The planner hook: given the scenario and its model, return the schedule to run, or None
# to let the edge decide. The planner issue replaces this with its own function (e.g. from
# fresh profiles and the scenario's initial link rates); the runner calls it per run.
SchedulePicker = Callable[[Scenario, ModelSpec], "Schedule | None"]


def _edge_decides(scenario: Scenario, spec: ModelSpec) -> Schedule | None:
    return None


PLANNER: SchedulePicker = _edge_decides


def baseline_schedules(num_units: int, batch_size: int) -> dict[str, Schedule]:
    """Every schedule the benchmark compares the planned one against, by name.

    device, edge and cloud train the whole model on one tier (raw samples travel to it);
    `de:C` runs units [0, C) on the device and the rest on the edge, `dc:C` the same with
    the cloud, `ec:C` runs [0, C) on the edge and the rest on the cloud.
    """
    n, b = num_units, batch_size
    out = {
        "device": device_only(n, b),
        "edge": Schedule((Group(b, 0, n),)),
        "cloud": Schedule((Group(b, 0, 0),)),
    }
    for c in range(1, n):
        out[f"de:{c}"] = Schedule((Group(b, c, n),))
        out[f"dc:{c}"] = Schedule((Group(b, c, c),))
        out[f"ec:{c}"] = Schedule((Group(b, 0, c),))
    return out


def resolve_schedule(
    choice: str, scenario: Scenario, picker: SchedulePicker | None = None
) -> Schedule | None:
    """The schedule `choice` names for this scenario; None lets the edge decide."""
    job = scenario.the_job()
    spec = job.spec()
    if choice == PLANNED:
        schedule = (picker or PLANNER)(scenario, spec)
    elif choice in BASELINES or choice.startswith(("de:", "dc:", "ec:")):
        table = baseline_schedules(spec.num_units, job.batch_size)
        if choice not in table:
            raise ConfigError(
                f"schedule {choice!r} does not exist for {spec.name} ({spec.num_units} units); "
                f"cuts run 1..{spec.num_units - 1}"
            )
        schedule = table[choice]
    else:
        schedule = Schedule.parse(choice)
    if schedule is not None:
        schedule.validate(spec.num_units, job.batch_size)
    return schedule


@dataclass
class EmulationResult:
    """What one emulated run produced; written as `emulation.json`."""

    scenario: str
    schedule: str
    schedule_given: dict[str, Any] | None
    out_dir: str
    rc: int
    wall_s: float
    netem: bool | None
    cgroup_version: int | None
    notices: list[str] = field(default_factory=list)
    rate_log: list[dict[str, Any]] = field(default_factory=list)
    report_path: str | None = None
    steps: int = 0
    median_step_s: float | None = None
    median_predicted_s: float | None = None
    median_abs_error: float | None = None
    # Seconds after the board's start at which the changes' clock started (0 with
    # changes_from="board"; None when training never started).
    timeline_origin_s: float | None = 0.0

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))


def summarize_report(report: dict[str, Any]) -> dict[str, Any]:
    """Median measured and predicted step times and the median |measured/predicted - 1|.

    The first step is left out: it includes connection setup and first-touch allocation.
    """
    its = report.get("iterations", [])[1:] or report.get("iterations", [])
    measured = [r["measured_s"] for r in its]
    pairs = [(r["measured_s"], r["predicted_s"]) for r in its if r.get("predicted_s")]
    return {
        "steps": len(report.get("iterations", [])),
        "median_step_s": statistics.median(measured) if measured else None,
        "median_predicted_s": statistics.median([p for _, p in pairs]) if pairs else None,
        "median_abs_error": (
            statistics.median([abs(m / p - 1) for m, p in pairs]) if pairs else None
        ),
    }


def make_keys(keys_dir: Path, env: dict[str, str]) -> dict[str, list[str]]:
    """Fresh CurveZMQ keys for one run, made with `hiertrain-edge keys generate`.

    Each tier gets a --keys folder: its own key pair, `allowed/` with the public keys of
    the tier below it, `server.key` with the public key of the tier above it.
    Returns each tier's extra flags.
    """
    exe = [sys.executable, "-m", "hiertrain_edge", "--log-level", "warning", "keys", "generate"]
    for tier in TIER_ORDER:
        folder = keys_dir / tier
        subprocess.run(
            [*exe, "--out", str(folder), "--name", tier], check=True, env=env,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
    for below, above in (("device", "edge"), ("edge", "cloud")):
        (keys_dir / above / "allowed").mkdir(exist_ok=True)
        shutil.copy(keys_dir / below / f"{below}.key", keys_dir / above / "allowed")
        shutil.copy(keys_dir / above / f"{above}.key", keys_dir / below / "server.key")
    return {tier: ["--keys", str(keys_dir / tier)] for tier in TIER_ORDER}


def _tier_commands(
    testbed: Testbed,
    scenario: Scenario,
    out: Path,
    job_file: Path,
    schedule: Schedule | None,
    log_level: str,
    security: dict[str, list[str]],
) -> dict[str, list[str]]:
    exe = [sys.executable, "-m", "hiertrain_edge", "--log-level", log_level]
    cloud_addr, edge_addr = testbed.address("cloud"), testbed.address("edge", "de")

    def threads(tier: str) -> list[str]:
        return ["--threads", str(scenario.tier(tier).threads)]

    cloud = ["cloud", "--listen", f"tcp://{cloud_addr}:{CLOUD_PORT}", "--once"]
    cloud += ["--out", str(out / "cloud"), *threads("cloud")]
    edge = ["serve", "--listen", f"tcp://{edge_addr}:{EDGE_PORT}"]
    edge += ["--cloud", f"{cloud_addr}:{CLOUD_PORT}", "--job", str(job_file), "--once"]
    edge += ["--out", str(out / "edge"), *threads("edge")]
    if schedule is not None:
        edge += ["--schedule", ",".join(f"{g.n}:{g.c1}:{g.c2}" for g in schedule.groups)]
    board = ["join", f"{edge_addr}:{EDGE_PORT}", "--report", str(out / "report.json")]
    board += ["--out", str(out / "device"), *threads("device")]
    board += ["--test-fraction", str(scenario.run.test_fraction)]
    if scenario.run.data:
        board += ["--data", scenario.run.data]
    cmds = {"cloud": exe + cloud, "edge": exe + edge, "device": exe + board}
    return {tier: cmd + security.get(tier, []) for tier, cmd in cmds.items()}


def _reuse_keys(keys_dir: Path, env: dict[str, str]) -> dict[str, list[str]]:
    """`make_keys` once per process, copied into every run's `keys_dir`."""
    made = _KEYS_MADE.get("keys")
    if made is None or not made.exists():
        made = Path(tempfile.mkdtemp(prefix="hte-keys-"))
        atexit.register(shutil.rmtree, made, True)
        make_keys(made, env)
        _KEYS_MADE["keys"] = made
    shutil.copytree(made, keys_dir)
    return {tier: ["--keys", str(keys_dir / tier)] for tier in TIER_ORDER}


def _logged(path: Path, pattern: re.Pattern[str]) -> bool:
    try:
        return pattern.search(path.read_text(errors="replace")) is not None
    except OSError:
        return False


def _tail(path: Path) -> str:
    try:
        return "\n".join(path.read_text().strip().splitlines()[-LOG_TAIL_LINES:])
    except OSError:
        return ""


def run_scenario(
    scenario: Scenario,
    out_dir: str | Path,
    schedule: str | None = None,
    picker: SchedulePicker | None = None,
    log_level: str = "info",
) -> EmulationResult:
    """Run the scenario once in a fresh testbed and return what happened.

    Args:
        schedule: "planned", "device", "edge", "cloud", "de:C", "dc:C", "ec:C" or
            "n:c1:c2,..."; default: the scenario's [run] schedule.
        picker: the planner hook for "planned" (default: the module's PLANNER).

    Raises:
        HierTrainError: the board failed; the message holds the tiers' last log lines.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    choice = schedule or scenario.run.schedule
    chosen = resolve_schedule(choice, scenario, picker)
    job = scenario.the_job()
    settings = job.model_dump(exclude_none=True, exclude={"schedule"})
    if job.schedule is not None:
        settings["schedule"] = job.schedule
    job_file = write_job_file(out / "job.toml", settings)
    report_path = out / "report.json"
    report_path.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    # Links off loopback need keys, or an explicit --insecure.
    if scenario.run.secure:
        shutil.rmtree(out / "keys", ignore_errors=True)
        security = _reuse_keys(out / "keys", env)
    else:
        security = {tier: ["--insecure"] for tier in TIER_ORDER}

    shares = scenario.cpu_shares()
    throttled_later = {t: c for t, c in shares.items() if c < STARTUP_CPUS}
    testbed = Testbed(
        links=scenario.link_shapes(),
        cpus={**shares, **dict.fromkeys(throttled_later, STARTUP_CPUS)},
    )
    rate_log: list[dict[str, Any]] = []
    logs = []
    with testbed:
        cmds = _tier_commands(testbed, scenario, out, job_file, chosen, log_level, security)
        procs = {}
        for tier in TIER_ORDER:
            f = open(out / f"{tier}.log", "w")  # noqa: SIM115 (closed below)
            logs.append(f)
            tier_env = {**env, "OMP_NUM_THREADS": str(scenario.tier(tier).threads)}
            if scenario.tier(tier).cpus is not None:  # /sys/fs/cgroup is not visible inside
                tier_env[CPU_SHARE_ENV] = str(scenario.tier(tier).cpus)
            procs[tier] = testbed.popen(tier, cmds[tier], stdout=f, stderr=f, env=tier_env)
        log.info(
            "scenario %s: schedule %s; logs in %s",
            scenario.name,
            chosen.describe() if chosen else f"{choice} (the edge decides)",
            out,
        )

        # Follow the scenario's timeline while the board trains. Its clock starts now,
        # or (changes_from="training") when the edge logs that the job's steps begin.
        started = time.monotonic()
        for link, direction, mbps in (
            (n, d, testbed.rates[(n, d)]) for n in ("de", "ec") for d in ("up", "down")
        ):
            rate_log.append({"t_s": 0.0, "link": link, "direction": direction, "mbps": mbps})
        pending = scenario.timeline()
        origin: float | None = 0.0 if scenario.run.changes_from == "board" else None
        board = procs["device"]
        try:
            while board.poll() is None:
                now = time.monotonic() - started
                for tier in [t for t in throttled_later if _logged(out / f"{t}.log", UP_RE[t])]:
                    testbed.set_cpus(tier, throttled_later.pop(tier))
                if (
                    origin is None
                    and _logged(out / "edge.log", TRAINING_STARTED_RE)
                    and _logged(out / "device.log", BOARD_TRAINS_RE)
                ):
                    origin = now
                while origin is not None and pending and pending[0].at_s <= now - origin:
                    change = pending.pop(0)
                    for link, direction, mbps in change.settings():
                        testbed.set_rate(link, direction, mbps)
                        entry = {"t_s": round(now - origin, 3), "link": link}
                        rate_log.append({**entry, "direction": direction, "mbps": mbps})
                if now > scenario.timeout_s:
                    raise HierTrainError(
                        f"scenario {scenario.name} ran past its timeout_s "
                        f"({scenario.timeout_s:g} s); logs in {out}"
                    )
                time.sleep(POLL_S)
            rc = board.returncode
            wall = time.monotonic() - started
            for tier in ("edge", "cloud"):
                try:
                    procs[tier].wait(timeout=STOP_AFTER_BOARD_S)
                except Exception:  # noqa: BLE001 (the testbed stops it on close)
                    log.warning("%s did not exit %g s after the board", tier, STOP_AFTER_BOARD_S)
        finally:
            for f in logs:
                f.close()

    result = EmulationResult(
        scenario=scenario.name,
        schedule=choice,
        schedule_given=chosen.to_dict() if chosen else None,
        out_dir=str(out),
        rc=rc,
        wall_s=wall,
        netem=testbed.netem,
        cgroup_version=testbed.cgroup_version,
        notices=list(testbed.notices),
        rate_log=rate_log,
        timeline_origin_s=None if origin is None else round(origin, 3),
    )
    if report_path.exists():
        result.report_path = str(report_path)
        for k, v in summarize_report(json.loads(report_path.read_text())).items():
            setattr(result, k, v)
    result.write(out / "emulation.json")
    if rc != 0:
        tails = "\n".join(
            f"--- {tier}.log:\n{_tail(out / f'{tier}.log')}"
            for tier in ("device", "edge", "cloud")
        )
        raise HierTrainError(
            f"scenario {scenario.name}: the board exited with status {rc}; logs in {out}\n{tails}"
        )
    return result
