"""Prometheus metrics of a tier, served over HTTP with prometheus-client on `--metrics-port`."""

from __future__ import annotations

import logging
from typing import Any

from hiertrain_edge.errors import ConfigError

log = logging.getLogger(__name__)

# Step times run from milliseconds (small CNN on loopback) to minutes (VGG-11 over LTE).
STEP_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300)
LINKS = ("device_edge", "edge_cloud")  # the `link` label: the two links of the chain


class TierMetrics:
    """The metrics one tier exports, in a registry of its own, served on `port`.

    Names follow the Prometheus conventions: a `hiertrain_` prefix, base units in the
    name (seconds, bytes, bits per second) and `_total` on counters.
    """

    def __init__(self, tier: str, port: int | None, address: str = "0.0.0.0") -> None:
        try:
            import prometheus_client as prom
        except ImportError as exc:
            raise ConfigError(
                "--metrics-port needs prometheus-client; install it with "
                "pip install 'hiertrain-edge[metrics]'"
            ) from exc
        self.tier = tier
        self.registry = prom.CollectorRegistry(auto_describe=True)
        r = self.registry
        self.steps = prom.Counter("hiertrain_steps", "Training steps finished", registry=r)
        self.step_seconds = prom.Histogram(
            "hiertrain_step_seconds",
            "Wall time of one training step on this tier",
            buckets=STEP_SECONDS_BUCKETS,
            registry=r,
        )
        self.loss = prom.Gauge("hiertrain_loss", "Training loss of the last step", registry=r)
        self.predicted_seconds = prom.Gauge(
            "hiertrain_predicted_step_seconds",
            "The planner's predicted step time for the current schedule",
            registry=r,
        )
        self.bandwidth = prom.Gauge(
            "hiertrain_link_bandwidth_bits_per_second",
            "Measured bandwidth of a link",
            ["link"],
            registry=r,
        )
        self.sent_bytes = prom.Counter(
            "hiertrain_link_sent_bytes",
            "Bytes this tier sent on a link (headers and tensors)",
            ["link"],
            registry=r,
        )
        self.received_bytes = prom.Counter(
            "hiertrain_link_received_bytes",
            "Bytes this tier received on a link",
            ["link"],
            registry=r,
        )
        self.schedule = prom.Info(
            "hiertrain_schedule", "The schedule now in use: id and groups", registry=r
        )
        self.schedule_switches = prom.Counter(
            "hiertrain_schedule_switches", "Schedule switches between steps", registry=r
        )
        self.tier_lost = prom.Counter(
            "hiertrain_tier_lost", "Times a tier was declared lost", ["tier"], registry=r
        )
        # NaN until known: "no value yet" rather than a loss or a prediction of zero.
        self.loss.set(float("nan"))
        self.predicted_seconds.set(float("nan"))
        self.boards = prom.Gauge("hiertrain_boards_joined", "Boards in a job now", registry=r)
        self.jobs = prom.Counter("hiertrain_jobs", "Jobs started", registry=r)
        self.server: Any = None
        if port is not None:
            try:
                started = prom.start_http_server(port, addr=address, registry=r)
            except OSError as exc:
                raise ConfigError(
                    f"cannot serve metrics on {address}:{port}: {exc}; choose another "
                    "--metrics-port"
                ) from exc
            self.server = started[0] if started else None  # (server, thread) since 0.17
            log.info("%s metrics served on http://%s:%d/metrics", tier, address, port)

    def set_schedule(self, schedule_id: str, describe: str, switched: bool) -> None:
        self.schedule.info({"schedule_id": schedule_id, "groups": describe})
        if switched:
            self.schedule_switches.inc()

    def add_bytes(self, link: str, sent: int, received: int) -> None:
        if sent > 0:
            self.sent_bytes.labels(link=link).inc(sent)
        if received > 0:
            self.received_bytes.labels(link=link).inc(received)

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
