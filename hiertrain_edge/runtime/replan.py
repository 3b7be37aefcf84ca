"""Bandwidth-adaptive schedules in the field: probing a link, and the board's per-step
choice from the edge's schedule table (lookup only: the board never runs the solver)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from hiertrain_edge.errors import ConfigError
from hiertrain_edge.planning.lookup import Selector
from hiertrain_edge.planning.schedule import Schedule
from hiertrain_edge.planning.table import JobIdentity, ScheduleTable
from hiertrain_edge.runtime.bandwidth import BandwidthEstimator, LinkMeter
from hiertrain_edge.runtime.mailbox import Mailbox

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 30.0
START_PROBES = 3  # probes before the first plan, so the table lookup starts from a rate
# A link the schedule leaves idle carries no training messages to measure: probe it this
# often, so that a link that got better is seen within a few seconds, not after STALE_S.
IDLE_LINK_PROBE_S = 2.0


def every_due(step: int, every: int) -> bool:
    """Whether `step` is one of every `every` steps (never when `every` is 0)."""
    return every > 0 and step % every == 0


def probe(peer: Mailbox, estimator: BandwidthEstimator | LinkMeter, step: int) -> None:
    """Time one tiny and one sized message to `peer`, which answers each at once.

    The tiny one measures the round-trip latency, the sized one (`probe_bytes()`, about a
    quarter second of transfer at the current estimate) the rate of this direction. A peer
    that answers through a Mailbox also measures the pair as it does real transfers and
    reports the rate in its answer (see LinkMeter), which a LinkMeter prefers.
    """
    for nbytes in (0, estimator.probe_bytes()):
        payload = torch.zeros(nbytes, dtype=torch.uint8)
        t0 = time.perf_counter()
        peer.send({"type": "probe", "step": step, "payload": payload})
        peer.expect("probe_ack", step, PROBE_TIMEOUT_S)
        estimator.observe(nbytes, time.perf_counter() - t0)


class LinkProbe:
    """Probing one link; on a link the schedule leaves idle, without waiting for answers.

    A blocking probe holds its sender for the sized message's transfer, about a quarter of
    a second every IDLE_LINK_PROBE_S: an edge training a whole pipeline stalled 0.27 s
    every 2 s probing its idle cloud link. The peer times the pair (tiny, then
    sized) as it arrives and reports the rate in its answer, which the link meter takes
    whenever the answer is read; the sender only has to read it. Used only on an idle
    link: on a busy one the probe would queue with the step's messages and time both.
    """

    def __init__(self) -> None:
        self.sent_s: float | None = None  # when the pending probe went out

    def due(self, meter: LinkMeter, now: float | None = None) -> bool:
        """Whether to send a probe now: the link's news is stale and no probe is pending
        (one whose answer never came counts as lost after IDLE_LINK_PROBE_S)."""
        now = time.monotonic() if now is None else now
        if self.sent_s is not None and now - self.sent_s < IDLE_LINK_PROBE_S:
            return False
        return meter.needs_probe(now, stale_s=IDLE_LINK_PROBE_S)

    def send(self, peer: Mailbox, meter: LinkMeter, step: int) -> None:
        """Send the tiny and the sized message back to back; do not wait."""
        for nbytes in (0, meter.probe_bytes()):
            payload = torch.zeros(nbytes, dtype=torch.uint8)
            peer.send({"type": "probe", "step": step, "payload": payload})
        self.sent_s = time.monotonic()

    def answered(self, peer: Mailbox) -> bool:
        """Read the answers that have come (their rate reaches the meter as they are read);
        True once the peer's answer to the sized message, with its rate, is in."""
        if self.sent_s is None:
            return False
        ack = peer.take("probe_ack")
        if ack is None or ack.get("rx_mbps") is None:
            return False
        self.sent_s = None
        return True

    def measure(
        self, peer: Mailbox, meter: LinkMeter, step: int, idle: bool, every_due: bool
    ) -> bool:
        """A step's probing of one link: in the background while the schedule leaves it
        idle, else a blocking probe when its news is stale (or every `probe_every_steps`).
        True when this step brought news of the link."""
        if idle and not every_due:
            news = self.answered(peer)
            if self.due(meter):
                self.send(peer, meter, step)
            return news
        if meter.needs_probe() or every_due:
            probe(peer, meter, step)
            return True
        return False


@dataclass
class Choice:
    """The board's schedule for one step, with what the table predicted."""

    schedule: Schedule | None  # None: keep the current one
    predicted_s: float | None
    gain_s: float | None
    bw_de_mbps: float | None
    bw_ec_mbps: float | None


class TableChooser:
    """Looks up each step's schedule in the table with the Selector's hysteresis."""

    def __init__(
        self, table: ScheduleTable, identity: JobIdentity, total_steps: int, current: Schedule
    ) -> None:
        table.require_match(identity)  # a table built for another job is refused
        self.table = table
        initial = table.schedules.index(current) if current in table.schedules else None
        self.selector = Selector(table, total_steps=total_steps, initial=initial)

    def choose(
        self,
        step: int,
        current: Schedule,
        bw_de_mbps: float | None,
        bw_ec_mbps: float | None,
        cloud_ok: bool,
    ) -> Choice:
        if bw_de_mbps is None:
            return Choice(None, None, None, None, bw_ec_mbps)
        ec = bw_ec_mbps if bw_ec_mbps is not None else 0.0
        decision = self.selector.observe(
            bw_de_mbps, ec, cloud_ok and bw_ec_mbps is not None, True, step
        )
        if decision.schedule_index < 0:
            raise ConfigError(
                f"the schedule table has no schedule for step {step}: {decision.reason}"
            )
        chosen = self.table.schedules[decision.schedule_index]
        return Choice(
            chosen if chosen != current else None,
            decision.predicted_s,
            decision.predicted_gain_s if chosen != current else None,
            bw_de_mbps,
            bw_ec_mbps,
        )
