"""The testbed's namespaces, addresses and tbf shaping, on real TCP between namespaces."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.netns

SIZE_BYTES = 1 << 20
SLOW_MBPS = 8.0

# A TCP sink in the edge's namespace: counts what arrives, then answers one byte.
SINK = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("{addr}", 5001))
s.listen()
print("ready", flush=True)
c, _ = s.accept()
n = 0
while n < {size}:
    d = c.recv(1 << 20)
    if not d:
        break
    n += len(d)
c.sendall(b"k")
print(n, flush=True)
"""

SOURCE = """
import socket
s = socket.create_connection(("{addr}", 5001), timeout=30)
s.sendall(bytes({size}))
assert s.recv(1) == b"k"
"""


def _transfer_s(testbed) -> float:
    """Seconds to push SIZE_BYTES from the device to the edge and get the answer."""
    addr = testbed.address("edge")
    sink = testbed.popen(
        "edge",
        [sys.executable, "-c", SINK.format(addr=addr, size=SIZE_BYTES)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sink.stdout.readline().strip() == "ready"
    started = time.perf_counter()
    testbed.run("device", [sys.executable, "-c", SOURCE.format(addr=addr, size=SIZE_BYTES)])
    elapsed = time.perf_counter() - started
    assert sink.stdout.readline().strip() == str(SIZE_BYTES)
    sink.wait(timeout=10)
    return elapsed


def _tbf_rate(testbed, tier: str, iface: str) -> str:
    out = testbed.run(tier, ["tc", "qdisc", "show", "dev", iface])
    return out.split(" rate ")[1].split()[0]


@pytest.mark.parametrize(
    "netns_testbed", [{"links": {"de": (SLOW_MBPS, 100.0), "ec": (30.0, 60.0)}}], indirect=True
)
def test_netns_links_shaped_per_direction(netns_testbed):
    tb = netns_testbed
    assert tb.addresses == {
        "device": "198.18.1.1",
        "edge": "198.18.1.2",
        "edge_to_cloud": "198.18.2.1",
        "cloud": "198.18.2.2",
    }
    # "up" is shaped on the sender toward the cloud, "down" on the other end.
    assert _tbf_rate(tb, "device", tb.iface("de", "device")) == "8Mbit"
    assert _tbf_rate(tb, "edge", tb.iface("de", "edge")) == "100Mbit"
    assert _tbf_rate(tb, "edge", tb.iface("ec", "edge")) == "30Mbit"
    assert _tbf_rate(tb, "cloud", tb.iface("ec", "cloud")) == "60Mbit"

    # 1 MiB at 8 Mbit/s cannot take less than ~1.05 s minus one 64 KiB burst (a lower
    # bound only: a loaded machine may be slower, never faster).
    assert _transfer_s(tb) > 0.9

    tb.set_rate("de", "up", 80.0)
    assert _tbf_rate(tb, "device", tb.iface("de", "device")) == "80Mbit"
    assert tb.rates[("de", "up")] == 80.0


def test_netns_links_isolated(netns_testbed):
    tb = netns_testbed
    # The device reaches only the edge: no route to the cloud, nothing of the host's.
    routes = tb.run("device", ["ip", "-4", "route", "show"])
    iface = tb.iface("de", "device")
    expected = f"198.18.1.0/24 dev {iface} proto kernel scope link src 198.18.1.1"
    assert " ".join(routes.split()) == expected
    assert tb.run("edge", ["ip", "-4", "-o", "addr", "show", "scope", "global"]).count("inet") == 2


def test_netns_links_bad_names(netns_testbed):
    from hiertrain_edge.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^unknown link 'dc'; expected one of de, ec$"):
        netns_testbed.set_rate("dc", "up", 1.0)
    with pytest.raises(ConfigError, match=r"^direction must be 'up' or 'down', got 'left'$"):
        netns_testbed.set_rate("de", "left", 1.0)
    with pytest.raises(ConfigError, match=r"^rate must be > 0 and <= 100000 Mbit/s, got 0$"):
        netns_testbed.set_rate("de", "up", 0)
