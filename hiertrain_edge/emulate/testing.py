"""The `netns_testbed` pytest fixture: a fresh emulated testbed per test, removed afterwards.

Use it from any conftest with `from hiertrain_edge.emulate.testing import netns_testbed`.
Shape it with indirect parametrization, e.g.

    @pytest.mark.parametrize(
        "netns_testbed", [{"links": {"de": (50, 50), "ec": (10, 10)}}], indirect=True
    )
    def test_x(netns_testbed):
        netns_testbed.address("edge")            # 198.18.1.2, the edge as the board sees it
        netns_testbed.set_rate("de", "up", 5.0)  # device -> edge now 5 Mbit/s
        netns_testbed.popen("edge", [...])       # a process inside the edge's namespace
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from hiertrain_edge.emulate.netns import LinkShape, Testbed

DEFAULT_RATE_MBPS = 100.0


def testbed_from_param(param: dict[str, Any] | None) -> Testbed:
    """A Testbed from {"links": {"de": (up, down) | LinkShape, ...}, "cpus": {...}}."""
    param = param or {}
    links = {}
    for name, shape in param.get("links", {}).items():
        links[name] = shape if isinstance(shape, LinkShape) else LinkShape(*shape)
    for name in ("de", "ec"):
        links.setdefault(name, LinkShape(DEFAULT_RATE_MBPS, DEFAULT_RATE_MBPS))
    return Testbed(links=links, cpus=dict(param.get("cpus", {})))


@pytest.fixture
def netns_testbed(request: pytest.FixtureRequest) -> Iterator[Testbed]:
    """Namespaces device/edge/cloud, links "de" and "ec" shaped (100 Mbit/s by default)."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CI runs as root)")
    if shutil.which("ip") is None or shutil.which("tc") is None:
        pytest.skip("iproute2 (ip, tc) is not installed; see .ci/system-deps.sh")
    testbed = testbed_from_param(getattr(request, "param", None))
    with testbed:
        yield testbed
