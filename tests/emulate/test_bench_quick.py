"""`benchmarks/bench_scenarios.py --quick`: the scenario benchmark end to end, as a smoke test.

No speed assertions: only that the report, its rows and its plots are written, and that
every cell got steps of every schedule. It takes about 4 minutes on a shared 2-core host
(profiling, then three sweeps of real tiers over two cells), and is in the default run as
the issue asks; it skips without root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hiertrain_edge.emulate.netns import STATE_DIR

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks" / "bench_scenarios.py"
TIMEOUT_S = 600

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(shutil.which("tc") is None, reason="iproute2 (ip, tc) is not installed"),
]


def test_bench_scenarios_quick_writes_the_report(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.Popen(
        [sys.executable, str(BENCH), "--quick", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    assert f"report: {out / 'report.md'}" in stdout

    report = (out / "report.md").read_text()
    assert report.startswith("# Scenario benchmark\n")
    for cell in ("de 100 x ec 5/20 (thin-wan)", "de 2/10 x ec 100 (weak-uplink)"):
        assert f"| small_cnn | {cell} | " in report  # the summary rows
    assert "## small_cnn" in report
    assert "speedup vs cloud" in report
    assert "- failed runs: 0" in report

    data = json.loads((out / "results.json").read_text())
    (model,) = data["models"]
    # planned and two-tier: one sweep per distinct schedule the planner chose
    schedules = [r["schedule"] for r in model["runs"]]
    assert set(schedules) == {"planned", "cloud", "two-tier"}
    for cell in model["cells"].values():
        for name in ("planned", "cloud", "two-tier"):
            assert cell["runs"][name]["median_step_s"] > 0, (cell, name)
            assert cell["runs"][name]["steps"] >= 1
    for png in ("small_cnn-bars.png", "small_cnn-speedup.png", "predicted-vs-measured.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # nothing of the benchmark's own testbeds left behind (each one's state file names the
    # process that made it; other runs' testbeds may come and go meanwhile)
    left = [f for f in STATE_DIR.glob("*.json") if json.loads(f.read_text())["pid"] == proc.pid]
    assert left == []
