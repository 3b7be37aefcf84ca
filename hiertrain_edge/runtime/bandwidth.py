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
