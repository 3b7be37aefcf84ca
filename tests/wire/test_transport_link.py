"""Link -> Listener on loopback: zero-copy tensors, byte counts, timeouts, drops, peers."""

from __future__ import annotations

import threading
import time

import msgpack
import pytest
import torch
import zmq

from hiertrain_edge.errors import PeerLostError, ProtocolError
from hiertrain_edge.wire.codec import ZERO_COPY_MIN_BYTES, decode, encode
from hiertrain_edge.wire.transport import FAST_WAIT_S, LIVENESS_S, Link, Listener

SMALL_ELEMENTS = 1000  # 4000 bytes: copied into ZeroMQ
LARGE_ELEMENTS = ZERO_COPY_MIN_BYTES  # 256 KiB of float32: sent without a copy
TIMEOUT_S = 30.0  # for messages that are on their way; not a timing assertion


@pytest.fixture
def pair():
    """A connected Link and Listener on a free loopback port (plaintext, as loopback allows)."""
    ctx = zmq.Context()
    listener = Listener(ctx, "tcp://127.0.0.1:*")
    address = listener.sock.getsockopt(zmq.LAST_ENDPOINT).decode()
    link = Link(ctx, address)
    link.send({"type": "ready", "step": 0})
    listener.recv(TIMEOUT_S)
    yield link, listener
    link.close(0)
    listener.close()
    ctx.term()


def _bwd(step: int, grad: torch.Tensor) -> dict:
    return {"type": "bwd", "step": step, "gid": 0, "grad": grad, "loss": 0.5}


@pytest.mark.parametrize("elements", [SMALL_ELEMENTS, LARGE_ELEMENTS], ids=["copied", "zero-copy"])
def test_transport_roundtrip_both_ways(pair, elements):
    link, listener = pair
    gen = torch.Generator().manual_seed(3)
    grad = torch.randn(4, elements // 4, generator=gen)
    link.send(_bwd(1, grad))
    peer, msg = listener.recv(TIMEOUT_S)
    assert msg["type"] == "bwd" and msg["step"] == 1 and msg["loss"] == 0.5
    assert torch.equal(msg["grad"], grad)

    # The decoded tensor goes straight back out: a view of a received frame encodes too.
    listener.send(peer, _bwd(2, msg["grad"]))
    back = link.recv(TIMEOUT_S)
    assert back["step"] == 2 and torch.equal(back["grad"], grad)


def test_transport_counts_bytes_not_elements(pair):
    link, listener = pair
    sent0, received0 = link.bytes_sent, listener.bytes_received
    msg = _bwd(1, torch.ones(SMALL_ELEMENTS))
    header = len(encode(msg)[0])
    link.send(msg)
    peer, _ = listener.recv(TIMEOUT_S)
    assert link.bytes_sent - sent0 == header + 4 * SMALL_ELEMENTS
    # The listener also counts the peer identity frame ZeroMQ puts in front.
    assert listener.bytes_received - received0 == len(peer) + header + 4 * SMALL_ELEMENTS


def test_transport_zero_timeout_looks_once(pair):
    link, _ = pair
    with pytest.raises(PeerLostError) as info:
        link.recv(0.0, "bwd")
    assert str(info.value) == f"no bwd from {link.where} within 0 s"


def test_transport_waits_for_a_message_sent_later(pair):
    """The receive waits in one blocking receive, then in a poll (socket and monitor), then
    takes the message."""
    link, listener = pair
    ready = threading.Event()

    def later() -> None:
        ready.wait()
        time.sleep(FAST_WAIT_S + 0.05)
        link.send({"type": "ready", "step": 9})

    sender = threading.Thread(target=later)
    sender.start()
    ready.set()
    _, msg = listener.recv(TIMEOUT_S)
    sender.join()
    assert msg == {"v": 1, "type": "ready", "step": 9}


def test_transport_drops_invalid_and_names_them_on_timeout(pair):
    link, listener = pair
    link.sock.send_multipart([msgpack.packb({"v": 1, "type": "exec", "cmd": "rm"})])
    link.sock.send_multipart([b"\xc1"])
    link.send({"type": "ready", "step": 3})
    _, msg = listener.recv(TIMEOUT_S)
    assert msg["step"] == 3 and listener.rejected == 2
    with pytest.raises(ProtocolError) as junk:
        decode([b"\xc1"])
    with pytest.raises(PeerLostError) as info:
        listener.recv(0.0, "step")
    assert str(info.value) == (
        f"no step from {listener.where} within 0 s (dropped 2 invalid; last: {junk.value})"
    )


def test_transport_knows_the_last_peer_address():
    ctx = zmq.Context()
    listener = Listener(ctx, "tcp://127.0.0.1:*")
    try:
        assert listener.last_peer_address is None
        link = Link(ctx, listener.sock.getsockopt(zmq.LAST_ENDPOINT).decode())
        link.send({"type": "ready", "step": 0})
        listener.recv(TIMEOUT_S)
        assert listener.last_peer_address == "127.0.0.1"
        link.close(0)
    finally:
        listener.close()
        ctx.term()


def test_transport_reports_a_dropped_connection():
    ctx = zmq.Context()
    listener = Listener(ctx, "tcp://127.0.0.1:*")
    try:
        link = Link(ctx, listener.sock.getsockopt(zmq.LAST_ENDPOINT).decode())
        link.send({"type": "ready", "step": 0})
        listener.recv(TIMEOUT_S)
        link.close(0)
        with pytest.raises(PeerLostError) as info:
            listener.recv(TIMEOUT_S, "step")
        assert str(info.value) == (
            f"the connection on {listener.where} dropped while waiting for step "
            f"(peer gone, or silent for {LIVENESS_S:g} s)"
        )
    finally:
        listener.close()
        ctx.term()


def test_transport_reports_a_dropped_connection_to_a_link():
    ctx = zmq.Context()
    listener = Listener(ctx, "tcp://127.0.0.1:*")
    link = Link(ctx, listener.sock.getsockopt(zmq.LAST_ENDPOINT).decode())
    try:
        link.send({"type": "ready", "step": 0})
        peer, _ = listener.recv(TIMEOUT_S)
        listener.send(peer, {"type": "ready", "step": 1})
        assert link.recv(TIMEOUT_S)["step"] == 1  # connected both ways
        listener.close()
        with pytest.raises(PeerLostError) as info:
            link.recv(TIMEOUT_S, "step")
        assert str(info.value) == (
            f"the connection on {link.where} dropped while waiting for step "
            f"(peer gone, or silent for {LIVENESS_S:g} s)"
        )
    finally:
        link.close(0)
        ctx.term()


def test_transport_ties_a_late_drop_to_the_peer_that_left():
    """A peer leaves and the next one's message comes before the listener looked at the
    monitor: the drop ends a wait for the peer that left, not one for the next."""
    ctx = zmq.Context()
    listener = Listener(ctx, "tcp://127.0.0.1:*")
    address = listener.sock.getsockopt(zmq.LAST_ENDPOINT).decode()
    first = Link(ctx, address)
    second = None
    try:
        first.send({"type": "ready", "step": 0})
        gone, _ = listener.recv(TIMEOUT_S)
        first.close(0)
        assert listener.watch.monitor.poll(TIMEOUT_S * 1000)  # the drop, not yet looked at
        second = Link(ctx, address)
        second.send({"type": "ready", "step": 1})
        assert listener.sock.poll(TIMEOUT_S * 1000)  # the next peer's message waits too
        peer, msg = listener.recv(TIMEOUT_S)
        assert msg["step"] == 1 and peer != gone
        with pytest.raises(PeerLostError) as info:
            listener.recv(FAST_WAIT_S, "step", peer)
        # (the timeout shown is what was left of it when the wait began)
        assert str(info.value).startswith(f"no step from {listener.where} within 0.2")
        with pytest.raises(PeerLostError) as info:
            listener.recv(TIMEOUT_S, "step", gone)
        assert str(info.value) == (
            f"the connection on {listener.where} dropped while waiting for step "
            f"(peer gone, or silent for {LIVENESS_S:g} s)"
        )
    finally:
        first.close(0)
        if second is not None:
            second.close(0)
        listener.close()
        ctx.term()


def test_transport_does_not_wait_for_a_stranger_that_never_spoke():
    """A connection that drops without a valid message ends no wait: it is nobody's."""
    ctx = zmq.Context()
    listener = Listener(ctx, "tcp://127.0.0.1:*")
    stranger = ctx.socket(zmq.DEALER)
    try:
        stranger.connect(listener.sock.getsockopt(zmq.LAST_ENDPOINT).decode())
        stranger.send(b"\xc1")  # invalid, so dropped; it also makes sure the connection is up
        with pytest.raises(PeerLostError) as info:
            listener.recv(FAST_WAIT_S, "join")
        assert str(info.value).startswith(f"no join from {listener.where} within")
        stranger.close(linger=0)
        with pytest.raises(PeerLostError) as info:
            listener.recv(2 * FAST_WAIT_S, "join")
        assert str(info.value).startswith(f"no join from {listener.where} within")
    finally:
        stranger.close(linger=0)
        listener.close()
        ctx.term()
