"""The link meter on real traffic: mailboxes over ZeroMQ between two network namespaces,
each direction tbf-shaped to its own rate, measured from step-like message pairs only."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.netns

PORT = 5003
PAYLOAD_FLOATS = 256 << 10  # 1 MiB: tbf lets a 64 KiB burst through at line rate (~6%)

# The edge answers each step like the runtime does: a tiny header, then a large reply.
EDGE = """
import time, torch, zmq
from hiertrain_edge.runtime.mailbox import Mailbox
from hiertrain_edge.wire.security import Security
from hiertrain_edge.wire.transport import Listener
plain = Security(insecure=True)  # a test link inside the testbed
lst = Listener(zmq.Context.instance(), "tcp://{addr}:{port}", security=plain)
print("ready", flush=True)
peer, _ = lst.recv(60, "hello")
box = Mailbox(lst, peer, "the board")
box.send({{"type": "ready", "step": 0}})
for k in range({rounds}):
    box.expect("step", k, 60)
    box.expect("fwd", k, 60, 0)
    box.send({{"type": "step", "step": k}})
    time.sleep(0.05)
    grad = torch.zeros({floats})
    box.send({{"type": "bwd", "step": k, "gid": 0, "grad": grad, "loss": 0.0}})
box.expect("done", None, 60)
"""

# The board sends a step header, computes a while, sends its activations, waits for both
# answers; its meter hears the edge's estimate of the uplink and measures the downlink.
DEVICE = """
import json, time, torch, zmq
from hiertrain_edge.runtime.mailbox import Mailbox
from hiertrain_edge.wire.security import Security
from hiertrain_edge.wire.transport import Link
plain = Security(insecure=True)  # a test link inside the testbed
link = Link(zmq.Context.instance(), "tcp://{addr}:{port}", security=plain)
link.send({{"type": "ping"}})
box = Mailbox(link, name="the edge")
box.expect("ready", 0, 60)
y = torch.zeros(1, dtype=torch.int64)
for k in range({rounds}):
    box.send({{"type": "step", "step": k}})
    time.sleep(0.1)
    box.send({{"type": "fwd", "step": k, "gid": 0, "x": torch.zeros({floats}), "y": y}})
    box.expect("step", k, 60)
    box.expect("bwd", k, 60, 0)
box.send({{"type": "done", "step": {rounds}}})
m = box.meter
print(json.dumps({{"up": m.up_mbps(), "down": m.down_mbps(), "combined": m.bandwidth_mbps}}))
link.close()
"""


def _measure(tb, rounds: int) -> dict:
    addr = tb.address("edge")
    fill = {"addr": addr, "port": PORT, "rounds": rounds, "floats": PAYLOAD_FLOATS}
    edge = tb.popen(
        "edge", [sys.executable, "-c", EDGE.format(**fill)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert edge.stdout.readline().strip() == "ready"
        out = tb.run("device", [sys.executable, "-c", DEVICE.format(**fill)], timeout_s=120)
    finally:
        edge.kill()
        edge.wait(timeout=10)
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "netns_testbed", [{"links": {"de": (8.0, 40.0), "ec": (1000.0, 1000.0)}}], indirect=True
)
def test_each_direction_within_20_percent_and_combined(netns_testbed):
    tb = netns_testbed
    got = _measure(tb, 6)  # 6 x 1 MiB up at 8 Mbit/s: about 7 s
    print("measured (Mbit/s):", got)
    assert got["up"] == pytest.approx(8.0, rel=0.2)
    assert got["down"] == pytest.approx(40.0, rel=0.2)
    assert got["combined"] == pytest.approx(2 / (1 / 8.0 + 1 / 40.0), rel=0.2)
    tb.set_rate("de", "up", 80.0)  # tenfold
    got = _measure(tb, 4)
    print("measured (Mbit/s):", got)
    assert got["up"] == pytest.approx(80.0, rel=0.2)
