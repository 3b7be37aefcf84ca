"""The device role on emulated aarch64 (slow, needs root): cross/smoke_aarch64.sh end to end.

Run on request:  sudo .venv/bin/python -m pytest -m slow tests/boards/test_smoke_aarch64_slow.py
It reuses the cached arm64 root file system and wheelhouse in /var/tmp/hiertrain-edge-cross
(first run: about 10 min of debootstrap and 3 min of downloads more).
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
SMOKE_TIMEOUT_S = 3 * 3600


@pytest.mark.slow
def test_smoke_aarch64_join_trains_under_emulation(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root: chroot and binfmt_misc")
    for tool in ("debootstrap", "update-binfmts", "qemu-aarch64-static"):
        if shutil.which(tool) is None:
            pytest.skip(
                f"{tool} missing: apt-get install qemu-user-static binfmt-support debootstrap"
            )
    work = tmp_path / "smoke"
    out = subprocess.run(
        [str(REPO / "cross" / "smoke_aarch64.sh"), "--steps", "30", "--work", str(work)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT_S,
    )
    log = (work / "smoke.log").read_text()
    assert out.returncode == 0, log[-4000:]
    assert "board: uname -m = aarch64, user hiertrain" in log
    assert "self-test passed" in log

    report = json.loads((work / "report.json").read_text())
    losses = [it["loss"] for it in report["iterations"]]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    edge_log = (work / "edge.log").read_text()
    assert "started with board" in edge_log
    assert "finished after 30 steps" in edge_log
