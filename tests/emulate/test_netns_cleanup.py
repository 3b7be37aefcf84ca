"""Everything a testbed creates is gone after exit, an exception, SIGTERM or SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hiertrain_edge.emulate import netns
from hiertrain_edge.emulate.netns import LinkShape, Testbed, cleanup_leftovers

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
]

# A child that brings a testbed up (with a CPU share), says its prefix and waits.
CHILD = """
import sys, time
from hiertrain_edge.emulate.netns import LinkShape, Testbed, signals_raise
with signals_raise(), Testbed({"de": LinkShape(10, 10)}, cpus={"device": 0.5}) as tb:
    print(tb.prefix, flush=True)
    time.sleep(60)
"""


def _traces(prefix: str) -> list[str]:
    """Every namespace, cgroup and state file whose name starts with `prefix`."""
    found = [n for n in netns._run(["ip", "netns", "list"]).stdout.split() if n.startswith(prefix)]
    cpu = netns.CpuController.detect()
    found += [p.name for p in cpu.root.glob(f"{prefix}*")]
    found += [p.name for p in netns.STATE_DIR.glob(f"{prefix}*")]
    return found


def _start_child() -> tuple[subprocess.Popen, str]:
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    prefix = child.stdout.readline().strip()
    assert prefix.startswith("hte"), prefix
    assert len(_traces(prefix)) == 3 + 1 + 1  # namespaces, the device's cgroup, state
    return child, prefix


def test_netns_cleanup_on_exit_and_exception():
    tb = Testbed(cpus={"edge": 1.0})
    with pytest.raises(RuntimeError, match="^boom$"), tb:
        assert sorted(_traces(tb.prefix)) == sorted(
            [f"{tb.prefix}-{t}" for t in ("device", "edge", "cloud")]
            + [f"{tb.prefix}-edge", f"{tb.prefix}.json"]
        )
        raise RuntimeError("boom")
    assert _traces(tb.prefix) == []
    tb.close()  # a second close is harmless


@pytest.mark.parametrize(
    ("signum", "exit_code"),
    [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGINT, -signal.SIGINT)],
)
def test_netns_cleanup_on_signal(signum, exit_code):
    child, prefix = _start_child()
    child.send_signal(signum)  # SIGINT is Ctrl-C: KeyboardInterrupt unwinds the with-block
    assert child.wait(timeout=20) == exit_code
    assert _traces(prefix) == []


def test_netns_cleanup_leftovers_after_sigkill():
    child, prefix = _start_child()
    child.kill()
    child.wait(timeout=10)
    assert len(_traces(prefix)) == 5  # a crash leaves everything behind ...
    removed = [r for r in cleanup_leftovers() if prefix in r]  # ... until the next run
    assert sorted(removed) == sorted(
        [f"{prefix}-{t}" for t in ("device", "edge", "cloud")] + [f"cgroup {prefix}-device"]
    )
    assert _traces(prefix) == []


def test_netns_cleanup_spares_live_testbeds():
    with Testbed() as tb:
        removed = cleanup_leftovers()  # other runs' leftovers may go; this one stays
        assert [r for r in removed if tb.prefix in r] == []
        assert len(_traces(tb.prefix)) == 4


def test_netns_netem_missing_is_reported():
    shape = LinkShape(10.0, 10.0, delay_ms=20.0, loss_pct=1.0)
    with Testbed({"ec": shape}) as tb:
        qdiscs = tb.run("edge", ["tc", "qdisc", "show", "dev", tb.iface("ec", "edge")])
        if tb.netem:
            assert "netem" in qdiscs and "delay 20ms" in qdiscs
        else:
            assert tb.notices == [
                "netem is not available in this kernel (Error: Specified qdisc kind is "
                "unknown.); link ec: delay 20 ms and loss 1% are NOT emulated, only the rates "
                "(10/10 Mbit/s up/down)"
            ]
    assert Path(netns.STATE_DIR / f"{tb.prefix}.json").exists() is False
