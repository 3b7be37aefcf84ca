"""ZeroMQ links between tiers: boards and edges connect outward (they may sit behind NAT).

The edge binds a ROUTER for boards and connects a DEALER to the cloud's ROUTER. DEALER
and ROUTER never lock up after a timeout the way REQ/REP does, and every wait here has
a timeout, so no tier hangs forever on a silent peer.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import zmq

from hiertrain_edge.errors import PeerLostError, ProtocolError, TransportError
from hiertrain_edge.wire.codec import DEFAULT_MAX_MESSAGE_BYTES, decode, encode

log = logging.getLogger(__name__)

EDGE_PORT = 47810  # boards connect here
CLOUD_PORT = 47820  # edges connect here
STATUS_PORT = 47811  # operators' status queries to the edge


def endpoint(host: str, default_port: int) -> str:
    """`host`, `host:port` or a full ZeroMQ endpoint, as a tcp:// endpoint."""
    if "://" in host:
        return host
    if host.count(":") == 1:
        name, _, port = host.partition(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise TransportError(f"port in {host!r} must be 1..65535")
        return f"tcp://{name}:{port}"
    if host.startswith("[") or host.count(":") > 1:  # IPv6
        return f"tcp://{host if host.startswith('[') else '[' + host + ']'}:{default_port}"
    return f"tcp://{host}:{default_port}"


class _Socket:
    """Shared send/receive with limits; subclasses choose bind or connect."""

    def __init__(self, sock: zmq.Socket, where: str, max_bytes: int) -> None:
        self.sock = sock
        self.where = where
        self.max_bytes = max_bytes
        self.bytes_sent = 0
        self.bytes_received = 0
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, max_bytes)

    def _send(self, frames: list[Any]) -> None:
        self.bytes_sent += sum(len(memoryview(f)) for f in frames)
        self.sock.send_multipart(frames, copy=False)

    def _recv_frames(self, timeout_s: float, what: str) -> list[zmq.Frame]:
        if not self.sock.poll(int(timeout_s * 1000), zmq.POLLIN):
            raise PeerLostError(f"no {what} from {self.where} within {timeout_s:g} s")
        frames = self.sock.recv_multipart(copy=False)
        self.bytes_received += sum(len(f.buffer) for f in frames)
        return frames

    def close(self) -> None:
        self.sock.close(linger=0)


class Link(_Socket):
    """A DEALER that connects to one peer's ROUTER."""

    def __init__(
        self,
        ctx: zmq.Context,
        address: str,
        max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        configure: Any = None,
    ) -> None:
        sock = ctx.socket(zmq.DEALER)
        if configure is not None:
            configure(sock)
        super().__init__(sock, address, max_bytes)
        try:
            sock.connect(address)
        except zmq.ZMQError as exc:
            raise TransportError(f"cannot connect to {address}: {exc}") from exc

    def send(self, msg: dict[str, Any]) -> None:
        self._send(encode(msg))

    def recv(self, timeout_s: float, what: str = "message") -> dict[str, Any]:
        frames = self._recv_frames(timeout_s, what)
        return decode(frames, self.max_bytes)


class Listener(_Socket):
    """A ROUTER that binds; every message comes with the sending peer's identity."""

    def __init__(
        self,
        ctx: zmq.Context,
        address: str,
        max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        configure: Any = None,
    ) -> None:
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a send to a vanished peer raises
        if configure is not None:
            configure(sock)
        super().__init__(sock, address, max_bytes)
        try:
            sock.bind(address)
        except zmq.ZMQError as exc:
            raise TransportError(
                f"cannot listen on {address}: {exc} (is another tier already running there?)"
            ) from exc

    def send(self, peer: bytes, msg: dict[str, Any]) -> None:
        try:
            self._send([peer, *encode(msg)])
        except zmq.ZMQError as exc:
            raise PeerLostError(f"peer {peer.hex()} on {self.where} is gone: {exc}") from exc

    def recv(self, timeout_s: float, what: str = "message") -> tuple[bytes, dict[str, Any]]:
        frames = self._recv_frames(timeout_s, what)
        if len(frames) < 2:
            raise ProtocolError(f"message on {self.where} has no peer identity frame")
        self.last_peer_address = _peer_address(frames[0])
        return bytes(frames[0].buffer), decode(frames[1:], self.max_bytes)


def _peer_address(frame: zmq.Frame) -> str | None:
    """The sender's IP address, as ZeroMQ saw the connection (None where it cannot tell)."""
    try:
        return frame.get("Peer-Address") or None
    except zmq.ZMQError:
        return None


class Deadline:
    """A time budget shared by several waits."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())
