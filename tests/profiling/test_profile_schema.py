"""Profiles: the hw_profiles/ files validate, provenance is enforced, fits are exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from plan_fixtures import tiny_spec

from hiertrain_edge.errors import ConfigError
from hiertrain_edge.models import get_model
from hiertrain_edge.planning.cost import tier_costs
from hiertrain_edge.profiling.measure import fit_line, measure_profile, model_facts
from hiertrain_edge.profiling.profile import load_profile, parse_profile

REPO = Path(__file__).resolve().parents[2]
BOARDS = ("rpi4", "rpi5", "jetson_nano", "jetson_orin_nano", "x86_edge", "gpu_cloud")


@pytest.mark.parametrize("name", BOARDS)
def test_profile_hw_profiles_load_by_name_and_are_estimated(name):
    profile = load_profile(name)
    assert profile.name == name
    assert profile.provenance.kind == "estimated"
    assert profile.provenance.sources and profile.provenance.formula
    shipped = REPO / "hiertrain_edge" / "profiling" / "hw_profiles" / f"{name}.json"
    assert shipped.read_text() == (REPO / "hw_profiles" / f"{name}.json").read_text()


def test_profile_estimated_needs_sources():
    data = json.loads((REPO / "hw_profiles" / "rpi4.json").read_text())
    data["provenance"]["sources"] = []
    with pytest.raises(ConfigError) as err:
        parse_profile(data, "rpi4.json")
    assert str(err.value) == (
        "rpi4.json: provenance: Value error, an estimated profile must list its sources and "
        "its formula"
    )


def test_profile_measured_needs_host_and_date():
    data = json.loads((REPO / "hw_profiles" / "rpi4.json").read_text())
    data["provenance"] = {"kind": "measured", "method": "timed"}
    with pytest.raises(ConfigError, match="a measured profile must name its host and date"):
        parse_profile(data)


def test_profile_unknown_name():
    with pytest.raises(ConfigError, match=r"^no profile file or hw_profiles name 'pi9'; expected"):
        load_profile("pi9")


def test_profile_fit_line_is_least_squares():
    fit = fit_line([1, 2, 4], [0.003, 0.005, 0.009])
    assert fit.a_s == pytest.approx(0.001)
    assert fit.b_s == pytest.approx(0.002)
    assert fit.rel_err == 0.0


def test_profile_measured_round_trip_and_model_check(tmp_path):
    spec = tiny_spec()
    profile = measure_profile(spec, 4, threads=1, repeats=1, message_s=1e-4)
    assert profile.provenance.kind == "measured"
    assert [u.index for u in profile.units] == [0, 1, 2, 3]
    assert profile.units[2].param_bytes == (64 * 32 + 32) * 4
    again = load_profile(profile.save(tmp_path / "p.json"))
    assert again == profile
    costs = tier_costs(again, model_facts(spec))
    assert costs.fwd(0, 4, 3) > 0
    with pytest.raises(
        ConfigError, match=r"was measured on model tiny4 \(4 units\), not small_cnn"
    ):
        tier_costs(again, model_facts(get_model("small_cnn")))


def test_profile_estimate_maps_flops():
    facts = model_facts(tiny_spec())
    costs = tier_costs(load_profile("rpi4"), facts)
    c = load_profile("rpi4").compute
    per_sample = facts.flops[2] / (c.gflops * 1e9) + (facts.out_bytes[1] + facts.out_bytes[2]) / (
        c.mem_gbps * 1e9
    )
    assert costs.fwd(2, 3, 10) == pytest.approx(c.op_overhead_s + 10 * per_sample)
    assert costs.bwd(2, 3, 10) == pytest.approx(c.op_overhead_s + 20 * per_sample)
