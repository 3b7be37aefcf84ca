"""The bandwidth estimator on synthetic transfers: accuracy under noise, latency apart
from bandwidth, following a tenfold change, probes."""

from __future__ import annotations

import random

import pytest

from hiertrain_edge.errors import ConfigError
from hiertrain_edge.runtime.bandwidth import BandwidthEstimator


def transfers(rng, bw_mbps, latency_s, count, noise=0.1, t0=0.0):
    """(nbytes, seconds, now): a mix of tiny control messages and large tensors."""
    out, now = [], t0
    for _ in range(count):
        nbytes = rng.choice([200, 900, rng.randint(20_000, 4_000_000)])
        seconds = (latency_s + nbytes * 8 / (bw_mbps * 1e6)) * rng.uniform(1 - noise, 1 + noise)
        now += seconds + 0.01
        out.append((nbytes, seconds, now))
    return out


@pytest.mark.parametrize(("bw_mbps", "latency_s"), [(0.5, 0.05), (20.0, 0.005), (900.0, 0.0005)])
def test_steady_link_within_20_percent(bw_mbps, latency_s):
    rng = random.Random(1)
    est = BandwidthEstimator()
    for nbytes, seconds, now in transfers(rng, bw_mbps, latency_s, 300):
        est.observe(nbytes, seconds, now)
    assert est.bandwidth_mbps == pytest.approx(bw_mbps, rel=0.2)
    assert est.latency_s == pytest.approx(latency_s, rel=0.5)


def test_tiny_messages_do_not_count_as_bandwidth():
    est = BandwidthEstimator()
    for k in range(50):
        est.observe(200, 0.01, now=float(k))
    assert est.bandwidth_mbps is None
    assert est.latency_s == pytest.approx(0.01)
    assert est.estimate().samples == 0


def test_stalls_do_not_move_the_median():
    rng = random.Random(2)
    est = BandwidthEstimator()
    for k in range(40):
        nbytes = 1_000_000
        seconds = nbytes * 8 / 10e6
        if k % 7 == 3:
            seconds *= 20  # a stall now and then
        est.observe(nbytes, seconds * rng.uniform(0.95, 1.05), now=float(k))
    assert est.bandwidth_mbps == pytest.approx(10.0, rel=0.1)


@pytest.mark.parametrize("factor", [10.0, 0.1])
def test_tenfold_change_is_followed_after_three_large_messages(factor):
    rng = random.Random(4)
    est = BandwidthEstimator()
    for k in range(30):
        est.observe(500_000, 500_000 * 8 / 20e6 * rng.uniform(0.9, 1.1), now=float(k))
    assert est.bandwidth_mbps == pytest.approx(20.0, rel=0.2)
    new = 20.0 * factor
    for k in range(3):
        est.observe(500_000, 500_000 * 8 / (new * 1e6) * rng.uniform(0.9, 1.1), now=30.0 + k)
    assert est.bandwidth_mbps == pytest.approx(new, rel=0.2)


def test_probe_when_no_large_transfer_for_a_while():
    est = BandwidthEstimator(stale_s=10.0, probe_target_s=0.25)
    assert est.needs_probe(now=0.0)  # nothing measured yet
    assert est.probe_bytes() == 64 << 10
    est.observe(1_000_000, 0.8, now=100.0)  # 10 Mbit/s
    assert not est.needs_probe(now=105.0)
    est.observe(300, 0.001, now=109.0)  # tiny messages keep nothing fresh
    assert est.needs_probe(now=110.0)
    assert est.probe_bytes() == int(10e6 * 0.25 / 8)
    fast = BandwidthEstimator()
    fast.observe(4_000_000, 0.0032, now=0.0)  # 10 Gbit/s: capped at 4 MiB
    assert fast.probe_bytes() == 4 << 20
    slow = BandwidthEstimator()
    slow.observe(20_000, 1.6, now=0.0)  # 0.1 Mbit/s: at least the bandwidth threshold
    assert slow.probe_bytes() == 16 << 10


def test_bad_input_is_refused():
    est = BandwidthEstimator()
    with pytest.raises(
        ConfigError,
        match=r"^a transfer needs nbytes >= 0 and a finite time "
        r">= 0 s, got 10 bytes in -1.0 s$",
    ):
        est.observe(10, -1.0)
    with pytest.raises(
        ConfigError,
        match=r"^need change_ratio > 1 and 1 <= change_count <= "
        r"window \(8\), got 1.0 and 3$",
    ):
        BandwidthEstimator(change_ratio=1.0)
