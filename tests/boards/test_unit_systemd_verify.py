"""The service unit is valid for systemd and runs `join` unprivileged, restarted, sandboxed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "firmware_scripts" / "hiertrain-edge-join.service"


def render(prefix: Path, user: str = "hiertrain") -> str:
    """The unit as install.sh writes it (same three substitutions)."""
    text = TEMPLATE.read_text()
    for key, value in {
        "@PREFIX@": str(prefix),
        "@USER@": user,
        "@CONFIG@": "/etc/hiertrain-edge/device.toml",
    }.items():
        text = text.replace(key, value)
    return text


def settings(unit: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


@pytest.fixture
def installed_unit(tmp_path):
    """The rendered unit plus a stand-in for the venv's entry point, which verify checks."""
    exe = tmp_path / "venv" / "bin" / "hiertrain-edge"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    unit = tmp_path / "hiertrain-edge-join.service"
    unit.write_text(render(tmp_path))
    return unit


def verify(unit: Path) -> subprocess.CompletedProcess:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze missing: apt-get install systemd")
    return subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )


def test_unit_systemd_analyze_verify_clean(installed_unit):
    out = verify(installed_unit)
    # verify exits 0 on settings it ignores, so the unit's own warnings are checked too.
    assert out.returncode == 0, out.stderr
    assert installed_unit.name not in out.stderr, out.stderr


def test_unit_systemd_analyze_verify_catches_a_missing_program(tmp_path):
    unit = tmp_path / "hiertrain-edge-join.service"
    unit.write_text(render(tmp_path / "nowhere"))
    out = verify(unit)
    assert out.returncode != 0
    assert f"Command {tmp_path}/nowhere/venv/bin/hiertrain-edge is not executable" in out.stderr


def test_unit_jetson_dropin_verifies(installed_unit):
    # install.sh adds this drop-in on a Jetson; systemd merges it into [Service].
    merged = installed_unit.with_name("jetson.service")
    merged.write_text(
        installed_unit.read_text()
        + "[Service]\nPrivateDevices=no\nSupplementaryGroups=video render\n"
    )
    out = verify(merged)
    assert out.returncode == 0 and merged.name not in out.stderr, out.stderr


def test_unit_runs_join_unprivileged_restarted_sandboxed(tmp_path):
    s = settings(render(tmp_path))
    assert s["ExecStart"] == [
        f"{tmp_path}/venv/bin/hiertrain-edge --log-level info join "
        "--config /etc/hiertrain-edge/device.toml"
    ]
    assert s["User"] == ["hiertrain"] and s["Group"] == ["hiertrain"]
    assert s["Restart"] == ["on-failure"]
    assert s["StandardOutput"] == ["journal"] and s["StandardError"] == ["journal"]
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "StateDirectory": "hiertrain-edge",
    }.items():
        assert s[key] == [value], key
