"""While a board trains on loopback, the edge's metrics counters move and `status --json`
shows the board, its schedule and a growing step count."""

from __future__ import annotations

import json
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from tierprocs import free_port, stop, tier_process

from hiertrain_edge.cli.main import build_parser, main
from hiertrain_edge.cli.train import _edge_observe_args

STEPS = 400  # far more than the test waits for: it stops the tiers once it has seen enough
WAIT_S = 180.0  # the tiers start in seconds on an idle machine, in a minute on a loaded one
STEPS_TOTAL = "hiertrain_steps_total{}"


def _metrics(port: int) -> dict[str, float] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None  # the edge is not up yet
    return {
        s.name + json.dumps(s.labels, sort_keys=True): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def _status(port: int, capsys) -> dict | None:
    rc = main(["status", f"127.0.0.1:{port}", "--json", "--timeout", "1"])
    out = capsys.readouterr().out
    return json.loads(out) if rc == 0 else None


def test_metrics_and_status_follow_a_running_job(cloud_endpoint, tmp_path, capsys):
    edge_port, metrics_port, status_port = free_port(), free_port(), free_port()
    job = tmp_path / "job.toml"
    # A fixed three-group schedule (a job without one would be planned at join).
    job.write_text(
        f"steps = {STEPS}\nbatch_size = 64\n"
        "[[schedule.groups]]\nn = 22\ncuts = [6, 6]\n"
        "[[schedule.groups]]\nn = 21\ncuts = [2, 6]\n"
        "[[schedule.groups]]\nn = 21\ncuts = [2, 4]\n"
    )
    edge = tier_process(
        "serve",
        "--listen",
        f"tcp://127.0.0.1:{edge_port}",
        "--cloud",
        cloud_endpoint,
        "--job",
        str(job),
        "--once",
        "--threads",
        "1",
        "--metrics-port",
        str(metrics_port),
        "--status-listen",
        f"127.0.0.1:{status_port}",
        log=tmp_path / "edge.log",
    )
    board = tier_process(
        "join", f"127.0.0.1:{edge_port}", "--threads", "1", log=tmp_path / "board.log"
    )
    statuses: list[dict] = []
    scrapes: list[dict[str, float]] = []
    try:
        deadline = time.monotonic() + WAIT_S
        # Two looks at each while training runs, with steps done in between.
        while time.monotonic() < deadline and (len(statuses) < 2 or len(scrapes) < 2):
            assert board.poll() is None, f"the board ended early; logs in {tmp_path}"
            st = _status(status_port, capsys)
            if (
                st
                and st["step"] is not None
                and (not statuses or st["step"] > statuses[-1]["step"])
            ):
                statuses.append(st)
            m = _metrics(metrics_port)
            if m and m[STEPS_TOTAL] > (scrapes[-1][STEPS_TOTAL] if scrapes else 0):
                scrapes.append(m)
            time.sleep(0.3)
    finally:
        stop(board)
        stop(edge)

    assert len(statuses) == 2, f"saw {len(statuses)} status answers with steps; logs in {tmp_path}"
    assert len(scrapes) == 2, f"saw {len(scrapes)} moving scrapes; logs in {tmp_path}"
    first, second = statuses
    assert second["step"] > first["step"]
    assert [b["address"] for b in second["boards"]] == ["127.0.0.1"]
    assert [g["cuts"] for g in second["schedule"]["groups"]] == [[6, 6], [2, 6], [2, 4]]
    assert second["job"]["steps"] == STEPS
    assert second["cloud"]["state"] == "in job"
    assert second["loss"] > 0 and second["measured_s"] > 0

    before, after = scrapes
    for name in (
        STEPS_TOTAL,
        "hiertrain_step_seconds_count{}",
        'hiertrain_link_sent_bytes_total{"link": "device_edge"}',
        'hiertrain_link_sent_bytes_total{"link": "edge_cloud"}',
        'hiertrain_link_received_bytes_total{"link": "device_edge"}',
    ):
        assert after[name] > before[name] > 0, name
    assert after["hiertrain_jobs_total{}"] == 1
    assert after["hiertrain_boards_joined{}"] == 1


def test_demo_passes_the_observe_flags_to_its_edge():
    args = build_parser().parse_args(["demo", "--metrics-port", "9100", "--status-listen", "h"])
    assert _edge_observe_args(args) == ["--status-listen", "h", "--metrics-port", "9100"]
    args = build_parser().parse_args(["demo"])
    assert _edge_observe_args(args) == ["--status-listen", "none"]
