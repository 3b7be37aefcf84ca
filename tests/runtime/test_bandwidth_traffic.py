"""Measuring a link from the runtime's own messages, on synthetic timestamps: pairs of
arrivals, the two directions combined, reports to the peer, probes only when idle, and the
mailbox's stamps."""

from __future__ import annotations

import random
import time
from types import SimpleNamespace
from typing import Any

import pytest
import zmq

from hiertrain_edge.errors import ConfigError, PeerLostError
from hiertrain_edge.runtime import mailbox as mailbox_module
from hiertrain_edge.runtime.bandwidth import (
    Arrival,
    BandwidthEstimator,
    LinkMeter,
    pair_transfer_s,
)
from hiertrain_edge.runtime.mailbox import Mailbox
from hiertrain_edge.runtime.replan import IDLE_LINK_PROBE_S, LinkProbe

HEADER_BYTES = 300  # a "step" message: ids and settings only
FWD_BYTES = 1_000_000  # activations of one group


def step_then_fwd(rng, meter, t, bw_mbps, latency_s, compute_s, waited=(True, True)):
    """The board's "step" then, `compute_s` later, its "fwd", as the edge takes them;
    returns the time after both arrived."""
    arrive_step = t + latency_s + HEADER_BYTES * 8 / (bw_mbps * 1e6)
    meter.arrived(Arrival(HEADER_BYTES, arrive_step, waited[0], rng.uniform(0.2, 0.4)))
    transfer = FWD_BYTES * 8 / (bw_mbps * 1e6) * rng.uniform(0.95, 1.05)
    arrive_fwd = t + compute_s + latency_s + transfer
    meter.arrived(Arrival(FWD_BYTES, arrive_fwd, waited[1], compute_s))
    return arrive_fwd + 0.05


def test_a_pair_gives_the_transfer_time_of_the_extra_bytes():
    small = Arrival(300, 10.0, True, 0.5)
    large = Arrival(1_000_300, 10.0 + 0.25 + 0.8, True, 0.25)  # 1 MB at 10 Mbit/s
    assert pair_transfer_s(small, large) == pytest.approx(0.8)
    # The receiver was busy when one of them arrived: its arrival time is unknown.
    assert pair_transfer_s(Arrival(300, 10.0, False, 0.5), large) == 0.0
    assert pair_transfer_s(small, Arrival(1_000_300, 11.05, False, 0.25)) == 0.0
    # Too few extra bytes to time, or a first message large enough to queue the second.
    assert pair_transfer_s(small, Arrival(10_000, 10.3, True, 0.25)) == 0.0
    assert pair_transfer_s(Arrival(200_000, 10.0, True, 0.5), large) == 0.0
    # No gap from the sender (its first message), or the clocks say nothing was sent.
    assert pair_transfer_s(small, Arrival(1_000_300, 11.05, True, None)) == 0.0
    assert pair_transfer_s(small, Arrival(1_000_300, 10.1, True, 0.25)) == 0.0


def test_pairs_too_short_to_time_do_not_count():
    meter = LinkMeter()
    # 100 kB in 10 ms after a 20 s gap: the hosts' timer noise, not a rate.
    meter.arrived(Arrival(300, 10.0, True, 0.5))
    meter.arrived(Arrival(100_300, 10.0 + 20.0 + 0.01, True, 20.0))
    assert meter.down_mbps() is None
    meter.arrived(Arrival(300, 40.0, True, 0.5))
    meter.arrived(Arrival(1_000_300, 40.0 + 0.1 + 0.4, True, 0.1))  # 20 Mbit/s, 0.4 s
    assert meter.down_mbps() == pytest.approx(20.0)
    # Once the rate is known, a pair counts by its expected time, however it measured:
    # 60 kB (24 ms at 20 Mbit/s) measured in 12 ms counts, 40 kB (16 ms) does not.
    meter.arrived(Arrival(300, 50.0, True, 0.5))
    meter.arrived(Arrival(60_300, 50.0 + 0.1 + 0.012, True, 0.1))
    assert meter.inbound.estimate().samples == 2
    meter.arrived(Arrival(300, 60.0, True, 0.5))
    meter.arrived(Arrival(40_300, 60.0 + 0.1 + 0.02, True, 0.1))
    assert meter.inbound.estimate().samples == 2
    # Unless the link slowed down: the same 40 kB now take 0.16 s (2 Mbit/s).
    meter.arrived(Arrival(300, 70.0, True, 0.5))
    meter.arrived(Arrival(40_300, 70.0 + 0.1 + 0.16, True, 0.1))
    assert meter.down_mbps() == pytest.approx(2.0)


@pytest.mark.parametrize(("bw_mbps", "latency_s"), [(2.0, 0.05), (40.0, 0.005), (200.0, 0.0005)])
def test_steady_link_within_20_percent_whatever_the_latency(bw_mbps, latency_s):
    rng = random.Random(5)
    meter = LinkMeter()
    t = 0.0
    for _ in range(20):
        t = step_then_fwd(rng, meter, t, bw_mbps, latency_s, rng.uniform(0.0, 0.3))
    assert meter.down_mbps() == pytest.approx(bw_mbps, rel=0.2)
    assert meter.inbound.estimate().samples == 8


def test_busy_receiver_and_queued_pairs_give_no_sample():
    rng = random.Random(6)
    meter = LinkMeter()
    t = 0.0
    for waited in ((False, True), (True, False)):
        t = step_then_fwd(rng, meter, t, 10.0, 0.01, 0.1, waited)
    meter.arrived(Arrival(FWD_BYTES, t + 0.9, True, 0.001))  # fwd after fwd: queued
    assert meter.down_mbps() is None
    assert meter.report() is None


@pytest.mark.parametrize("factor", [10.0, 0.1])
def test_tenfold_change_is_followed_after_one_pair(factor):
    rng = random.Random(8)
    meter = LinkMeter()
    t = 0.0
    for _ in range(12):
        t = step_then_fwd(rng, meter, t, 20.0, 0.01, 0.1)
    assert meter.down_mbps() == pytest.approx(20.0, rel=0.1)
    t = step_then_fwd(rng, meter, t, 20.0 * factor, 0.01, 0.1)
    assert meter.down_mbps() == pytest.approx(20.0 * factor, rel=0.1)
    # The window restarted: the next samples at the new rate add to it.
    t = step_then_fwd(rng, meter, t, 20.0 * factor, 0.01, 0.1)
    assert meter.inbound.estimate().samples == 2


def test_one_stray_pair_moves_the_estimate_for_one_step_only():
    rng = random.Random(12)
    meter = LinkMeter()
    t = 0.0
    for _ in range(12):
        t = step_then_fwd(rng, meter, t, 20.0, 0.01, 0.1)
    t = step_then_fwd(rng, meter, t, 5.0, 0.01, 0.1)  # e.g. the receiver stalled
    assert meter.down_mbps() == pytest.approx(5.0, rel=0.1)
    t = step_then_fwd(rng, meter, t, 20.0, 0.01, 0.1)
    assert meter.down_mbps() == pytest.approx(20.0, rel=0.1)


def test_noise_of_ten_percent_never_counts_as_a_change():
    rng = random.Random(9)
    meter = LinkMeter()
    t, seen = 0.0, []
    for _ in range(200):
        t = step_then_fwd(rng, meter, t, 20.0 * rng.uniform(0.9, 1.1), 0.01, 0.1)
        seen.append(meter.down_mbps())
    assert min(seen[8:]) > 20.0 * 0.9 and max(seen[8:]) < 20.0 * 1.1


def test_the_inbound_estimate_is_reported_once_per_new_sample():
    rng = random.Random(10)
    meter = LinkMeter()
    assert meter.report() is None
    step_then_fwd(rng, meter, 0.0, 10.0, 0.01, 0.1)
    first = meter.report()
    assert first == pytest.approx(10.0, rel=0.1)
    assert meter.report() is None


def test_up_and_down_combine_as_equal_traffic_both_ways():
    meter = LinkMeter(stale_s=10.0)
    assert meter.combined_mbps(now=0.0) is None
    meter.heard(10.0, now=100.0)  # the peer's report of our direction
    assert meter.combined_mbps(now=101.0) == 10.0  # only one direction has samples
    rng = random.Random(11)
    t = step_then_fwd(rng, meter, 100.0, 40.0, 0.0, 0.1)  # ours: 40 Mbit/s
    assert meter.down_mbps() == pytest.approx(40.0, rel=0.06)
    want = 2 / (1 / 10.0 + 1 / meter.down_mbps())
    assert meter.combined_mbps(now=t) == pytest.approx(want)
    assert meter.combined_mbps(now=t) == pytest.approx(16.0, rel=0.06)
    # Over ten seconds without news from the peer: our own direction alone.
    assert meter.combined_mbps(now=110.1) == meter.down_mbps()
    # Nothing fresh at all: the best we have, until a probe brings news.
    assert meter.combined_mbps(now=200.0) == pytest.approx(want)
    assert meter.needs_probe(now=200.0) and not meter.needs_probe(now=t + 1)


def test_probes_give_the_latency_and_a_rate_where_no_peer_reports():
    meter = LinkMeter(stale_s=10.0)
    assert meter.needs_probe(now=0.0)
    assert meter.probe_bytes() == 64 << 10  # before any estimate
    meter.observe(0, 0.02, now=1.0)  # a tiny probe's round trip
    meter.observe(250_000, 0.02 + 0.2, now=1.2)  # 250 kB in 0.2 s: 10 Mbit/s
    assert meter.latency_s == pytest.approx(0.02)
    assert meter.combined_mbps(now=2.0) == pytest.approx(10.0)
    assert meter.probe_bytes() == int(10e6 * 0.25 / 8)
    meter.heard(30.0, now=3.0)  # the peer timed the same probe: its report wins
    assert meter.up_mbps(now=4.0) == 30.0


def test_a_link_the_schedule_leaves_idle_is_probed_sooner():
    meter = LinkMeter(stale_s=10.0)
    meter.observe(250_000, 0.2, now=1.0)  # a probe's sample at t = 1 s
    assert not meter.needs_probe(now=4.0)  # a link that carries training messages: 10 s
    assert meter.needs_probe(now=4.0, stale_s=2.0)  # an idle link: 2 s
    assert not meter.needs_probe(now=2.5, stale_s=2.0)


def test_a_transfer_sample_must_count():
    with pytest.raises(
        ConfigError,
        match=r"^a transfer sample needs >= 16384 bytes and a finite time > 0 s, "
        r"got 100 bytes in 0.5 s$",
    ):
        BandwidthEstimator().observe_transfer(100, 0.5)


# --- the mailbox's part ---------------------------------------------------------------


class FakeZmq:
    def __init__(self) -> None:
        self.readable = False

    def getsockopt(self, option: int) -> int:
        assert option == zmq.EVENTS
        return zmq.POLLIN if self.readable else 0


class FakeLink:
    """A Link's surface: send, recv, bytes_received, and the ZeroMQ socket."""

    where = "fake"

    def __init__(self, inbox: list[tuple[dict[str, Any], int]]) -> None:
        self.sock = FakeZmq()
        self.inbox = inbox
        self.sent: list[dict[str, Any]] = []
        self.bytes_received = 0

    def send(self, msg: dict[str, Any]) -> None:
        self.sent.append(msg)

    def recv(self, timeout_s: float, what: str = "message") -> dict[str, Any]:
        msg, nbytes = self.inbox.pop(0)
        self.bytes_received += nbytes
        return msg


def test_the_mailbox_stamps_gaps_reports_and_notes(monkeypatch):
    clock = iter([5.0, 5.5, 6.0, 6.0 + 0.3 + 0.8, 7.5])
    monkeypatch.setattr(mailbox_module, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    link = FakeLink(
        [
            ({"type": "step", "step": 3, "gap_s": 0.5}, HEADER_BYTES),
            ({"type": "fwd", "step": 3, "gid": 0, "gap_s": 0.3, "bw_ec_mbps": 7.0}, FWD_BYTES),
        ]
    )
    box = Mailbox(link, name="the board")  # type: ignore[arg-type]
    box.notes = lambda: {"bw_ec_mbps": 12.5, "unknown_yet": None}
    box.send({"type": "probe_ack", "step": 2})  # at 5.0: our first message, no gap
    box.send({"type": "probe_ack", "step": 2})  # at 5.5
    assert link.sent[0] == {"type": "probe_ack", "step": 2, "bw_ec_mbps": 12.5}
    assert link.sent[1]["gap_s"] == pytest.approx(0.5)
    box.expect("step", 3, 1.0)  # arrives at 6.0 while we wait
    box.expect("fwd", 3, 1.0, 0)  # at 7.1: 1 MB took 0.8 s, so 10 Mbit/s
    assert box.meter.down_mbps() == pytest.approx((FWD_BYTES - HEADER_BYTES) * 8 / 0.8 / 1e6)
    assert box.heard == {"bw_ec_mbps": 7.0}
    box.send({"type": "bwd", "step": 3, "gid": 0, "grad": None, "loss": 0.1})  # at 7.5
    assert link.sent[2]["rx_mbps"] == pytest.approx(10.0, rel=0.001)
    assert link.sent[2]["gap_s"] == pytest.approx(2.0)


def test_a_message_already_waiting_is_not_timed(monkeypatch):
    clock = iter([6.0, 7.1])
    monkeypatch.setattr(mailbox_module, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    link = FakeLink(
        [
            ({"type": "step", "step": 3, "gap_s": 0.5}, HEADER_BYTES),
            ({"type": "fwd", "step": 3, "gid": 0, "gap_s": 0.3}, FWD_BYTES),
        ]
    )
    box = Mailbox(link, name="the board")  # type: ignore[arg-type]
    box.expect("step", 3, 1.0)
    link.sock.readable = True  # the fwd came while we were busy: its arrival is unknown
    box.expect("fwd", 3, 1.0, 0)
    assert box.meter.down_mbps() is None


class QuietLink(FakeLink):
    """A FakeLink whose empty inbox means nothing has come yet, as a real link says."""

    def recv(self, timeout_s: float, what: str = "message") -> dict[str, Any]:
        if not self.inbox:
            raise PeerLostError(f"no {what} from {self.where} within {timeout_s:.3g} s")
        return super().recv(timeout_s, what)


def test_an_idle_link_is_probed_without_waiting_for_the_answers():
    link = QuietLink([])
    box = Mailbox(link, name="the cloud")  # type: ignore[arg-type]
    probes = LinkProbe()
    assert probes.due(box.meter)  # no news of the link at all
    probes.send(box, box.meter, step=7)
    # Both messages went out back to back, the sized one as big as the meter asks, and
    # nothing was read: the sender went on with its step.
    assert [m["type"] for m in link.sent] == ["probe", "probe"]
    assert [m["payload"].numel() for m in link.sent] == [0, box.meter.probe_bytes()]
    assert not probes.due(box.meter)  # one probe at a time
    assert not probes.answered(box)  # no answer yet
    link.inbox.append(({"type": "probe_ack", "step": 7}, HEADER_BYTES))  # the tiny one's
    assert not probes.answered(box)
    link.inbox.append(({"type": "probe_ack", "step": 7, "rx_mbps": 12.0}, HEADER_BYTES))
    assert probes.answered(box)  # the peer timed the pair: 12 Mbit/s our way
    assert box.meter.up_mbps() == pytest.approx(12.0)
    assert not probes.due(box.meter)  # fresh news: the next probe waits IDLE_LINK_PROBE_S
    assert probes.due(box.meter, now=time.monotonic() + IDLE_LINK_PROBE_S + 0.1)


def test_an_idle_link_probe_never_answered_is_given_up():
    link = QuietLink([])
    box = Mailbox(link, name="the board")  # type: ignore[arg-type]
    probes = LinkProbe()
    probes.send(box, box.meter, step=1)
    later = time.monotonic() + IDLE_LINK_PROBE_S + 0.1
    assert probes.due(box.meter, now=later)  # lost: send another
