"""`benchmarks/bench_scenarios.py --quick`: the scenario benchmark end to end, as a smoke test.

No speed assertions: only that the report, its rows and its plots are written. It takes
about 3 minutes on a shared 2-core host (profiling, then three runs of real tiers), and is
in the default run as the issue asks; it skips without root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
    before = set(_testbeds())
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"report: {out / 'report.md'}" in proc.stdout

    report = (out / "report.md").read_text()
    assert report.startswith("# Scenario benchmark\n")
    assert "| quick-thin-wan | " in report  # the summary row
    assert "## quick-thin-wan" in report
    for name in ("planned", "cloud", "two-tier"):
        rows = [ln for ln in report.splitlines() if ln.startswith(f"| {name} | ")]
        assert len(rows) == 1, name
        assert "FAILED" not in rows[0]
    assert "speedup vs cloud" in report

    results = json.loads((out / "results.json").read_text())["results"]
    assert [r["schedule"] for r in results[0]["runs"]] == ["planned", "cloud", "two-tier"]
    assert all(r["median_step_s"] > 0 for r in results[0]["runs"])
    for png in ("quick-thin-wan-bars.png", "predicted-vs-measured.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # nothing left behind (other runs' testbeds may come and go meanwhile)
    assert not set(_testbeds()) - before


def _testbeds() -> list[str]:
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [n for n in names.split() if n.startswith("hte")]
