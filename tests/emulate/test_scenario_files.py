"""Scenario files: the shipped ones load, bad ones fail with a message naming the field."""

from __future__ import annotations

import pytest

from hiertrain_edge.emulate.netns import LinkShape
from hiertrain_edge.emulate.runner import baseline_schedules, resolve_schedule
from hiertrain_edge.emulate.scenario import (
    load_scenario,
    scenario_from_dict,
    shipped_scenarios,
)
from hiertrain_edge.errors import ConfigError, ScheduleError


def test_scenario_files_shipped():
    assert sorted(shipped_scenarios()) == [
        "fluctuating-uplink",
        "good-wan",
        "thin-wan",
        "weak-uplink",
    ]
    thin = load_scenario("thin-wan")
    assert thin.link_shapes() == {
        "de": LinkShape(100.0, 100.0, 1.0, 0.0),
        "ec": LinkShape(5.0, 20.0, 30.0, 0.0),
    }
    assert thin.cpu_shares() == {"device": 0.25, "edge": 1.0, "cloud": 1.0}
    assert thin.tier("cloud").threads == 1
    assert thin.the_job().steps == 40
    fluct = load_scenario("fluctuating-uplink")
    assert [(c.at_s, c.settings()) for c in fluct.timeline()][:2] == [
        (8.0, [("de", "up", 5.0), ("de", "down", 5.0)]),
        (16.0, [("de", "up", 50.0), ("de", "down", 50.0)]),
    ]


def test_scenario_files_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"^scenario 'nowhere' is neither a file nor a shipped"):
        load_scenario("nowhere")
    with pytest.raises(ConfigError, match=r"^s: links.ec.up_mbps: Input should be greater than 0"):
        scenario_from_dict({"name": "x", "links": {"ec": {"up_mbps": 0}}}, "s")
    with pytest.raises(ConfigError, match=r"^s: \(top level\): Value error, unknown link 'wan'"):
        scenario_from_dict({"name": "x", "links": {"wan": {}}}, "s")
    with pytest.raises(ConfigError, match=r"^s: changes.0: Value error, a change needs up_mbps"):
        scenario_from_dict({"name": "x", "changes": [{"at_s": 1, "link": "de"}]}, "s")
    with pytest.raises(ConfigError, match=r"^scenario x: \[job\]: batch_size: Input should be"):
        scenario_from_dict({"name": "x", "job": {"batch_size": 0}})


def test_scenario_files_schedules():
    scn = scenario_from_dict({"name": "x", "job": {"model": "small_cnn", "batch_size": 8}})
    n = scn.the_job().spec().num_units
    table = baseline_schedules(n, 8)
    assert table["device"].to_dict() == {"groups": [{"n": 8, "cuts": [n, n]}]}
    assert table["edge"].to_dict() == {"groups": [{"n": 8, "cuts": [0, n]}]}
    assert table["cloud"].to_dict() == {"groups": [{"n": 8, "cuts": [0, 0]}]}
    assert table["dc:2"].to_dict() == {"groups": [{"n": 8, "cuts": [2, 2]}]}
    assert len(table) == 3 + 3 * (n - 1)
    assert resolve_schedule("planned", scn) is None  # no planner plugged in: the edge decides
    assert resolve_schedule("planned", scn, lambda s, spec: table["de:1"]) == table["de:1"]
    assert resolve_schedule("4:1:2,4:0:0", scn).to_dict()["groups"][1] == {"n": 4, "cuts": [0, 0]}
    with pytest.raises(ConfigError, match=rf"^schedule 'de:{n}' does not exist for small_cnn"):
        resolve_schedule(f"de:{n}", scn)
    with pytest.raises(
        ScheduleError, match=r"^group sizes add up to 4, expected the batch size 8"
    ):
        resolve_schedule("4:1:2", scn)


def test_scenario_files_emulate_needs_root(monkeypatch, capsys):
    from hiertrain_edge.cli.main import main

    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert main(["emulate", "--scenario", "thin-wan"]) == 2
    assert capsys.readouterr().err == (
        "hiertrain-edge emulate: error: the emulated testbed needs root (network namespaces, "
        "tc, cgroups); run it with sudo or as root\n"
    )
