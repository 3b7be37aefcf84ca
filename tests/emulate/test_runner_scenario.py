"""A whole scenario through `hiertrain-edge emulate`: real tiers inside the namespaces."""

from __future__ import annotations

import json
import os

import pytest

from hiertrain_edge.cli.main import main
from hiertrain_edge.emulate import netns

pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,  # three tier processes start torch: ~30-60 s on a shared 2-core host
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
]

SCENARIO = """
name = "tiny"
timeout_s = 300

[job]
model = "small_cnn"
batch_size = 16
steps = 4

[tiers.edge]
cpus = 1.0

[links.de]
up_mbps = 50
down_mbps = 50

[links.ec]
up_mbps = 20
down_mbps = 20

[[changes]]
at_s = 0.5
link = "ec"
up_mbps = 5
"""


def test_runner_scenario_end_to_end(tmp_path, capsys):
    (tmp_path / "tiny.toml").write_text(SCENARIO)
    out = tmp_path / "run"
    rc = main(
        [
            "emulate",
            "--scenario",
            str(tmp_path / "tiny.toml"),
            "--out",
            str(out),
            "--schedule",
            "8:1:3,8:0:0",
        ]
    )
    assert rc == 0
    assert "scenario tiny: schedule 8:1:3,8:0:0, 4 steps in" in capsys.readouterr().out

    result = json.loads((out / "emulation.json").read_text())
    assert result["rc"] == 0 and result["steps"] == 4
    assert result["schedule_given"] == {
        "groups": [{"n": 8, "cuts": [1, 3]}, {"n": 8, "cuts": [0, 0]}]
    }
    assert result["rate_log"][4] | {"t_s": 0} == {
        "t_s": 0,
        "link": "ec",
        "direction": "up",
        "mbps": 5.0,
    }
    report = json.loads((out / "report.json").read_text())
    assert report["schedule"] == result["schedule_given"]
    assert len(report["iterations"]) == 4

    # nothing left behind
    names = netns._run(["ip", "netns", "list"]).stdout
    assert not any(n.startswith("hte") for n in names.split())
