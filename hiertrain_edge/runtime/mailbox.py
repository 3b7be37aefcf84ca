"""Waiting for one expected message on a link while keeping the early ones for later."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

from hiertrain_edge.errors import HierTrainError, PeerLostError, ProtocolError, TransportError
from hiertrain_edge.runtime.bandwidth import Arrival, LinkMeter
from hiertrain_edge.wire.transport import Deadline, Link, Listener

log = logging.getLogger(__name__)


# Messages that belong to one pass over the job's steps; see Mailbox.generation.
STEP_TRAFFIC = frozenset(
    {
        "step",
        "fwd",
        "bwd",
        "grads",
        "weights",
        "snapshot",
        "mirror",
        "moving",
        "units",
        "finish",
        "state",
        "model",
        "done",
        "tiers",
        "probe",
        "probe_ack",
        "table",
        "profile",
        "ready",
    }
)


# Fields a sender attaches through `Mailbox.notes` that the receiver keeps in `heard`.
NOTE_FIELDS = ("bw_ec_mbps",)


class RemoteAbort(TransportError):
    """The peer ended the job and said why."""


class Interrupt(HierTrainError):
    """A message that changes the job's course arrived: a rollback, a new setup, a rejoin.

    Attributes:
        msg: the message.
        peer: the sender's identity on a listener, else None.
    """

    def __init__(self, msg: dict[str, Any], peer: bytes | None = None) -> None:
        super().__init__(f"{msg['type']} arrived while waiting")
        self.msg = msg
        self.peer = peer


class Mailbox:
    """Messages from one peer, matched by (type, step, group).

    A message for a later step is kept until it is asked for; one for an earlier step
    (a late or duplicated reply) is dropped with a log line.

    The mailbox also measures the link from the messages themselves (runtime/bandwidth.py,
    LinkMeter): every message sent carries `gap_s`, the time since our previous one to
    this peer, and, after a new sample, `rx_mbps`, our estimate of the peer's direction to
    us; every message taken off the socket is timed, and whether we were waiting for it.
    """

    def __init__(
        self,
        sock: Link | Listener,
        peer: bytes | None = None,
        name: str = "",
        interrupts: tuple[str, ...] = (),
        adopt: Callable[[bytes, dict[str, Any]], bool] | None = None,
        meter: LinkMeter | None = None,
    ) -> None:
        """`interrupts`: message types that raise Interrupt whenever they arrive; `adopt`:
        on a listener, says whether a message from another peer raises Interrupt (a board
        that restarted, an edge that restarted) instead of being dropped; `meter`: the
        link's measurements, to share between mailboxes of one link (a new one if None)."""
        self.meter = meter if meter is not None else LinkMeter()
        # Extra fields for every message sent (NOTE_FIELDS; None values are left out), and
        # the newest such fields the peer sent us.
        self.notes: Callable[[], dict[str, Any]] | None = None
        self.heard: dict[str, Any] = {}
        self.sock = sock
        self.peer = peer
        self.name = name or sock.where
        self.interrupts = interrupts
        self.adopt = adopt
        # On a listener: says whether a join comes from our own peer (an old attempt to
        # drop quietly) rather than a stranger (who is told the edge is busy).
        self.ours: Callable[[dict[str, Any]], bool] | None = None
        self._backlog: deque[dict[str, Any]] = deque()
        # The job's current generation: the edge draws a new one at every (re)start and
        # rollback, and step traffic of any other generation is stale and dropped.
        self.generation: int | None = None

    def _stale(self, msg: dict[str, Any]) -> bool:
        if self.generation is None or msg["type"] not in STEP_TRAFFIC:
            return False
        if msg.get("gen") == self.generation:
            return False
        log.debug(
            "dropped stale %s of generation %s from %s", msg["type"], msg.get("gen"), self.name
        )
        return True

    def take(self, kind: str) -> dict[str, Any] | None:
        """The newest message of `kind` that has arrived, without waiting; others are kept."""
        while True:
            try:
                msg = self._recv(0.0, kind)
            except PeerLostError:
                break
            if msg["type"] in self.interrupts:
                raise Interrupt(msg, self.peer)
            if not self._stale(msg):
                self._backlog.append(msg)
        found = [m for m in self._backlog if m["type"] == kind]
        for m in found:
            self._backlog.remove(m)
        return found[-1] if found else None

    def clear(self) -> None:
        """Forget kept messages, e.g. after a rollback made them stale."""
        self._backlog.clear()

    def send(self, msg: dict[str, Any]) -> None:
        if self.generation is not None:
            msg = {**msg, "gen": self.generation}
        msg = {**msg, **self._stamps(msg)}
        if isinstance(self.sock, Listener):
            assert self.peer is not None
            self.sock.send(self.peer, msg)
        else:
            self.sock.send(msg)

    def _stamps(self, msg: dict[str, Any]) -> dict[str, Any]:
        """The link-measuring fields for a message we send now (see the class docstring)."""
        stamps: dict[str, Any] = {}
        gap = self.meter.sending(time.monotonic())
        if gap is not None:
            stamps["gap_s"] = gap
        rx = self.meter.report()
        if rx is not None:
            stamps["rx_mbps"] = rx
        if self.notes is not None:
            for name, value in self.notes().items():
                if value is not None and name not in msg:
                    stamps[name] = value
        return stamps

    def _idle(self) -> bool:
        """Nothing is readable: a message the next wait takes arrives during that wait."""
        zsock = getattr(self.sock, "sock", None)
        # ZMQ_EVENTS rather than a poll: it keeps the GIL, which a poll would hand over.
        return zsock is not None and not zsock.getsockopt(zmq.EVENTS) & zmq.POLLIN

    def _arrived(self, msg: dict[str, Any], nbytes: int, waited: bool) -> None:
        """Time a message from our peer for the link meter; keep its notes."""
        now = time.monotonic()
        gap = msg.get("gap_s")
        self.meter.arrived(Arrival(nbytes, now, waited, gap if isinstance(gap, float) else None))
        rx = msg.get("rx_mbps")
        if rx is not None:
            self.meter.heard(float(rx), now)
        for name in NOTE_FIELDS:
            if msg.get(name) is not None:
                self.heard[name] = msg[name]

    def _recv(self, timeout_s: float, what: str) -> dict[str, Any]:
        if isinstance(self.sock, Listener):
            while True:
                waited, before = self._idle(), self.sock.bytes_received
                peer, msg = self.sock.recv(timeout_s, what, self.peer)
                if self.adopt is not None and self.adopt(peer, msg):
                    raise Interrupt(msg, peer)
                if peer == self.peer and msg.get("type") != "join":
                    self._arrived(msg, self.sock.bytes_received - before, waited)
                    return msg
                if msg.get("type") == "join" and self.ours is not None and self.ours(msg):
                    log.info("dropped an old join attempt from %s", self.name)
                    continue
                log.warning(
                    "dropped %s from unexpected peer %s on %s",
                    msg.get("type"),
                    peer.hex(),
                    self.name,
                )
                if msg.get("type") == "join":
                    self.sock.send(
                        peer, {"type": "abort", "reason": "this edge is busy with another board"}
                    )
        waited, before = self._idle(), self.sock.bytes_received
        msg = self.sock.recv(timeout_s, what)
        self._arrived(msg, self.sock.bytes_received - before, waited)
        return msg

    def expect(
        self,
        types: str | tuple[str, ...],
        step: int | None,
        timeout_s: float,
        gid: int | None = None,
    ) -> dict[str, Any]:
        """The next message of one of `types` for `step` (and group `gid`), within the timeout."""
        if isinstance(types, str):
            types = (types,)
        what = f"{'/'.join(types)} for step {step}" + (f" group {gid}" if gid is not None else "")

        def matches(m: dict[str, Any]) -> bool:
            return (
                m["type"] in types
                and (step is None or m.get("step") == step)
                and (gid is None or m.get("gid") == gid)
            )

        for m in list(self._backlog):
            if matches(m):
                self._backlog.remove(m)
                return m
        deadline = Deadline(timeout_s)
        while True:
            left = deadline.left()
            if left <= 0:
                raise PeerLostError(f"no {what} from {self.name} within {timeout_s:.3g} s")
            try:
                msg = self._recv(left, what)
            except TransportError as exc:
                exc.mailbox = self  # type: ignore[attr-defined]  # which peer went silent
                raise
            if msg["type"] in self.interrupts:
                raise Interrupt(msg, self.peer)
            if self._stale(msg):
                continue
            if msg["type"] == "abort":
                abort = RemoteAbort(
                    f"{self.name} ended the job: {msg.get('reason', 'no reason given')}"
                )
                abort.mailbox = self  # type: ignore[attr-defined]
                raise abort
            if matches(msg):
                return msg
            msg_step = msg.get("step")
            if step is not None and isinstance(msg_step, int) and msg_step < step:
                log.info(
                    "dropped late %s for step %s from %s (now at step %d)",
                    msg["type"],
                    msg_step,
                    self.name,
                    step,
                )
                continue
            if len(self._backlog) > 64:
                raise ProtocolError(
                    f"{self.name} sent more than 64 unexpected messages while "
                    f"waiting for {what}; last was {msg['type']!r}"
                )
            self._backlog.append(msg)
