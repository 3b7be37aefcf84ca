"""Secured tier processes shared by the security and hostile-input tests."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from tierprocs import free_port, stop, tier_process

from hiertrain_edge.runtime import device
from hiertrain_edge.runtime.demo import write_job_file
from hiertrain_edge.wire.security import generate_keypair

LOG_WAIT_S = 90.0  # tier start-up on a loaded machine; not a timing assertion
SCHEDULE = {
    "groups": [{"n": 4, "cuts": [6, 6]}, {"n": 4, "cuts": [2, 6]}, {"n": 4, "cuts": [2, 4]}]
}


def _keys(root: Path) -> dict[str, Path]:
    """Key folders laid out as `--keys` expects, for cloud, edge, board and a stranger."""
    dirs = {name: root / name for name in ("cloud", "edge", "board", "stranger")}
    for name, d in dirs.items():
        generate_keypair(d, name)
    (dirs["cloud"] / "allowed").mkdir()
    shutil.copy(dirs["edge"] / "edge.key", dirs["cloud"] / "allowed")
    (dirs["edge"] / "allowed").mkdir()
    shutil.copy(dirs["board"] / "board.key", dirs["edge"] / "allowed")
    shutil.copy(dirs["cloud"] / "cloud.key", dirs["edge"] / "server.key")
    for name in ("board", "stranger"):
        shutil.copy(dirs["edge"] / "edge.key", dirs[name] / "server.key")
    return dirs


def _wait_for_line(log: Path, text: str) -> str:
    """The log line holding `text`, waiting up to LOG_WAIT_S for the tier to write it."""
    end = time.monotonic() + LOG_WAIT_S
    while time.monotonic() < end:
        for line in log.read_text().splitlines():
            if text in line:
                return line
        time.sleep(0.1)
    raise AssertionError(f"no line with {text!r} in {log}:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def secured(tmp_path_factory):
    """A secured cloud and a secured edge, as processes started with --keys."""
    root = tmp_path_factory.mktemp("secured")
    keys = _keys(root)
    cloud_port, edge_port = free_port(), free_port()
    cloud_log, edge_log = root / "cloud.log", root / "edge.log"
    job = write_job_file(
        root / "job.toml",
        {"model": "small_cnn", "batch_size": 12, "steps": 2, "seed": 1, "schedule": SCHEDULE},
    )
    cloud = tier_process(
        "cloud", "--listen", f"tcp://127.0.0.1:{cloud_port}", "--keys", str(keys["cloud"]),
        "--threads", "1", log=cloud_log,
    )  # fmt: skip
    edge = tier_process(
        "serve", "--listen", f"tcp://127.0.0.1:{edge_port}", "--cloud", f"127.0.0.1:{cloud_port}",
        "--keys", str(keys["edge"]), "--job", str(job), "--status-listen", "none",
        "--threads", "1", "--log-level", "debug", log=edge_log,
    )  # fmt: skip
    _wait_for_line(edge_log, "edge listening for boards")
    _wait_for_line(cloud_log, "cloud listening for edges")
    yield {
        "keys": keys,
        "edge": f"tcp://127.0.0.1:{edge_port}",
        "cloud": f"tcp://127.0.0.1:{cloud_port}",
        "edge_log": edge_log,
        "cloud_log": cloud_log,
        "job": job,
    }
    stop(edge)
    stop(cloud)


@pytest.fixture
def wait_for_line():
    return _wait_for_line


@pytest.fixture
def short_join(monkeypatch):
    # A refusal must come from the handshake, long before this timeout would end the wait.
    monkeypatch.setattr(device, "JOIN_TIMEOUT_S", 90.0)  # job start-up on a loaded machine
