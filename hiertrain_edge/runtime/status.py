"""The edge's live status: what an operator asks with `hiertrain-edge status`, served on a port.

`EdgeStatus` is the state the edge keeps up to date (boards, step, loss, schedule,
bandwidths, cloud, warnings); `StatusServer` answers `{"type": "status"}` requests on a
ROUTER socket from a background thread, with the same codec (and the same socket
security, through `configure`) as the board link; `query_status` is the client.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

import zmq

from hiertrain_edge.errors import HierTrainError, PeerLostError, ProtocolError, TransportError
from hiertrain_edge.wire.transport import Link, Listener

log = logging.getLogger(__name__)

STATUS_FORMAT_VERSION = 1
RATE_WINDOW_STEPS = 20  # steps/s is taken over this many last steps
WARNINGS_KEPT = 10  # the status shows this many last warnings and errors
MAX_REASON_CHARS = 1000  # texts in a status stay well under the wire's string limit
_SERVER_POLL_S = 0.2  # how often the status thread checks that it should stop
STATUS_TIMEOUT_S = 5.0


class EdgeStatus:
    """Everything `hiertrain-edge status` shows, updated by the edge, read from another thread.

    Every method takes the lock, so the status thread always sees a consistent snapshot.
    """

    def __init__(self, listen: str | None = None, cloud: str | None = None) -> None:
        self._lock = threading.Lock()
        self.started = time.time()
        self.listen = listen
        self.boards: dict[str, dict[str, Any]] = {}
        self.job: dict[str, Any] | None = None
        self.step: int | None = None
        self.loss: float | None = None
        self.measured_s: float | None = None
        self.edge_step_s: float | None = None
        self.predicted_s: float | None = None
        self.bandwidth_mbps: dict[str, float] = {}
        self.schedule: dict[str, Any] | None = None
        self.schedule_changes = 0
        self.cloud: dict[str, Any] = {"address": cloud, "state": "idle" if cloud else "none"}
        self.warnings: collections.deque[dict[str, Any]] = collections.deque(maxlen=WARNINGS_KEPT)
        self._step_times: collections.deque[float] = collections.deque(maxlen=RATE_WINDOW_STEPS)

    # --- updates from the edge ---------------------------------------------------

    def board_joined(self, board_id: str, address: str | None) -> None:
        with self._lock:
            self.boards[board_id] = {"id": board_id, "address": address, "since": time.time()}

    def board_left(self, board_id: str) -> None:
        with self._lock:
            self.boards.pop(board_id, None)

    def job_started(self, job: dict[str, Any], schedule: dict[str, Any]) -> None:
        with self._lock:
            self.job = {**job, "started": time.time()}
            self.schedule = schedule
            self.step = None
            self.loss = self.measured_s = self.edge_step_s = self.predicted_s = None
            self._step_times.clear()

    def job_ended(self, state: str) -> None:
        with self._lock:
            if self.job is not None:
                self.job = {**self.job, "state": state, "ended": time.time()}

    def step_done(self, step: int, edge_step_s: float) -> None:
        """The edge finished `step` after `edge_step_s` seconds of its own."""
        with self._lock:
            self.step = step
            self.edge_step_s = edge_step_s
            self._step_times.append(time.monotonic())

    def board_reported(self, loss: float | None, measured_s: float | None) -> None:
        """The board's loss and wall time of its last finished step, when it sent them."""
        with self._lock:
            if loss is not None:
                self.loss = loss
            if measured_s is not None:
                self.measured_s = measured_s

    def set_schedule(self, schedule: dict[str, Any], switched: bool) -> None:
        with self._lock:
            self.schedule = schedule
            self.schedule_changes += int(switched)

    def set_predicted(self, predicted_s: float | None) -> None:
        with self._lock:
            self.predicted_s = predicted_s

    def set_bandwidth(self, link: str, mbps: float) -> None:
        with self._lock:
            self.bandwidth_mbps[link] = mbps

    def set_cloud(self, state: str, reason: str | None = None) -> None:
        with self._lock:
            self.cloud = {
                "address": self.cloud["address"],
                "state": state,
                "since": time.time(),
                **({"reason": reason[:MAX_REASON_CHARS]} if reason else {}),
            }

    def add_warning(self, record: logging.LogRecord) -> None:
        with self._lock:
            self.warnings.append(
                {
                    "time": record.created,
                    "level": record.levelname,
                    "logger": record.name,
                    "message": record.getMessage()[:MAX_REASON_CHARS],
                }
            )

    # --- reading ------------------------------------------------------------------

    def steps_per_s(self) -> float | None:
        times = self._step_times
        if len(times) < 2 or times[-1] <= times[0]:
            return None
        return (len(times) - 1) / (times[-1] - times[0])

    def snapshot(self) -> dict[str, Any]:
        """A plain dict (msgpack- and JSON-safe) of the current state."""
        with self._lock:
            return {
                "format": STATUS_FORMAT_VERSION,
                "time": time.time(),
                "up_s": time.time() - self.started,
                "listen": self.listen,
                "boards": [dict(b) for b in self.boards.values()],
                "job": dict(self.job) if self.job else None,
                "step": self.step,
                "loss": self.loss,
                "steps_per_s": self.steps_per_s(),
                "measured_s": self.measured_s,
                "edge_step_s": self.edge_step_s,
                "predicted_s": self.predicted_s,
                "bandwidth_mbps": dict(self.bandwidth_mbps),
                "schedule": self.schedule,
                "schedule_changes": self.schedule_changes,
                "cloud": dict(self.cloud),
                "warnings": list(self.warnings),
            }


class WarningCapture(logging.Handler):
    """Keeps every WARNING and above of the package's loggers in the status."""

    def __init__(self, status: EdgeStatus) -> None:
        super().__init__(logging.WARNING)
        self.status = status

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.status.add_warning(record)
        except Exception:  # a status must never break logging
            self.handleError(record)


class StatusServer:
    """Answers status requests on `address` from a background thread.

    Args:
        status: the state to report.
        address: a ZeroMQ endpoint to bind, e.g. tcp://*:47811.
        configure: called with the ROUTER socket before it binds, exactly as for the
            board link's `Listener`, so the status port gets the same keys and checks.
    """

    def __init__(
        self,
        status: EdgeStatus,
        address: str,
        configure: Any = None,
        ctx: zmq.Context | None = None,
    ) -> None:
        self.status = status
        # Bound here so a busy port fails at start; the socket is used only by the thread
        # afterwards (ZeroMQ sockets may move between threads across a memory barrier).
        self.listener = Listener(ctx or zmq.Context.instance(), address, configure=configure)
        self.address = self.listener.sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="edge-status", daemon=True)
        self._thread.start()
        log.info("edge status served on %s", self.address)

    def _serve(self) -> None:
        sock = self.listener
        try:
            while not self._stop.is_set():
                if not sock.sock.poll(int(_SERVER_POLL_S * 1000), zmq.POLLIN):
                    continue
                try:
                    peer, msg = sock.recv(0.0, "status request")
                except PeerLostError:
                    continue  # the message was invalid; the listener logged why and dropped it
                except HierTrainError as exc:
                    log.info("status request not served: %s", exc)
                    continue
                if msg["type"] == "status":
                    reply = {"type": "status", "status": self.status.snapshot()}
                else:
                    reply = {
                        "type": "error",
                        "reason": f"unknown request {msg['type']!r}; expected 'status'",
                    }
                try:
                    sock.send(peer, reply)
                except TransportError as exc:
                    log.info("status reply not sent: %s", exc)
        finally:
            sock.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5 * _SERVER_POLL_S + 1.0)


def query_status(
    address: str,
    timeout_s: float = STATUS_TIMEOUT_S,
    configure: Any = None,
    ctx: zmq.Context | None = None,
) -> dict[str, Any]:
    """Ask the edge at `address` for its status.

    Raises:
        PeerLostError: no answer within `timeout_s` (the edge is down, or refused us).
        ProtocolError: the edge answered something other than a status.
    """
    link = Link(ctx or zmq.Context.instance(), address, configure=configure)
    try:
        link.send({"type": "status"})
        reply = link.recv(timeout_s, "status reply")
    finally:
        link.close()
    if reply["type"] != "status" or not isinstance(reply.get("status"), dict):
        raise ProtocolError(
            f"the edge at {address} answered {reply['type']!r}: {reply.get('reason', reply)}"
        )
    return reply["status"]
