"""install.sh --dry-run prints what it would do per board type; the self-test survives crashes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "firmware_scripts" / "install.sh"
SELFTEST = REPO / "firmware_scripts" / "selftest.sh"


def install(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(INSTALL), *args], capture_output=True, text=True, timeout=60
    )


def dry_run(board: str, *extra: str) -> list[str]:
    out = install("--dry-run", "--board", board, "--edge", "10.0.0.5:47810", *extra)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


TORCH_INDEX = {
    "pi": "https://download.pytorch.org/whl/cpu",
    "jetson": "https://pypi.jetson-ai-lab.io/jp6/cu126",
    "generic": "https://download.pytorch.org/whl/cpu",
}


@pytest.mark.parametrize("board", ["pi", "jetson", "generic"])
def test_install_dry_run_every_board_type(board):
    lines = dry_run(board)
    assert lines[0] == f"== board forced: {board} (this machine: {_machine()})"
    assert f"   torch: torch from {TORCH_INDEX[board]}" in lines
    assert (
        "[dry-run] /opt/hiertrain-edge/venv/bin/pip install --index-url "
        f"{TORCH_INDEX[board]} torch "
    ) in lines
    assert "[dry-run] python3 -m venv /opt/hiertrain-edge/venv " in lines
    assert (
        "[dry-run] useradd --system --home-dir /var/lib/hiertrain-edge --no-create-home "
        "--shell /usr/sbin/nologin --user-group hiertrain "
    ) in lines or "   account hiertrain exists" in lines
    assert (
        f"[dry-run] {REPO}/firmware_scripts/selftest.sh /opt/hiertrain-edge/venv/bin/python "
    ) in lines
    assert '    | edge = "10.0.0.5:47810"' in lines
    assert (
        "    | ExecStart=/opt/hiertrain-edge/venv/bin/hiertrain-edge --log-level info join "
        "--config /etc/hiertrain-edge/device.toml"
    ) in lines
    assert "[dry-run] systemctl enable --now hiertrain-edge-join.service " in lines
    assert lines[-2:] == [
        "   follow the board: journalctl -u hiertrain-edge-join.service -f",
        "   on the edge you will see: 'job ... started with board ...'",
    ]
    jetson_only = [
        "[dry-run] write /etc/systemd/system/hiertrain-edge-join.service.d/jetson.conf "
        "(mode 0644, owner root:root):",
        "    | PrivateDevices=no",
    ]
    for line in jetson_only:
        assert (line in lines) == (board == "jetson"), line
    assert any("libopenblas-dev" in x for x in lines) == (board == "jetson")


def _machine() -> str:
    import platform

    return platform.machine()


def test_install_dry_run_offline_wheelhouse_and_settings():
    lines = dry_run(
        "pi",
        "--wheelhouse",
        "/media/usb/wheelhouse",
        "--threads",
        "4",
        "--data",
        "/srv/data",
        "--secret-key",
        "/boot/firmware/hiertrain-edge/device.key_secret",
        "--edge-key",
        "/boot/firmware/hiertrain-edge/edge.key",
    )
    assert "   offline: every package from the wheelhouse /media/usb/wheelhouse" in lines
    assert (
        "[dry-run] /opt/hiertrain-edge/venv/bin/pip install --no-index --find-links "
        "/media/usb/wheelhouse hiertrain-edge "
    ) in lines
    assert not any("--index-url" in x for x in lines)
    start = lines.index(
        "[dry-run] write /etc/hiertrain-edge/device.toml (mode 0640, owner root:hiertrain):"
    )
    toml = [x.removeprefix("    | ") for x in lines[start + 3 : start + 13]]
    assert toml == [
        'edge = "10.0.0.5:47810"',
        'data = "/srv/data"',
        'report = "/var/lib/hiertrain-edge/report.json"',
        'out = "/var/lib/hiertrain-edge/out"',
        "threads = 4",
        "test_fraction = 0.2",
        "",
        "[keys]",
        'secret = "/etc/hiertrain-edge/keys/device.key_secret"',
        'edge_public = "/etc/hiertrain-edge/keys/edge.key"',
    ]
    assert (
        "[dry-run] install -m 0600 -o hiertrain -g hiertrain "
        "/boot/firmware/hiertrain-edge/device.key_secret "
        "/etc/hiertrain-edge/keys/device.key_secret "
    ) in lines


def test_install_dry_run_writes_settings_the_config_parser_accepts(tmp_path):
    from hiertrain_edge.cli.device_config import load_device_config

    lines = dry_run("generic", "--threads", "2")
    start = lines.index(
        "[dry-run] write /etc/hiertrain-edge/device.toml (mode 0640, owner root:hiertrain):"
    )
    body = []
    for x in lines[start + 1 :]:
        if not x.startswith("    | "):
            break
        body.append(x.removeprefix("    | "))
    f = tmp_path / "device.toml"
    f.write_text("\n".join(body) + "\n")
    config = load_device_config(f)
    assert config.edge == "10.0.0.5:47810"
    assert config.threads == 2
    assert str(config.report) == "/var/lib/hiertrain-edge/report.json"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--board", "pi4"], "install.sh: --board must be auto, pi, jetson or generic, got 'pi4'"),
        (["--threads", "0"], "install.sh: --threads must be a whole number >= 1, got '0'"),
        (
            ["--edge", "edge host"],
            "install.sh: --edge must be HOST, HOST:PORT or tcp://HOST:PORT, got 'edge host'",
        ),
        (["--frobnicate"], "install.sh: unknown option '--frobnicate' (see --help)"),
    ],
)
def test_install_bad_usage_is_one_line(args, message):
    out = install("--dry-run", *args)
    assert out.returncode == 2
    assert out.stderr.strip() == message


def test_install_needs_root_outside_a_dry_run():
    import os

    if os.geteuid() == 0:
        pytest.skip("running as root: the check only applies to other users")
    out = install("--board", "generic", "--edge", "10.0.0.5")
    assert out.returncode == 2
    assert "run as root (sudo), or add --dry-run" in out.stderr


def _fake_python(tmp_path: Path, body: str) -> Path:
    py = tmp_path / "python"
    py.write_text("#!/bin/bash\n" + body + "\n")
    py.chmod(0o755)
    return py


def test_selftest_illegal_instruction_is_reported_not_fatal(tmp_path):
    # A torch build that needs CPU features the board lacks dies with SIGILL on import.
    py = _fake_python(tmp_path, "kill -ILL $$")
    out = subprocess.run(
        ["bash", "-c", f'"{SELFTEST}" "{py}"; echo "caller still running, selftest exit $?"'],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0
    assert out.stdout.strip() == "caller still running, selftest exit 3"
    # bash itself notes "Illegal instruction" for the child first; our diagnosis follows.
    assert "Illegal instruction" in out.stderr.splitlines()[0]
    assert out.stderr.splitlines()[-1].startswith(
        "self-test CRASHED with SIGILL (illegal instruction): this torch build uses CPU "
        "instructions the processor of this board lacks."
    )


def test_selftest_python_error_and_segfault(tmp_path):
    err = subprocess.run(
        [str(SELFTEST), str(_fake_python(tmp_path, "echo boom >&2; exit 1"))],
        capture_output=True,
        text=True,
    )
    assert err.returncode == 1
    assert err.stderr.splitlines() == [
        "boom",
        "self-test FAILED (exit 1): see the Python error above",
    ]
    seg = subprocess.run(
        [str(SELFTEST), str(_fake_python(tmp_path, "kill -SEGV $$"))],
        capture_output=True,
        text=True,
    )
    assert seg.returncode == 3
    assert "self-test CRASHED with SIGSEGV (segmentation fault)" in seg.stderr


def test_selftest_passes_with_this_venv():
    import sys

    out = subprocess.run(
        [str(SELFTEST), sys.executable], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "small_cnn forward+backward ok" in out.stdout
    assert out.stdout.splitlines()[-1] == "self-test passed"
