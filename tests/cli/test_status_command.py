"""`hiertrain-edge status`: the readable table, and the error when no edge answers."""

from __future__ import annotations

import socket

from hiertrain_edge.cli.main import main
from hiertrain_edge.cli.status import render_status, status_listen

SNAPSHOT = {
    "format": 1,
    "time": 1000.0,
    "up_s": 75.2,
    "listen": "tcp://*:47810",
    "boards": [{"id": "b-0042", "address": "192.168.1.23", "since": 940.0}],
    "job": {"id": "4d3ba425", "model": "small_cnn", "steps": 375, "state": "running"},
    "step": 41,
    "loss": 0.47412,
    "steps_per_s": 5.987,
    "measured_s": 0.1594,
    "edge_step_s": 0.1571,
    "predicted_s": None,
    "bandwidth_mbps": {"device_edge": 48.25},
    "schedule": {
        "id": "e8a4838afbe8",
        "describe": "22@(6,6), 42@(2,4)",
        "groups": [
            {"n": 22, "cuts": [6, 6], "loss_tier": "device"},
            {"n": 42, "cuts": [2, 4], "loss_tier": "cloud"},
        ],
    },
    "schedule_changes": 2,
    "cloud": {"address": "tcp://cloud:47820", "state": "in job"},
    "warnings": [],
}


def test_render_status_shows_every_row():
    lines = render_status(SNAPSHOT, "tcp://edge:47811").splitlines()
    assert lines[:12] == [
        "edge       tcp://edge:47811 (up 75 s)",
        "job        4d3ba425 small_cnn, 375 steps, running",
        "step       42/375",
        "loss       0.4741",
        "steps/s    5.99",
        "step time  measured 0.159 s (board), 0.157 s (edge); predicted n/a",
        "schedule   e8a4838afbe8  (2 switches so far)",
        "  group 0  n=22   cuts (6, 6)  loss on the device",
        "  group 1  n=42   cuts (2, 4)  loss on the cloud",
        "bandwidth  device<->edge 48.2 Mbit/s, edge<->cloud n/a",
        "cloud      tcp://cloud:47820: in job",
        "",
    ]
    assert lines[12] == "board        address                  since"
    assert lines[13].startswith("b-0042       192.168.1.23             ")
    assert lines[13].endswith("(60 s ago)")
    assert lines[-1] == "no warnings"


def test_render_status_of_an_edge_without_a_cloud():
    snapshot = {**SNAPSHOT, "cloud": {"address": None, "state": "none"}}
    lines = render_status(snapshot, "tcp://edge:47811").splitlines()
    assert "cloud      none (this edge runs without --cloud)" in lines


def test_status_listen_follows_the_board_endpoint():
    assert status_listen(None, "tcp://*:47810") == "tcp://*:47811"
    assert status_listen(None, "tcp://127.0.0.1:5000") == "tcp://127.0.0.1:47811"
    assert status_listen("none", "tcp://*:47810") is None
    assert status_listen("10.0.0.2", "tcp://*:47810") == "tcp://10.0.0.2:47811"
    assert status_listen("127.0.0.1:6000", "tcp://*:47810") == "tcp://127.0.0.1:6000"


def test_status_without_an_edge_exits_2_with_a_hint(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc = main(["status", f"127.0.0.1:{port}", "--timeout", "0.2"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith(
        f"hiertrain-edge status: error: no status reply from tcp://127.0.0.1:{port}"
    )
    assert err.endswith(
        "is `hiertrain-edge serve` running there with its status port "
        "(--status-listen, default port 47811)?\n"
    )
