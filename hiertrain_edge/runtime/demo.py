"""`hiertrain-edge demo`: the three tiers as separate processes on loopback."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hiertrain_edge.errors import HierTrainError

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _toml_value(value: object) -> str:
    return json.dumps(value)  # JSON scalars and arrays of numbers are valid TOML


def write_job_file(path: Path, settings: dict[str, object]) -> Path:
    """A TOML job file from flat settings plus an optional `schedule` dict."""
    lines = [
        f"{k} = {_toml_value(v)}" for k, v in settings.items() if v is not None and k != "schedule"
    ]
    schedule = settings.get("schedule")
    if schedule:
        for g in schedule["groups"]:  # type: ignore[index]
            lines.append(f"[[schedule.groups]]\nn = {g['n']}\ncuts = {list(g['cuts'])}")
    path.write_text("\n".join(lines) + "\n")
    return path


def run_demo(
    job_settings: dict[str, object],
    data: str | None,
    report: str | None,
    out_dir: str | None,
    threads: int,
    test_fraction: float,
    log_level: str,
    edge_args: list[str] | None = None,
) -> int:
    """Start cloud, edge and board on loopback; the board's output is the demo's."""
    work = Path(out_dir or tempfile.mkdtemp(prefix="hiertrain-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    job_file = write_job_file(work / "job.toml", job_settings)
    cloud_port, edge_port = free_port(), free_port()
    exe = [sys.executable, "-m", "hiertrain_edge", "--log-level", log_level]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    common = ["--threads", str(threads)]
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        for name, args in (
            (
                "cloud",
                [
                    "cloud",
                    "--listen",
                    f"tcp://127.0.0.1:{cloud_port}",
                    "--once",
                    "--out",
                    str(work / "cloud"),
                ],
            ),
            (
                "edge",
                [
                    "serve",
                    "--listen",
                    f"tcp://127.0.0.1:{edge_port}",
                    "--cloud",
                    f"127.0.0.1:{cloud_port}",
                    "--job",
                    str(job_file),
                    "--once",
                    "--out",
                    str(work / "edge"),
                    *(edge_args or ["--status-listen", "none"]),
                ],
            ),
        ):
            f = open(work / f"{name}.log", "w")  # noqa: SIM115 (closed in finally)
            logs.append(f)
            procs.append(
                subprocess.Popen(exe + args + common, stdout=f, stderr=subprocess.STDOUT, env=env)
            )
        board_args = [
            "join",
            f"127.0.0.1:{edge_port}",
            "--out",
            str(work / "device"),
            "--test-fraction",
            str(test_fraction),
            *common,
        ]
        if data:
            board_args += ["--data", data]
        if report:
            board_args += ["--report", report]
        log.info("demo: cloud, edge and board on loopback; logs in %s", work)
        rc = subprocess.call(exe + board_args, env=env)
        deadline = time.monotonic() + 30
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGTERM)
        if rc != 0:
            for name in ("edge", "cloud"):
                tail = (work / f"{name}.log").read_text().strip().splitlines()[-5:]
                if tail:
                    print(
                        f"--- last lines of the {name} log ({work / (name + '.log')}):",
                        *tail,
                        sep="\n",
                        file=sys.stderr,
                    )
            raise HierTrainError(f"the board exited with status {rc}; see the logs in {work}")
        return rc
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in logs:
            f.close()
