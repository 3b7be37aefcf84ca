"""First boot of a flashed card: the Pi's firstrun hook and cloud-init user-data."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FW = REPO / "firmware_scripts"
SETUP = "/var/lib/hiertrain-edge-setup"
CMDLINE = "console=serial0,115200 console=tty1 root=PARTUUID=1234-02 rootfstype=ext4 rootwait"
# The end of the firstrun.sh Raspberry Pi Imager writes (user, Wi-Fi, SSH settings before it).
IMAGER_TAIL = """#!/bin/bash
set +e
FIRSTUSER=`getent passwd 1000 | cut -d: -f1`
rm -f /boot/firstrun.sh
sed -i 's| systemd.run.*||g' /boot/cmdline.txt
exit 0
"""


def env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHON": sys.executable}


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """hiertrain-edge's wheel, built once for every test here."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
        check=True,
        timeout=300,
    )
    return next(out.glob("hiertrain_edge-*.whl"))


@pytest.fixture
def keys(tmp_path):
    secret, public = tmp_path / "board1.key_secret", tmp_path / "edge.key"
    secret.write_text("secret\n")
    public.write_text("public\n")
    return secret, public


def prepare(boot: Path, keys, wheel: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(FW / "prepare_card.sh"),
            str(boot),
            "--wheel",
            str(wheel),
            "--edge",
            "192.168.1.20",
            "--secret-key",
            str(keys[0]),
            "--edge-key",
            str(keys[1]),
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env(),
        timeout=300,
    )


def test_prepare_card_without_imager_settings_adds_its_own_firstrun(tmp_path, keys, wheel):
    boot = tmp_path / "bootfs"
    boot.mkdir()
    (boot / "cmdline.txt").write_text(CMDLINE + "\n")
    out = prepare(boot, keys, wheel, "--threads", "4")
    assert out.returncode == 0, out.stderr
    assert (boot / "cmdline.txt").read_text() == (
        CMDLINE + " systemd.run=/boot/firmware/firstrun.sh systemd.run_success_action=reboot "
        "systemd.unit=kernel-command-line.target\n"
    )
    firstrun = (boot / "firstrun.sh").read_text()
    assert "bash /boot/firmware/hiertrain-edge/firstboot.sh || true\n" in firstrun
    assert "sed -i 's| systemd.run.*||g' /boot/firmware/cmdline.txt" in firstrun
    dest = boot / "hiertrain-edge"
    on_card = next(dest.glob("hiertrain_edge-*.whl")).name
    assert (dest / "settings.env").read_text() == (
        f'INSTALL_ARGS="--board auto --edge 192.168.1.20 --source {SETUP}/{on_card} '
        f"--secret-key {SETUP}/device.key_secret --edge-key {SETUP}/edge.key "
        '--threads 4"\n'
    )
    assert (dest / "device.key_secret").read_text() == "secret\n"
    for name in ("install.sh", "selftest.sh", "firstboot.sh", "hiertrain-edge-join.service"):
        assert (dest / name).read_bytes() == (FW / name).read_bytes()
    # Preparing twice leaves one hook and one set of first-run arguments.
    assert prepare(boot, keys, wheel).returncode == 0
    assert (boot / "cmdline.txt").read_text().count("systemd.run=") == 1


def test_prepare_card_hooks_into_imagers_firstrun(tmp_path, keys, wheel):
    boot = tmp_path / "bootfs"
    boot.mkdir()
    (boot / "cmdline.txt").write_text(CMDLINE + " systemd.run=/boot/firstrun.sh\n")
    (boot / "firstrun.sh").write_text(IMAGER_TAIL)
    out = prepare(boot, keys, wheel)
    assert out.returncode == 0, out.stderr
    lines = (boot / "firstrun.sh").read_text().splitlines()
    hook = lines.index("bash /boot/firmware/hiertrain-edge/firstboot.sh || true")
    assert lines[hook + 1] == "rm -f /boot/firstrun.sh"
    assert (boot / "cmdline.txt").read_text() == CMDLINE + " systemd.run=/boot/firstrun.sh\n"


def test_prepare_card_needs_a_boot_partition(tmp_path, keys, wheel):
    out = prepare(tmp_path, keys, wheel)
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"prepare_card.sh: {tmp_path} has no cmdline.txt: give the mounted boot partition "
        "of the card"
    )


@pytest.fixture(scope="session")
def user_data(tmp_path_factory, wheel):
    tmp = tmp_path_factory.mktemp("cloud")
    secret = tmp / "board1.key_secret"
    secret.write_text("secret\n")
    out = subprocess.run(
        [
            str(FW / "make_user_data.sh"),
            "--edge",
            "edge.local:47810",
            "--secret-key",
            str(secret),
            "--board",
            "jetson",
            "--wheel",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        env=env(),
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    path = tmp / "user-data"
    path.write_text(out.stdout)
    return path


def test_user_data_is_valid_cloud_config(user_data):
    if shutil.which("cloud-init") is None:
        pytest.skip("cloud-init missing: apt-get install cloud-init (.ci/system-deps.sh does)")
    out = subprocess.run(
        ["cloud-init", "schema", "--config-file", str(user_data)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"Valid cloud-config: {user_data}" in out.stdout


def test_user_data_writes_installer_and_keys_and_runs_install(user_data):
    text = user_data.read_text()
    assert text.startswith("#cloud-config\n")
    files = dict(
        re.findall(
            r"  - path: (\S+)\n    permissions: \"\d+\"\n    encoding: b64\n"
            r"    content: (\S+)\n",
            text,
        )
    )
    assert base64.b64decode(files[f"{SETUP}/install.sh"]) == (FW / "install.sh").read_bytes()
    assert base64.b64decode(files[f"{SETUP}/device.key_secret"]) == b"secret\n"
    assert '    permissions: "0600"\n    encoding: b64\n    content: c2VjcmV0Cg==\n' in text
    wheel = next(p for p in files if p.endswith(".whl"))
    assert text.splitlines()[-2:] == [
        "runcmd:",
        f'  - ["bash", "{SETUP}/install.sh", "--board", "jetson", "--edge", '
        f'"edge.local:47810", "--source", "{wheel}", "--secret-key", '
        f'"{SETUP}/device.key_secret"]',
    ]
