"""The bandwidth estimator on a real tbf-shaped link between two network namespaces."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.netns

# The edge answers one byte per message: 8-byte length header, then the payload.
SINK = """
import socket, struct
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("{addr}", 5002))
s.listen()
print("ready", flush=True)
c, _ = s.accept()
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while True:
    head = b""
    while len(head) < 8:
        d = c.recv(8 - len(head))
        if not d:
            raise SystemExit(0)
        head += d
    n = struct.unpack("<Q", head)[0]
    while n:
        n -= len(c.recv(min(n, 1 << 20)))
    c.sendall(b"k")
"""

# The device times round trips of small and large messages and feeds the estimator.
SOURCE = """
import json, socket, struct, time
from hiertrain_edge.runtime.bandwidth import BandwidthEstimator
s = socket.create_connection(("{addr}", 5002), timeout=60)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
est = BandwidthEstimator()
for k in range({count}):
    n = 200 if k % 3 == 0 else {large}
    t = time.perf_counter()
    s.sendall(struct.pack("<Q", n) + bytes(n))
    assert s.recv(1) == b"k"
    est.observe(n + 8, time.perf_counter() - t)
print(json.dumps({{"mbps": est.bandwidth_mbps, "latency_s": est.latency_s}}))
"""

LARGE_BYTES = 1 << 20  # tbf lets a 64 KiB burst through at line rate: ~6% of 1 MiB


def _measure(tb, count: int) -> dict:
    addr = tb.address("edge")
    sink = tb.popen(
        "edge", [sys.executable, "-c", SINK.format(addr=addr)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert sink.stdout.readline().strip() == "ready"
        code = SOURCE.format(addr=addr, count=count, large=LARGE_BYTES)
        out = tb.run("device", [sys.executable, "-c", code], timeout_s=120)
    finally:
        sink.kill()
        sink.wait(timeout=10)
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "netns_testbed", [{"links": {"de": (8.0, 1000.0), "ec": (1000.0, 1000.0)}}], indirect=True
)
def test_estimate_within_20_percent_of_the_shaped_rate(netns_testbed):
    tb = netns_testbed
    slow = _measure(tb, 12)  # 8 large messages of 1 MiB at 8 Mbit/s: about 8.5 s
    assert slow["mbps"] == pytest.approx(8.0, rel=0.2)
    tb.set_rate("de", "up", 80.0)  # tenfold
    fast = _measure(tb, 12)
    assert fast["mbps"] == pytest.approx(80.0, rel=0.2)
