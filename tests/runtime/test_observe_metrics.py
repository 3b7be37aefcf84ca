"""The edge's observer: one call per event moves the Prometheus metrics and the status."""

from __future__ import annotations

import logging
import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hiertrain_edge.errors import ConfigError, TransportError
from hiertrain_edge.planning.schedule import Schedule
from hiertrain_edge.runtime.observe import EdgeObserver
from hiertrain_edge.runtime.status import query_status

FIRST = Schedule.parse("22:6:6,21:2:6,21:2:4")
SECOND = Schedule.parse("32:6:6,32:2:6")
NUM_UNITS = 6


class FakeLink:
    """Byte counters as a Link or Listener keeps them."""

    def __init__(self) -> None:
        self.bytes_sent = 0
        self.bytes_received = 0


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_observer_events_move_metrics_and_status():
    port = _unused_port()
    board_link, cloud_link = FakeLink(), FakeLink()
    obs = EdgeObserver(
        "tcp://127.0.0.1:1",
        "tcp://127.0.0.1:2",
        {"device_edge": board_link, "edge_cloud": cloud_link},
        status_listen="tcp://127.0.0.1:*",
        metrics_port=port,
        metrics_address="127.0.0.1",
    )
    try:
        obs.job_started("job1", "board-a", "10.0.0.7", 3, "small_cnn", FIRST, NUM_UNITS)
        obs.step_started(0)
        board_link.bytes_sent, cloud_link.bytes_sent = 1000, 400
        board_link.bytes_received = 3000
        obs.step_done({"type": "step", "step": 0})
        obs.step_started(1)
        board_link.bytes_sent = 1500
        obs.step_done({"type": "step", "step": 1, "prev_loss": 2.5, "prev_measured_s": 0.2})
        obs.schedule_changed(2, SECOND, NUM_UNITS, predicted_s=0.15)
        obs.set_bandwidth("device_edge", 12.5)
        obs.tier_lost("cloud", "no bwd from the cloud within 10 s")
        logging.getLogger("hiertrain_edge.runtime.edge").warning("cloud lost at step %d", 2)
        obs.job_finished({"type": "finish", "step": 3, "prev_loss": 2.0, "prev_measured_s": 0.1})

        m = _scrape(port)
        live = query_status(obs.server.address, 5.0)
        obs.job_ended()
        after = obs.status.snapshot()
    finally:
        obs.close()

    assert m[("hiertrain_steps_total", ())] == 2
    assert m[("hiertrain_step_seconds_count", ())] == 2
    assert m[("hiertrain_loss", ())] == 2.0
    assert m[("hiertrain_link_sent_bytes_total", (("link", "device_edge"),))] == 1500
    assert m[("hiertrain_link_sent_bytes_total", (("link", "edge_cloud"),))] == 400
    assert m[("hiertrain_link_received_bytes_total", (("link", "device_edge"),))] == 3000
    assert m[("hiertrain_link_bandwidth_bits_per_second", (("link", "device_edge"),))] == 12.5e6
    assert m[("hiertrain_predicted_step_seconds", ())] == 0.15
    assert m[("hiertrain_schedule_switches_total", ())] == 1
    info = (("groups", SECOND.describe()), ("schedule_id", SECOND.schedule_id()))
    assert m[("hiertrain_schedule_info", info)] == 1
    assert m[("hiertrain_tier_lost_total", (("tier", "cloud"),))] == 1
    assert m[("hiertrain_jobs_total", ())] == 1
    assert m[("hiertrain_boards_joined", ())] == 1

    assert live["boards"][0]["id"] == "board-a"
    assert live["boards"][0]["address"] == "10.0.0.7"
    assert live["step"] == 1
    assert live["loss"] == 2.0
    assert live["measured_s"] == 0.1
    assert live["predicted_s"] == 0.15
    assert live["schedule"]["id"] == SECOND.schedule_id()
    assert live["schedule"]["groups"] == [
        {"n": 32, "cuts": [6, 6], "loss_tier": "device"},
        {"n": 32, "cuts": [2, 6], "loss_tier": "edge"},
    ]
    assert live["schedule_changes"] == 1
    assert live["cloud"]["state"] == "lost"
    assert live["cloud"]["reason"] == "no bwd from the cloud within 10 s"
    assert live["job"]["state"] == "finished"
    assert [w["message"] for w in live["warnings"]] == ["cloud lost at step 2"]
    assert after["boards"] == []


def test_observer_without_ports_keeps_the_status_only():
    obs = EdgeObserver()
    try:
        obs.job_started("job1", "board-a", None, 3, "small_cnn", FIRST, NUM_UNITS)
        obs.step_started(0)
        obs.step_done({"type": "step", "step": 0, "prev_loss": "hostile"})
    finally:
        obs.close()
    snap = obs.status.snapshot()
    assert obs.metrics is None and obs.server is None
    assert snap["step"] == 0
    assert snap["loss"] is None  # a non-number from the wire is ignored
    assert snap["cloud"]["state"] == "in job"  # the schedule's third group ends on the cloud


def test_metrics_port_in_use_is_a_config_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"^cannot serve metrics on 127\.0\.0\.1:{port}: "):
            EdgeObserver(metrics_port=port, metrics_address="127.0.0.1")


def test_status_port_chosen_and_taken_is_an_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(TransportError, match=rf"^cannot listen on tcp://127\.0\.0\.1:{port}"):
            EdgeObserver(status_listen=f"tcp://127.0.0.1:{port}")


def test_default_status_port_taken_is_only_a_warning(caplog):
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", 47811))
        taken.listen()
    except OSError:
        pass  # already taken by someone else: the case under test all the same
    try:
        with caplog.at_level(logging.WARNING, "hiertrain_edge.runtime.observe"):
            obs = EdgeObserver(status_listen="tcp://127.0.0.1:47811")
        obs.close()
    finally:
        taken.close()
    assert obs.server is None
    assert (
        caplog.records[-1]
        .getMessage()
        .startswith("no status port: cannot listen on tcp://127.0.0.1:47811")
    )
