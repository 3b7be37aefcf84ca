"""The edge's status port: a snapshot served from a background thread, and its errors."""

from __future__ import annotations

import re
import socket
import threading

import pytest
import zmq

from hiertrain_edge.errors import PeerLostError, ProtocolError
from hiertrain_edge.runtime.status import EdgeStatus, StatusServer, query_status
from hiertrain_edge.wire.codec import encode
from hiertrain_edge.wire.transport import Link


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status() -> EdgeStatus:
    st = EdgeStatus("tcp://127.0.0.1:47810", "tcp://127.0.0.1:47820")
    st.board_joined("board-a", "127.0.0.1")
    st.job_started(
        {"id": "job1", "board": "board-a", "model": "small_cnn", "steps": 30, "state": "running"},
        {"id": "abc", "describe": "64@(2,4)", "groups": [{"n": 64, "cuts": [2, 4]}]},
    )
    st.set_cloud("in job")
    st.step_done(0, 0.5)
    st.step_done(1, 0.25)
    st.board_reported(1.25, 0.3)
    st.set_bandwidth("device_edge", 12.5)
    return st


def test_status_server_answers_with_the_snapshot():
    server = StatusServer(_status(), "tcp://127.0.0.1:*")
    try:
        got = query_status(server.address, 5.0)
        again = query_status(server.address, 5.0)  # the thread keeps serving
    finally:
        server.close()
    assert [b["id"] for b in got["boards"]] == ["board-a"]
    assert got["boards"][0]["address"] == "127.0.0.1"
    assert got["job"]["id"] == "job1"
    assert got["step"] == 1
    assert got["loss"] == 1.25
    assert got["measured_s"] == 0.3
    assert got["edge_step_s"] == 0.25
    assert got["bandwidth_mbps"] == {"device_edge": 12.5}
    assert got["schedule"]["id"] == "abc"
    assert got["cloud"]["state"] == "in job"
    assert again["step"] == 1


def test_status_server_answers_other_requests_with_an_error():
    server = StatusServer(_status(), "tcp://127.0.0.1:*")
    link = Link(zmq.Context.instance(), server.address)
    try:
        link.send({"type": "ready", "step": 0})
        reply = link.recv(5.0)
    finally:
        link.close()
        server.close()
    assert reply["type"] == "error"
    assert reply["reason"] == "unknown request 'ready'; expected 'status'"


def test_query_status_without_an_edge_says_so():
    address = f"tcp://127.0.0.1:{_unused_port()}"
    with pytest.raises(PeerLostError) as info:
        query_status(address, 0.3)
    # The transport reports the time left of its deadline, a hair under 0.3 s.
    assert re.fullmatch(rf"no status reply from {address} within 0\.[23]\d* s", str(info.value))


def test_query_status_rejects_a_non_status_reply():
    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")

    def answer() -> None:
        frames = router.recv_multipart()
        router.send_multipart([frames[0], *encode({"type": "error", "reason": "busy"})])

    t = threading.Thread(target=answer)
    t.start()
    try:
        with pytest.raises(ProtocolError) as info:
            query_status(f"tcp://127.0.0.1:{port}", 5.0)
    finally:
        t.join()
        router.close(linger=0)
    assert str(info.value) == f"the edge at tcp://127.0.0.1:{port} answered 'error': busy"
