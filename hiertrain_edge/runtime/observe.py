"""The edge's observation hub: one call per event feeds the live status and the metrics.

The edge (and the replanning and fault-handling code) call these methods; each one
updates `EdgeStatus` (served by `StatusServer` when `status_listen` is given) and
`TierMetrics` (served when `metrics_port` is given). Without either, it only keeps the
status in memory, so the calls cost next to nothing.

Optional fields the board adds to its `step` and `finish` messages, read here:
`prev_loss` and `prev_measured_s`, the loss and wall time of the board's previous step.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from hiertrain_edge.errors import HierTrainError
from hiertrain_edge.planning.schedule import Schedule
from hiertrain_edge.runtime.logstep import set_step
from hiertrain_edge.runtime.metrics import TierMetrics
from hiertrain_edge.runtime.status import EdgeStatus, StatusServer, WarningCapture
from hiertrain_edge.wire.transport import STATUS_PORT

log = logging.getLogger(__name__)

PACKAGE_LOGGER = "hiertrain_edge"
# On the default status port the status is best effort: when the port is taken (a second
# edge on the host) or refused, the edge still runs, without a status port, and says so.
_DEFAULT_STATUS_SUFFIX = f":{STATUS_PORT}"


def schedule_summary(schedule: Schedule, num_units: int) -> dict[str, Any]:
    """The schedule as the status shows it: id, groups with cuts, and where each ends."""
    return {
        "id": schedule.schedule_id(),
        "describe": schedule.describe(),
        "groups": [
            {"n": g.n, "cuts": [g.c1, g.c2], "loss_tier": g.loss_tier(num_units)}
            for g in schedule.groups
        ],
    }


class EdgeObserver:
    """Status and metrics of one edge.

    Args:
        listen: the board endpoint (shown in the status).
        cloud: the cloud endpoint, or None for an edge without a cloud.
        links: the edge's sockets by link name ("device_edge", "edge_cloud"); their byte
            counters are turned into the bytes-sent metrics after every step.
        status_listen: endpoint for the status port, or None for no status port. On the
            default port (47811) it is best effort: if that is taken, the edge runs without.
        metrics_port: TCP port for Prometheus metrics, or None for no metrics.
        configure: the socket configurer of the board link (keys), reused for the status port.
    """

    def __init__(
        self,
        listen: str | None = None,
        cloud: str | None = None,
        links: dict[str, Any] | None = None,
        status_listen: str | None = None,
        metrics_port: int | None = None,
        configure: Any = None,
        metrics_address: str = "0.0.0.0",
    ) -> None:
        self.status = EdgeStatus(listen, cloud)
        self.capture = WarningCapture(self.status)
        logging.getLogger(PACKAGE_LOGGER).addHandler(self.capture)
        self.metrics = (
            TierMetrics("edge", metrics_port, metrics_address)
            if metrics_port is not None
            else None
        )
        self.links = {k: v for k, v in (links or {}).items() if v is not None}
        self._counted = {k: (v.bytes_sent, v.bytes_received) for k, v in self.links.items()}
        self.server: StatusServer | None = None
        if status_listen:
            try:
                self.server = StatusServer(self.status, status_listen, configure)
            except HierTrainError as exc:
                if not status_listen.endswith(_DEFAULT_STATUS_SUFFIX):
                    if self.metrics is not None:
                        self.metrics.close()
                    raise
                log.warning("no status port: %s; give --status-listen HOST:PORT to serve one", exc)
        self.board_id: str | None = None
        self.schedule_id: str | None = None
        self._step_started = time.perf_counter()

    # --- a job's life ----------------------------------------------------------

    def job_started(
        self,
        job_id: str,
        board_id: str,
        address: str | None,
        steps: int,
        model: str,
        schedule: Schedule,
        num_units: int,
    ) -> None:
        self.board_id = board_id
        self.status.board_joined(board_id, address)
        uses_cloud = schedule.uses_cloud(num_units)
        self.status.job_started(
            {"id": job_id, "board": board_id, "model": model, "steps": steps, "state": "running"},
            schedule_summary(schedule, num_units),
        )
        self.status.set_cloud("in job" if uses_cloud else "not used")
        self.schedule_id = schedule.schedule_id()
        if self.metrics is not None:
            self.metrics.jobs.inc()
            self.metrics.boards.set(len(self.status.boards))
            self.metrics.set_schedule(self.schedule_id, schedule.describe(), switched=False)

    def step_started(self, step: int) -> None:
        set_step(step)
        self._step_started = time.perf_counter()

    def step_done(self, msg: dict[str, Any]) -> None:
        """The edge finished the step the board's `msg` (its `step` message) started."""
        step = int(msg["step"])
        edge_s = time.perf_counter() - self._step_started
        loss, measured = _number(msg.get("prev_loss")), _number(msg.get("prev_measured_s"))
        self.status.step_done(step, edge_s)
        self.status.board_reported(loss, measured)
        bw_de, predicted = _number(msg.get("bw_de_mbps")), _number(msg.get("predicted_s"))
        if bw_de is not None:
            self.set_bandwidth("device_edge", bw_de)
        if predicted is not None:
            self.set_predicted(predicted)
        if self.metrics is not None:
            self.metrics.steps.inc()
            self.metrics.step_seconds.observe(edge_s)
            if loss is not None:
                self.metrics.loss.set(loss)
            self._count_bytes()

    def job_finished(self, msg: dict[str, Any]) -> None:
        """The board's `finish` message: it carries the last step's loss and time."""
        loss, measured = _number(msg.get("prev_loss")), _number(msg.get("prev_measured_s"))
        self.status.board_reported(loss, measured)
        if self.metrics is not None and loss is not None:
            self.metrics.loss.set(loss)
        self.status.job_ended("finished")

    def job_ended(self, error: str | None = None) -> None:
        """The job is over, finished or not; the board is no longer joined."""
        job = self.status.job
        if error is not None:
            self.status.job_ended(f"failed: {error}")
        elif job is not None and job.get("state") == "running":
            self.status.job_ended("stopped early (see the warnings)")
        if self.board_id is not None:
            self.status.board_left(self.board_id)
            self.board_id = None
        if self.status.cloud["state"] in ("in job", "not used"):
            self.status.set_cloud("idle" if self.status.cloud["address"] else "none")
        set_step(None)
        if self.metrics is not None:
            self.metrics.boards.set(len(self.status.boards))
            self._count_bytes()

    # --- events from the planner and the fault handling ----------------------------

    def schedule_changed(
        self,
        step: int,
        schedule: Schedule,
        num_units: int,
        predicted_s: float | None = None,
    ) -> None:
        """From `step` on, `schedule` runs; the caller logs the switch and its reasons."""
        new_id = schedule.schedule_id()
        switched = self.schedule_id is not None and new_id != self.schedule_id
        self.schedule_id = new_id
        self.status.set_schedule(schedule_summary(schedule, num_units), switched)
        if predicted_s is not None:
            self.set_predicted(predicted_s)
        if self.metrics is not None:
            self.metrics.set_schedule(new_id, schedule.describe(), switched)

    def set_predicted(self, predicted_s: float | None) -> None:
        self.status.set_predicted(predicted_s)
        if self.metrics is not None and predicted_s is not None:
            self.metrics.predicted_seconds.set(predicted_s)

    def set_bandwidth(self, link: str, mbps: float) -> None:
        """A fresh estimate of `link` ("device_edge" or "edge_cloud") in Mbit/s."""
        self.status.set_bandwidth(link, mbps)
        if self.metrics is not None:
            self.metrics.bandwidth.labels(link=link).set(mbps * 1e6)

    def tier_lost(self, tier: str, reason: str | None = None) -> None:
        if tier == "cloud":
            self.status.set_cloud("lost", reason)
        if self.metrics is not None:
            self.metrics.tier_lost.labels(tier=tier).inc()

    def tier_returned(self, tier: str) -> None:
        if tier == "cloud":
            self.status.set_cloud("in job")

    # --- teardown -------------------------------------------------------------------

    def _count_bytes(self) -> None:
        assert self.metrics is not None
        for name, sock in self.links.items():
            sent0, recv0 = self._counted[name]
            sent, received = sock.bytes_sent, sock.bytes_received
            self.metrics.add_bytes(name, sent - sent0, received - recv0)
            self._counted[name] = (sent, received)

    def close(self) -> None:
        set_step(None)
        logging.getLogger(PACKAGE_LOGGER).removeHandler(self.capture)
        if self.server is not None:
            self.server.close()
        if self.metrics is not None:
            self.metrics.close()


def _number(value: Any) -> float | None:
    """A float from an optional message field; anything else (a hostile peer) is ignored."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None
