"""A link's bandwidth and latency, estimated separately from the runtime's real transfers.

What to feed it. `observe(nbytes, seconds)` takes one message of `nbytes` payload bytes
and the wall time it took to cross the link: from just before the sender's send to the
receipt of its last byte, so that ``seconds = latency + nbytes * 8 / bandwidth`` plus
noise. One-way times need the receiver's clock; a round trip works as well when only one
direction carries the payload and the far side's processing time is subtracted (then
"latency" is the round-trip latency). The bandwidth estimate is what matters for the
schedule table, and it is the same either way.

How it estimates.

* Latency: the median, over the last `latency_window` *small* messages (below
  `min_bandwidth_bytes`), of their time minus their size at the current bandwidth
  estimate; 0 until a small message was seen.
* Bandwidth: every *large* message (at least `min_bandwidth_bytes`) gives a rate
  ``nbytes * 8 / (seconds - latency)``; the estimate is the median of the last `window`
  rates, so a few stalls or bursts do not move it. Tiny messages never count: their time
  is latency, not bandwidth.
* Change: when the last `change_count` rates all lie more than `change_ratio` times above
  (or all below) the estimate, the older rates are dropped, so a tenfold change is
  followed after `change_count` large messages instead of half a window.
* Freshness: `needs_probe(now)` is true when no large message was seen for `stale_s`
  seconds; the runtime then sends a probe of `probe_bytes()` bytes (about
  `probe_target_s` of transfer at the current estimate).

Pure logic, no clock of its own except `time.monotonic()` when `now` is not given; not
thread-safe (one estimator per link, fed by the thread that owns the link).
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from dataclasses import dataclass

from hiertrain_edge.errors import ConfigError

MIN_BANDWIDTH_BYTES = 16 << 10  # smaller messages measure latency, not bandwidth
WINDOW = 8  # large-message rates kept for the median
LATENCY_WINDOW = 16
CHANGE_RATIO = 2.0
CHANGE_COUNT = 3
STALE_S = 10.0  # probe when no large message for this long
PROBE_TARGET_S = 0.25  # a probe should take about this long at the estimated rate
MAX_PROBE_BYTES = 4 << 20
DEFAULT_PROBE_BYTES = 64 << 10  # before any estimate: 5 s at 0.1 Mbit/s, 0.5 ms at 1 Gbit/s
MIN_TRANSFER_FRACTION = 0.05  # transfer time floor, as a fraction of the whole message time
BITS_PER_BYTE = 8


@dataclass(frozen=True)
class Estimate:
    """The current estimate; None where nothing has been measured yet."""

    bandwidth_mbps: float | None
    latency_s: float | None
    samples: int  # large-message rates in the window
    last_large_s: float | None  # monotonic time of the last large message


class BandwidthEstimator:
    """Bandwidth and latency of one link direction (or round trip); see the module
    docstring for what to feed it and how it estimates."""

    def __init__(
        self,
        *,
        window: int = WINDOW,
        latency_window: int = LATENCY_WINDOW,
        min_bandwidth_bytes: int = MIN_BANDWIDTH_BYTES,
        change_ratio: float = CHANGE_RATIO,
        change_count: int = CHANGE_COUNT,
        stale_s: float = STALE_S,
        probe_target_s: float = PROBE_TARGET_S,
        max_probe_bytes: int = MAX_PROBE_BYTES,
    ) -> None:
        if window < 1 or latency_window < 1 or min_bandwidth_bytes < 1:
            raise ConfigError(
                f"window, latency_window and min_bandwidth_bytes must be >= 1, got {window}, "
                f"{latency_window} and {min_bandwidth_bytes}"
            )
        if not change_ratio > 1 or not 1 <= change_count <= window:
            raise ConfigError(
                f"need change_ratio > 1 and 1 <= change_count <= window ({window}), got "
                f"{change_ratio} and {change_count}"
            )
        if not (stale_s > 0 and probe_target_s > 0 and max_probe_bytes >= min_bandwidth_bytes):
            raise ConfigError(
                f"need stale_s > 0, probe_target_s > 0 and max_probe_bytes >= "
                f"min_bandwidth_bytes ({min_bandwidth_bytes}), got {stale_s}, "
                f"{probe_target_s} and {max_probe_bytes}"
            )
        self.window = window
        self.min_bandwidth_bytes = min_bandwidth_bytes
        self.change_ratio = change_ratio
        self.change_count = change_count
        self.stale_s = stale_s
        self.probe_target_s = probe_target_s
        self.max_probe_bytes = max_probe_bytes
        self._rates: deque[float] = deque(maxlen=window)  # bit/s
        self._small: deque[tuple[int, float]] = deque(maxlen=latency_window)
        self._latency_s: float | None = None
        self._bps: float | None = None
        self._last_large_s: float | None = None

    # --- feeding ---------------------------------------------------------------------

    def observe(self, nbytes: int, seconds: float, now: float | None = None) -> None:
        """One message of `nbytes` bytes took `seconds` to cross the link."""
        if nbytes < 0 or not (seconds >= 0 and math.isfinite(seconds)):
            raise ConfigError(
                f"a transfer needs nbytes >= 0 and a finite time >= 0 s, got {nbytes} bytes "
                f"in {seconds} s"
            )
        if nbytes < self.min_bandwidth_bytes:
            self._small.append((nbytes, seconds))
            self._update_latency()
            return
        self._last_large_s = time.monotonic() if now is None else now
        transfer = max(seconds - (self._latency_s or 0.0), MIN_TRANSFER_FRACTION * seconds)
        if transfer <= 0:
            return  # a zero-time sample carries no rate
        self._rates.append(nbytes * BITS_PER_BYTE / transfer)
        self._detect_change()
        self._bps = statistics.median(self._rates)
        self._update_latency()

    def observe_transfer(self, nbytes: int, transfer_s: float, now: float | None = None) -> None:
        """`nbytes` took `transfer_s` on the link with latency already excluded (a pair of
        messages, see `pair_transfer_s`): a bandwidth sample, however small the time."""
        if nbytes < self.min_bandwidth_bytes or not (transfer_s > 0 and math.isfinite(transfer_s)):
            raise ConfigError(
                f"a transfer sample needs >= {self.min_bandwidth_bytes} bytes and a finite "
                f"time > 0 s, got {nbytes} bytes in {transfer_s} s"
            )
        self._last_large_s = time.monotonic() if now is None else now
        self._rates.append(nbytes * BITS_PER_BYTE / transfer_s)
        self._detect_change()
        self._bps = statistics.median(self._rates)
        self._update_latency()

    def _detect_change(self) -> None:
        if self._bps is None or len(self._rates) <= self.change_count:
            return
        recent = list(self._rates)[-self.change_count :]
        up = all(r > self._bps * self.change_ratio for r in recent)
        down = all(r < self._bps / self.change_ratio for r in recent)
        if up or down:
            self._rates.clear()
            self._rates.extend(recent)

    def _update_latency(self) -> None:
        if not self._small:
            return
        bps = self._bps
        lat = [max(0.0, s - (n * BITS_PER_BYTE / bps if bps else 0.0)) for n, s in self._small]
        self._latency_s = statistics.median(lat)

    # --- reading ---------------------------------------------------------------------

    @property
    def bandwidth_mbps(self) -> float | None:
        return None if self._bps is None else self._bps / 1e6

    @property
    def latency_s(self) -> float | None:
        return self._latency_s

    @property
    def last_large_s(self) -> float | None:
        """Monotonic time of the newest bandwidth sample."""
        return self._last_large_s

    def estimate(self) -> Estimate:
        return Estimate(self.bandwidth_mbps, self._latency_s, len(self._rates), self._last_large_s)

    def needs_probe(self, now: float | None = None) -> bool:
        """Whether a probe is due: no large message ever, or none for `stale_s` seconds.

        `now` must be on the clock given to `observe` (time.monotonic() by default).
        """
        if self._last_large_s is None:
            return True
        now = time.monotonic() if now is None else now
        return now - self._last_large_s >= self.stale_s

    def probe_bytes(self) -> int:
        """Payload bytes of a probe: about `probe_target_s` at the current estimate, at
        least `min_bandwidth_bytes` (so it counts) and at most `max_probe_bytes`."""
        if self._bps is None:
            return max(self.min_bandwidth_bytes, min(DEFAULT_PROBE_BYTES, self.max_probe_bytes))
        want = int(self._bps * self.probe_target_s / BITS_PER_BYTE)
        return max(self.min_bandwidth_bytes, min(want, self.max_probe_bytes))


# --- measuring from the runtime's own messages ------------------------------------------

LEAD_FRACTION = 1 / 8  # a pair's first message is at most this share of the second's bytes
# A pair's transfer time is a difference of two clock readings on each side; wake-ups on a
# loaded host are late by a few ms, so pairs expected to take less are noise (probes cover
# fast links). Expected, not measured: dropping the quick measurements would bias it down.
MIN_PAIR_TRANSFER_S = 0.02
TRAFFIC_CHANGE_COUNT = 1  # one transfer a step: a 2x jump restarts the window at once


@dataclass(frozen=True)
class Arrival:
    """One message taken off the socket from the peer.

    `at_s` is when it was taken (monotonic); `waited` says the receiver was blocked waiting
    when it arrived (nothing was readable as the wait began), so `at_s` is its arrival;
    `gap_s` is the sender's time since its previous message to us (its own clock).
    """

    nbytes: int
    at_s: float
    waited: bool
    gap_s: float | None


def pair_transfer_s(prev: Arrival, cur: Arrival, min_bytes: int = MIN_BANDWIDTH_BYTES) -> float:
    """The link time of `cur`'s extra bytes over `prev`'s, from two consecutive arrivals.

    Both left the sender `cur.gap_s` apart and took ``latency + bytes * 8 / bandwidth`` to
    arrive, so ``cur.at_s - prev.at_s = cur.gap_s + (cur.nbytes - prev.nbytes) * 8 /
    bandwidth``: latency cancels and no clock is shared. The pair counts only when both
    arrived while the receiver waited (else the arrival time is unknown), the second brings
    at least `min_bytes` more, and the first is small enough (LEAD_FRACTION) that it had
    left the link when the second was sent. Returns 0.0 for a pair that does not count.
    """
    if not (prev.waited and cur.waited) or cur.gap_s is None or cur.gap_s < 0:
        return 0.0
    if cur.nbytes - prev.nbytes < min_bytes or prev.nbytes > LEAD_FRACTION * cur.nbytes:
        return 0.0
    return max(0.0, (cur.at_s - prev.at_s) - cur.gap_s)


class LinkMeter:
    """One link to one peer, both directions, measured from the messages it carries.

    * Inbound: the receiver measures (see `pair_transfer_s`); `report()` gives the estimate
      to send back to the peer with our next message, once per new sample.
    * Outbound: what the peer last reported of its inbound direction (`heard`); where no
      report is fresh, our own probes' round trips (`observe`, fed by runtime/replan.py's
      `probe`), which also give the latency.
    * `bandwidth_mbps`: the link's one rate for the schedule table. A step moves about as
      many bytes each way as the cost model charges, so the rate of equal traffic both
      ways, ``2 / (1 / up + 1 / down)``, when both are fresh; else the fresh one.
    * `needs_probe()`: no sample either way for `stale_s`: only then does a probe cost
      link time.
    """

    def __init__(self, stale_s: float = STALE_S) -> None:
        self.stale_s = stale_s
        self.inbound = BandwidthEstimator(change_count=TRAFFIC_CHANGE_COUNT, stale_s=stale_s)
        self.probes = BandwidthEstimator(stale_s=stale_s)  # our round trips: latency, rate
        self._outbound: tuple[float, float] | None = None  # (Mbit/s, when heard)
        self._last_arrival: Arrival | None = None
        self._last_sent_s: float | None = None
        self._unreported = False

    # --- feeding -------------------------------------------------------------------------

    def sending(self, now: float | None = None) -> float | None:
        """We send a message now: the gap since our previous one (None for the first)."""
        now = time.monotonic() if now is None else now
        gap = None if self._last_sent_s is None else now - self._last_sent_s
        self._last_sent_s = now
        return gap

    def arrived(self, arrival: Arrival) -> None:
        """A message from the peer was taken off the socket."""
        prev, self._last_arrival = self._last_arrival, arrival
        if prev is None:
            return
        transfer = pair_transfer_s(prev, arrival, self.inbound.min_bandwidth_bytes)
        if transfer <= 0:
            return
        extra = arrival.nbytes - prev.nbytes
        known = self.inbound.bandwidth_mbps
        expected = transfer if known is None else extra * BITS_PER_BYTE / (known * 1e6)
        # A link that slowed down makes short pairs long: follow it.
        slowed = transfer >= max(MIN_PAIR_TRANSFER_S, self.inbound.change_ratio * expected)
        if expected < MIN_PAIR_TRANSFER_S and not slowed:
            return  # too short to time on a busy host (see MIN_PAIR_TRANSFER_S)
        self.inbound.observe_transfer(extra, transfer, arrival.at_s)
        self._unreported = True

    def heard(self, outbound_mbps: float, now: float | None = None) -> None:
        """The peer reported the rate at which our messages reach it."""
        if outbound_mbps > 0 and math.isfinite(outbound_mbps):
            self._outbound = (outbound_mbps, time.monotonic() if now is None else now)

    def observe(self, nbytes: int, seconds: float, now: float | None = None) -> None:
        """One probe round trip (see BandwidthEstimator.observe)."""
        self.probes.observe(nbytes, seconds, now)

    def report(self) -> float | None:
        """Our inbound estimate, once after each new sample (None otherwise)."""
        if not self._unreported:
            return None
        self._unreported = False
        return self.inbound.bandwidth_mbps

    # --- reading -------------------------------------------------------------------------

    def _fresh(self, at: float | None, now: float) -> bool:
        return at is not None and now - at < self.stale_s

    def _up(self, now: float) -> tuple[float | None, float | None]:
        """Our outbound rate and the time of its newest sample: the peer's fresh report,
        else our probes' estimate."""
        if self._outbound is not None and self._fresh(self._outbound[1], now):
            return self._outbound
        return self.probes.bandwidth_mbps, self.probes.last_large_s

    def up_mbps(self, now: float | None = None) -> float | None:
        return self._up(time.monotonic() if now is None else now)[0]

    def down_mbps(self) -> float | None:
        """Our inbound rate, measured here."""
        return self.inbound.bandwidth_mbps

    def combined_mbps(self, now: float | None = None) -> float | None:
        """The link's one rate (see the class docstring); None before any measurement."""
        now = time.monotonic() if now is None else now
        up = self._up(now)
        if up[0] is None and self._outbound is not None:
            up = self._outbound  # an old report is better than none
        down = (self.inbound.bandwidth_mbps, self.inbound.last_large_s)
        rates = [v for v, at in (up, down) if v is not None and self._fresh(at, now)]
        if not rates:  # all stale: the best we have, until a probe brings news
            rates = [v for v, _ in (up, down) if v is not None]
        if len(rates) == 2:
            return 2 / (1 / rates[0] + 1 / rates[1])
        return rates[0] if rates else None

    @property
    def bandwidth_mbps(self) -> float | None:
        return self.combined_mbps()

    @property
    def latency_s(self) -> float | None:
        """Round-trip latency of tiny probes."""
        return self.probes.latency_s

    def needs_probe(self, now: float | None = None, stale_s: float | None = None) -> bool:
        """Whether a probe is due: no sample of either direction for `stale_s` seconds
        (default: the meter's own bound; shorter for a link the schedule leaves idle)."""
        now = time.monotonic() if now is None else now
        bound = self.stale_s if stale_s is None else stale_s
        heard = None if self._outbound is None else self._outbound[1]
        times = (heard, self.probes.last_large_s, self.inbound.last_large_s)
        return not any(t is not None and now - t < bound for t in times)

    def probe_bytes(self) -> int:
        """Payload bytes of a probe: about `probe_target_s` at the link's rate (see
        BandwidthEstimator.probe_bytes)."""
        rate = self.bandwidth_mbps
        if rate is None:
            return self.probes.probe_bytes()
        want = int(rate * 1e6 * self.probes.probe_target_s / BITS_PER_BYTE)
        return max(self.probes.min_bandwidth_bytes, min(want, self.probes.max_probe_bytes))
