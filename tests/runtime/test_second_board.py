"""A second board that joins a busy edge is turned away; the first trains on untouched."""

from __future__ import annotations

import json
import subprocess
import time

from tierprocs import free_port, join_args, save_train, stop, tier_process

from hiertrain_edge.runtime.demo import write_job_file

SETTINGS = {
    "model": "small_cnn",
    "batch_size": 48,
    "steps": 300,
    "seed": 2,
    "checkpoint_every": 5,
    "step_timeout_s": 30.0,
    "schedule": {"groups": [{"n": 24, "cuts": [2, 6]}, {"n": 24, "cuts": [6, 6]}]},
}


def test_second_board_is_turned_away_and_the_first_goes_on(tmp_path, mnist):
    train = mnist.subset(0, 480)
    data = save_train(tmp_path, train)
    job = write_job_file(tmp_path / "job.toml", SETTINGS)
    edge_at = f"127.0.0.1:{free_port()}"
    report = tmp_path / "report.json"
    edge_log = tmp_path / "edge.log"
    edge = tier_process(
        *("serve", "--job", str(job), "--listen", f"tcp://{edge_at}", "--once"),
        *("--out", str(tmp_path / "edge"), "--threads", "1"),
        log=edge_log,
    )
    first = tier_process(
        *join_args(edge_at, data, tmp_path / "b1", "--report", str(report)),
        *("--board-id", "b1", "--threads", "1"),
        log=tmp_path / "b1.log",
    )
    try:
        deadline = time.monotonic() + 300
        checkpoint = tmp_path / "edge" / "checkpoint.pt"
        while not checkpoint.exists():  # the first board is training
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.05)
        second = subprocess.run(
            [*first.args[:3], *join_args(edge_at, data, tmp_path / "b2"), "--board-id", "b2"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert first.wait(timeout=max(1, deadline - time.monotonic())) == 0
    finally:
        stop(first)
        stop(edge)
    assert second.returncode == 2
    assert "this edge is busy with another board" in second.stderr
    # The second board's join and its dropped connection did not touch the first's job.
    log = edge_log.read_text()
    assert "lost board b1" not in log and "rolling back" not in log, log
    run = json.loads(report.read_text())
    assert run["events"] == []
    assert sorted(r["step"] for r in run["iterations"]) == list(range(300))
