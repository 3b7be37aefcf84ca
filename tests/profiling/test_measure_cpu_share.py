"""`cpu_share` reads a tier's CPU quota (cgroup v1 or v2, or the emulator's variable), and
`Clock` counts CPU time over the cores a tier may use, except for a multi-threaded tier
with a core per thread."""

from __future__ import annotations

import pytest

from hiertrain_edge.errors import ConfigError
from hiertrain_edge.profiling.measure import CPU_SHARE_ENV, Clock, cpu_share


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(CPU_SHARE_ENV, raising=False)


def test_measure_cpu_share_v1_lowest_on_the_path(tmp_path):
    (tmp_path / "cpu" / "outer" / "tier").mkdir(parents=True)
    (tmp_path / "cpu" / "outer" / "cpu.cfs_quota_us").write_text("150000\n")
    (tmp_path / "cpu" / "outer" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cpu" / "outer" / "tier" / "cpu.cfs_quota_us").write_text("25000\n")
    (tmp_path / "cpu" / "outer" / "tier" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "cgroup"
    proc.write_text("2:cpuacct:/\n1:cpu:/outer/tier\n0::/\n")
    assert cpu_share(tmp_path, proc) == 0.25


def test_measure_cpu_share_v2_and_unlimited(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "cpu.max").write_text("50000 100000\n")
    proc = tmp_path / "cgroup"
    proc.write_text("0::/job\n")
    assert cpu_share(tmp_path, proc) == 0.5
    (tmp_path / "job" / "cpu.max").write_text("max 100000\n")
    assert cpu_share(tmp_path, proc) is None
    assert cpu_share(tmp_path, tmp_path / "missing") is None


def test_measure_cpu_share_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(CPU_SHARE_ENV, "0.25")
    assert cpu_share(tmp_path, tmp_path / "missing") == 0.25
    monkeypatch.setenv(CPU_SHARE_ENV, "a quarter")
    with pytest.raises(ConfigError) as err:
        cpu_share(tmp_path, tmp_path / "missing")
    assert str(err.value) == f"{CPU_SHARE_ENV} must be a number of cores, got 'a quarter'"


def test_measure_clock_cpu_time_over_the_cores_a_tier_may_use():
    assert Clock(0.25, 1).cores == 0.25
    assert Clock(1.0, 2).cores == 1.0
    assert Clock(None, 1).cores == 1.0
    assert Clock(4.0, 1).cores == 1.0
    assert Clock(2.0, 2).cores is None  # wall time
    assert Clock(None, 4).cores is None
