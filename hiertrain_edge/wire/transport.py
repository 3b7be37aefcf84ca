"""ZeroMQ links between tiers: boards and edges connect outward (they may sit behind NAT).

The edge binds a ROUTER for boards and connects a DEALER to the cloud's ROUTER. DEALER
and ROUTER never lock up after a timeout the way REQ/REP does, and every wait here has
a timeout, so no tier hangs forever on a silent peer.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import zmq

from hiertrain_edge.errors import PeerLostError, ProtocolError, TransportError
from hiertrain_edge.wire import schema
from hiertrain_edge.wire.codec import DEFAULT_MAX_MESSAGE_BYTES, decode, encode
from hiertrain_edge.wire.security import (
    HandshakeWatch,
    Security,
    release_listener,
    secure_link,
    secure_listener,
)

log = logging.getLogger(__name__)

EDGE_PORT = 47810  # boards connect here
HEARTBEAT_IVL_MS = 1000
CLOSE_LINGER_S = 5.0  # how long a closing socket may still deliver what it queued
# How long a silent peer may stay silent before it is declared lost (the bound of the
# liveness requirement); HIERTRAIN_EDGE_LIVENESS_S overrides it.
LIVENESS_S = float(os.environ.get("HIERTRAIN_EDGE_LIVENESS_S", "10"))
CLOUD_PORT = 47820  # edges connect here
STATUS_PORT = 47811  # operators' status queries to the edge
# Messages queued per peer before ZeroMQ stops reading its socket: with MAXMSGSIZE per
# frame this bounds what a flooding peer can make a tier hold.
RCVHWM_MESSAGES = 64
# Invalid messages logged at WARNING per socket and window; the rest at DEBUG, so a
# flooding peer cannot flood the journal.
REJECTS_LOGGED = 5
REJECT_WINDOW_S = 10.0
_MAX_POLL_MS = 2**31 - 1  # one zmq_poll at most (its timeout is an int of ms); longer waits loop
# A wait starts with one blocking receive of at most this long, and only then polls the
# socket and its monitor together. A message on its way (a step's reply) costs one system
# call that lets go of the GIL instead of a poll and a receive; a dropped connection is
# noticed at most this late, and the drop is still tied to its own connection.
FAST_WAIT_S = 0.25
_SRCFD = 2  # zmq_msg_get's ZMQ_SRCFD: the descriptor of the connection a message came on
_LOST_KEPT = 64  # dropped peers remembered until a wait for them reports the drop


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
        self.bounds: schema.JobBounds | None = None  # set by the runtime once a job is known
        self.rejected = 0  # received messages dropped as invalid
        self.last_rejection: str | None = None
        self._reject_window = (-REJECT_WINDOW_S, 0)  # (start, messages logged in it)
        self.watch: HandshakeWatch | None = None
        self._poller: zmq.Poller | None = None  # the socket and its handshake monitor
        self._rcvtimeo_ms = -1  # ZMQ_RCVTIMEO as set on the socket (-1: ZeroMQ's default)
        sock.setsockopt(zmq.LINGER, 0)
        # ZeroMQ's own heartbeats run in its I/O thread, so a tier busy computing still
        # answers them; a peer that died or went silent drops the connection within
        # LIVENESS_S, and the waiting side hears of it (see _recv_frames).
        sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(LIVENESS_S * 1000))
        sock.setsockopt(zmq.HEARTBEAT_TTL, int(LIVENESS_S * 1000))
        sock.setsockopt(zmq.MAXMSGSIZE, max_bytes)
        sock.setsockopt(zmq.RCVHWM, RCVHWM_MESSAGES)

    def _send(self, frames: list[Any]) -> None:
        """Send one message. Frames under ZERO_COPY_MIN_BYTES (pyzmq's copy_threshold) are
        copied into ZeroMQ; larger tensors go out without a copy, so they must not change
        in place before the peer answers (see the codec's notes)."""
        sock = self.sock
        last = len(frames) - 1
        sent = 0
        # Frame by frame rather than send_multipart: the same calls without its per-frame
        # checks, which cost more than the send itself for a small message.
        try:
            for i, f in enumerate(frames):
                sent += len(f) if type(f) is bytes else memoryview(f).nbytes
                sock.send(f, zmq.SNDMORE if i < last else 0, copy=False)
        except zmq.Again:  # a link's send timed out: no connection to send on
            if self.watch is not None:
                self.watch.check()  # a refused handshake raises PeerRefusedError here
            raise PeerLostError(
                f"could not send to {self.where} within {LIVENESS_S:g} s: no connection "
                "(the peer is not running, not reachable, or refusing this tier)"
            ) from None
        self.bytes_sent += sent

    def _recv_frames(
        self, timeout_s: float, what: str, peer: bytes | None = None
    ) -> list[zmq.Frame]:
        """The frames of the next message within `timeout_s`.

        The wait is one blocking receive of at most FAST_WAIT_S (a message on its way,
        the common case, costs one call that lets go of the GIL); a longer wait then polls
        the socket and the handshake monitor together, so a refused handshake or a
        dropped connection ends it at once. Before every wait the monitor is asked for
        events (a ZMQ_EVENTS query, no system call) and read only when it holds some. A
        dropped connection ends a wait only if it is the one the wait is for (`_drop_for`):
        a late drop of a peer that left is not taken for the next one's.

        Raises:
            PeerRefusedError: the peer refused this tier's handshake (a client's link).
            PeerLostError: the connection dropped and no message is waiting, or no message
                came within the timeout.
        """
        sock = self.sock
        watch = self.watch
        end = time.monotonic() + timeout_s
        first = True
        while True:
            if watch is not None:
                if watch.pending():
                    watch.check()  # a refused handshake raises PeerRefusedError here
                    self._note_drops()
                if self._drop_for(peer):
                    # A message that came before the drop is still delivered (and the drop
                    # reported at the first wait that finds none).
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                        break
                    except zmq.Again:
                        self._forget_drop(peer)
                        raise PeerLostError(
                            f"the connection on {self.where} dropped while waiting for {what} "
                            f"(peer gone, or silent for {LIVENESS_S:g} s)"
                        ) from None
            left = end - time.monotonic()
            if first and left > 0:
                # One blocking receive: nothing else on this path lets go of the GIL.
                first = False
                wait_ms = min(math.ceil(left * 1e3), int(FAST_WAIT_S * 1e3))
                if wait_ms != self._rcvtimeo_ms:
                    sock.setsockopt(zmq.RCVTIMEO, wait_ms)
                    self._rcvtimeo_ms = wait_ms
                try:
                    frame = sock.recv(copy=False)
                except zmq.Again:
                    continue  # a long wait: the monitor is polled too from now on
                frames = [frame]
                while frame.more:  # the rest of a message arrives with its first frame
                    frame = sock.recv(copy=False)
                    frames.append(frame)
                break
            # ZMQ_EVENTS keeps the GIL, where a receive that finds nothing lets go of it.
            if sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                break
            if left <= 0:
                dropped = ""
                if self.last_rejection is not None:
                    dropped = f" (dropped {self.rejected} invalid; last: {self.last_rejection})"
                raise PeerLostError(
                    f"no {what} from {self.where} within {timeout_s:.3g} s{dropped}"
                )
            timeout_ms = min(math.ceil(left * 1e3), _MAX_POLL_MS)
            if watch is None:
                sock.poll(timeout_ms, zmq.POLLIN)
            else:
                if self._poller is None:
                    self._poller = zmq.Poller()
                    self._poller.register(sock, zmq.POLLIN)
                    self._poller.register(watch.monitor, zmq.POLLIN)
                self._poller.poll(timeout_ms)
        received = 0
        for f in frames:
            received += len(f)
        self.bytes_received += received
        return frames

    def _note_drops(self) -> None:
        """Take the drops the monitor reported; subclasses say whose they are."""

    def _drop_for(self, peer: bytes | None) -> bool:
        """Whether a dropped connection ends a wait for `peer`."""
        return False

    def _forget_drop(self, peer: bytes | None) -> None:
        """A wait for `peer` reported its drop."""

    def _reject(self, exc: ProtocolError, sender: str) -> None:
        """Drop an invalid message with a logged reason; the tier keeps running."""
        self.rejected += 1
        self.last_rejection = str(exc)
        now = time.monotonic()
        start, logged = self._reject_window
        if now - start >= REJECT_WINDOW_S:
            start, logged = now, 0
        self._reject_window = (start, logged + 1)
        level = logging.WARNING if logged < REJECTS_LOGGED else logging.DEBUG
        log.log(
            level,
            "dropped an invalid message from %s on %s (%d so far): %s",
            sender,
            self.where,
            self.rejected,
            exc,
        )

    def _valid(self, frames: list[Any], peer: bytes | None) -> dict[str, Any] | None:
        try:
            return schema.check(decode(frames, self.max_bytes), self.bounds)
        except ProtocolError as exc:
            self._reject(exc, "the peer" if peer is None else f"peer {peer.hex()}")
            return None

    def close(self, linger_s: float = CLOSE_LINGER_S) -> None:
        """Close, first giving queued messages (a job's final model) `linger_s` to leave."""
        if self.watch is not None:
            self.watch.close()
        self.sock.close(linger=int(linger_s * 1000))


class Link(_Socket):
    """A DEALER that connects to one peer's ROUTER."""

    def __init__(
        self,
        ctx: zmq.Context,
        address: str,
        max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        configure: Any = None,
        security: Security | None = None,
    ) -> None:
        if isinstance(configure, Security):  # keys handed over where a configurer is taken
            security, configure = configure, None
        sock = ctx.socket(zmq.DEALER)
        if configure is not None:
            configure(sock)
        try:
            curve = secure_link(sock, security, address)
        except BaseException:
            sock.close(linger=0)
            raise
        super().__init__(sock, address, max_bytes)
        self.watch = HandshakeWatch(
            sock, address, server=False, curve=curve, own_key=security and security.public_key
        )
        self._drops = 0  # the link's connection dropped (its one peer went away) this often
        # A send blocks only while no connection exists (e.g. after a refused handshake,
        # between reconnects): bounded, so a refused tier says so instead of hanging.
        sock.setsockopt(zmq.SNDTIMEO, int(LIVENESS_S * 1000))
        try:
            sock.connect(address)
        except zmq.ZMQError as exc:
            raise TransportError(f"cannot connect to {address}: {exc}") from exc

    def send(self, msg: dict[str, Any]) -> None:
        self._send(encode(msg))

    def _note_drops(self) -> None:
        assert self.watch is not None
        self._drops += len(self.watch.dropped)
        self.watch.dropped.clear()

    def _drop_for(self, peer: bytes | None) -> bool:
        return self._drops > 0

    def _forget_drop(self, peer: bytes | None) -> None:
        self._drops = 0

    def recv(self, timeout_s: float, what: str = "message") -> dict[str, Any]:
        """The next valid message; invalid ones are dropped and logged on the way."""
        deadline = Deadline(timeout_s)
        while True:
            frames = self._recv_frames(deadline.left(), what)
            msg = self._valid(frames, None)
            if msg is not None:
                return msg


class Listener(_Socket):
    """A ROUTER that binds; every message comes with the sending peer's identity."""

    def __init__(
        self,
        ctx: zmq.Context,
        address: str,
        max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        configure: Any = None,
        security: Security | None = None,
    ) -> None:
        if isinstance(configure, Security):  # keys handed over where a configurer is taken
            security, configure = configure, None
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a send to a vanished peer raises
        if configure is not None:
            configure(sock)
        try:
            self.zap_domain = secure_listener(ctx, sock, security, address)
        except BaseException:
            sock.close(linger=0)
            raise
        self.ctx = ctx
        self._last_identity: zmq.Frame | None = None  # of the last valid message
        # Which peer each connection belongs to (ZeroMQ names a peer by a routing id of its
        # own per connection, a connection by its descriptor), known from the first valid
        # message, and peers whose connection dropped until a wait for them reports it.
        self._peer_on: dict[int, bytes] = {}
        self._connection_of: dict[bytes, int] = {}
        self._lost: dict[bytes, None] = {}  # in the order they dropped
        super().__init__(sock, address, max_bytes)
        self.watch = HandshakeWatch(sock, address, server=True, curve=self.zap_domain is not None)
        try:
            sock.bind(address)
        except zmq.ZMQError as exc:
            self.close()
            raise TransportError(
                f"cannot listen on {address}: {exc} (is another tier already running there?)"
            ) from exc

    def send(self, peer: bytes, msg: dict[str, Any]) -> None:
        try:
            self._send([peer, *encode(msg)])
        except zmq.ZMQError as exc:
            raise PeerLostError(f"peer {peer.hex()} on {self.where} is gone: {exc}") from exc

    def recv(
        self, timeout_s: float, what: str = "message", peer: bytes | None = None
    ) -> tuple[bytes, dict[str, Any]]:
        """The next valid message and its sender; invalid ones are dropped and logged.

        `peer`: the peer this wait is for; only the drop of its connection ends the wait
        early. None: the drop of any peer's connection does (a peer is a connection that
        sent a valid message; strangers that never did are not waited for).
        """
        deadline = Deadline(timeout_s)
        while True:
            frames = self._recv_frames(deadline.left(), what, peer)
            if len(frames) < 2:
                self._reject(ProtocolError("message has no peer identity frame"), "a peer")
                continue
            sender = frames[0].bytes
            msg = self._valid(frames[1:], sender)
            if msg is not None:
                self._last_identity = frames[0]
                if sender not in self._connection_of and sender not in self._lost:
                    self._learn_connection(sender, frames[0])
                return sender, msg

    def _learn_connection(self, peer: bytes, identity: zmq.Frame) -> None:
        """Tie `peer` to the connection its first valid message came on.

        The monitor's pending events are handled first: a connection that dropped earlier
        on the same descriptor then is no longer taken for this one. If this peer's own
        connection already dropped, the peer is lost at once.
        """
        watch = self.watch
        assert watch is not None
        if watch.pending():
            watch.check()
            self._note_drops()
        connection = identity.get(_SRCFD)
        if connection not in watch.open:
            self._lose(peer)
            return
        old = self._peer_on.pop(connection, None)
        if old is not None:  # a new connection on its descriptor: it is gone
            del self._connection_of[old]
            self._lose(old)
        self._peer_on[connection] = peer
        self._connection_of[peer] = connection

    def _lose(self, peer: bytes) -> None:
        self._lost[peer] = None
        if len(self._lost) > _LOST_KEPT:  # peers nobody waits for any more
            del self._lost[next(iter(self._lost))]

    def _note_drops(self) -> None:
        assert self.watch is not None
        for connection in self.watch.dropped:
            peer = self._peer_on.pop(connection, None)
            if peer is not None:  # else a stranger that never sent a valid message
                del self._connection_of[peer]
                self._lose(peer)
        self.watch.dropped.clear()

    def _drop_for(self, peer: bytes | None) -> bool:
        return bool(self._lost) and (peer is None or peer in self._lost)

    def _forget_drop(self, peer: bytes | None) -> None:
        if peer is None:
            self._lost.clear()
        else:
            del self._lost[peer]

    @property
    def last_peer_address(self) -> str | None:
        """The IP address of the last valid message's sender (None where it cannot tell).

        Looked up only when asked: the lookup costs microseconds per message otherwise.
        """
        if self._last_identity is None:
            return None
        return _peer_address(self._last_identity)

    def close(self) -> None:
        super().close()
        release_listener(self.ctx, self.zap_domain)


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
