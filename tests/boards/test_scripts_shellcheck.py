"""Every shell script in the repository passes shellcheck."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".git", ".venv", "dist", "build", "node_modules"}


def shell_scripts() -> list[Path]:
    found = []
    for path in sorted(REPO.rglob("*.sh")):
        if not SKIP_DIRS.intersection(path.relative_to(REPO).parts):
            found.append(path)
    return found


def test_shellcheck_finds_the_board_scripts():
    names = {p.relative_to(REPO).as_posix() for p in shell_scripts()}
    assert {
        "firmware_scripts/install.sh",
        "firmware_scripts/selftest.sh",
        "cross/build_wheelhouse.sh",
        "cross/smoke_aarch64.sh",
    } <= names


@pytest.mark.parametrize("script", shell_scripts(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_shellcheck_clean(script):
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck missing: apt-get install shellcheck (.ci/system-deps.sh does)")
    out = subprocess.run(
        ["shellcheck", "--external-sources", str(script)],
        capture_output=True,
        text=True,
        cwd=script.parent,
    )
    assert out.returncode == 0, out.stdout + out.stderr
