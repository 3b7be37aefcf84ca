"""The training commands: help everywhere, one-line errors for user mistakes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from tierprocs import REPO, SHARED_MNIST, free_port, stop, tier_process

COMMANDS = ["cloud", "serve", "join", "demo"]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hiertrain_edge", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_cli_help_for_every_training_command(command):
    out = run_cli(command, "--help")
    assert out.returncode == 0
    assert out.stdout.startswith(f"usage: hiertrain-edge {command}")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["join", "127.0.0.1:1", "--data", "/no/such/data"],
            "hiertrain-edge join: error: data path '/no/such/data' does not exist",
        ),
        (
            ["serve", "--job", "/no/job.toml"],
            "hiertrain-edge serve: error: job file '/no/job.toml' does not exist",
        ),
        (
            ["demo", "--schedule", "64:9:9"],
            "hiertrain-edge demo: error: group 0 has cuts (9, 9); expected 0 <= c1 <= c2 <= 6",
        ),
        (
            ["demo", "--schedule", "64-6-6"],
            "hiertrain-edge demo: error: schedule group '64-6-6' is not n:c1:c2",
        ),
        (["demo", "--model", "vgg99"], "hiertrain-edge demo: error: unknown model 'vgg99'"),
    ],
)
def test_cli_user_errors_are_one_line(args, message):
    out = run_cli(*args)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(message)


def test_cli_bad_job_file_value(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text('model = "small_cnn"\nbatch_size = 0\n')
    out = run_cli("serve", "--job", str(job), "--listen", "tcp://127.0.0.1:0")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"{job}: batch_size: Input should be greater than or equal to 1 (got 0)" in out.stderr
    job.write_text("model = [")
    out = run_cli("serve", "--job", str(job))
    assert "is not valid TOML" in out.stderr and out.returncode == 2


def test_cli_wrong_flag_is_argparse_error():
    out = run_cli("join")
    assert out.returncode == 2
    assert "the following arguments are required" in out.stderr or "EDGE_HOST" in out.stderr


def test_demo_on_real_mnist_reaches_97_percent(tmp_path):
    """The issue's acceptance run: 8000 images to train, 2000 to test, three groups."""
    report = tmp_path / "report.json"
    out = run_cli(
        "demo",
        "--data",
        str(SHARED_MNIST),
        "--report",
        str(report),
        "--out",
        str(tmp_path / "demo"),
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(report.read_text())
    assert data["test_accuracy"] >= 0.97
    assert data["steps"] == 375 == len(data["iterations"])
    assert len(data["schedule"]["groups"]) == 3
    assert {
        "test_accuracy",
        "train_loss",
        "steps",
        "wall_s",
        "schedule",
        "iterations",
        "schedule_changes",
    } <= set(data)
    first = data["iterations"][0]
    assert set(first) >= {
        "step",
        "schedule_id",
        "loss",
        "measured_s",
        "predicted_s",
        "bw_de_mbps",
        "bw_ec_mbps",
    }
    assert data["iterations"][-1]["loss"] < first["loss"]
    assert "test accuracy" in out.stdout
    # Every tier holds the trained model at the end.
    for tier in ("device", "edge", "cloud"):
        assert (tmp_path / "demo" / tier / "model.pt").is_file()


def test_cli_tiers_on_loopback_with_host_port_listen(tmp_path):
    """README's loopback walk-through: --listen takes host[:port] as --cloud and join do."""
    cloud_port, edge_port = free_port(), free_port()
    job = tmp_path / "job.toml"
    job.write_text("steps = 3\n")
    cloud = tier_process(
        "cloud", "--listen", f"127.0.0.1:{cloud_port}", "--once", "--threads", "1",
        log=tmp_path / "cloud.log",
    )  # fmt: skip
    edge = tier_process(
        "serve", "--cloud", f"127.0.0.1:{cloud_port}", "--listen", f"127.0.0.1:{edge_port}",
        "--status-listen", "none", "--job", str(job), "--once", "--threads", "1",
        log=tmp_path / "edge.log",
    )  # fmt: skip
    try:
        out = run_cli("join", f"127.0.0.1:{edge_port}", "--out", str(tmp_path / "device"))
    finally:
        stop(edge)
        stop(cloud)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("trained 3 steps in ")
    assert (
        f"cloud listening for edges on tcp://127.0.0.1:{cloud_port}"
        in (tmp_path / "cloud.log").read_text()
    )


def test_cli_job_file_with_steps_and_epochs_is_refused(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text("steps = 5\nepochs = 2\n")
    out = run_cli("serve", "--job", str(job), "--listen", "127.0.0.1")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        f"hiertrain-edge serve: error: {job}: gives both steps (5) and epochs (2); "
        "expected one of them"
    )
    out = run_cli("demo", "--steps", "5", "--epochs", "2")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        "hiertrain-edge demo: error: give either --steps (5) or --epochs (2), not both"
    )
