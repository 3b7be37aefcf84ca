"""The cost model follows the runtime's order of work and prices each part exactly."""

from __future__ import annotations

import math

import pytest
from plan_fixtures import three_profiles, tiny_spec

from hiertrain_edge.errors import ConfigError
from hiertrain_edge.planning.cost import HEADER_BYTES, CostModel, Links
from hiertrain_edge.planning.schedule import Schedule


@pytest.fixture(scope="module")
def model() -> CostModel:
    return CostModel.build(tiny_spec(), three_profiles(), Links.symmetric(10, 100, 0.001, 0.01))


def test_cost_device_only_is_device_compute_plus_fixed_costs(model):
    D = model.tiers["device"]
    n = 8
    expected = (
        D.message_s / 2  # send `step`
        + D.fwd(0, 4, n)
        + D.bwd(0, 4, n)
        + D.optimizer_s_per_byte * sum(model.facts.param_bytes)
    )
    assert model.predict(Schedule.parse("8:4:4")) == pytest.approx(expected, rel=1e-12)


def test_cost_edge_only_uploads_raw_input_and_labels(model):
    E, D = model.tiers["edge"], model.tiers["device"]
    n, bps = 8, 10e6 / 8
    up = (n * (model.facts.input_bytes + 8) + HEADER_BYTES) / bps
    # the step message occupies the uplink first, then the samples follow
    step_msg = HEADER_BYTES / bps
    t_fwd_arrives = D.message_s / 2 + max(D.message_s / 2, step_msg) + up + 0.001
    edge_done = t_fwd_arrives + E.message_s / 2 + E.fwd(0, 4, n) + E.bwd(0, 4, n)
    reply = edge_done + E.message_s / 2 + HEADER_BYTES / bps + 0.001 + D.message_s / 2
    assert model.predict(Schedule.parse("8:0:4")) == pytest.approx(
        max(reply, edge_done + E.message_s / 2 + E.optimizer_s_per_byte * 0), rel=1e-9
    )


def test_cost_timeline_follows_dispatch_order(model):
    # group 0 ends on the edge, group 1 on the cloud: the cloud-bound one goes first
    total, events = model.timeline(Schedule.parse("3:1:4,3:1:2,2:4:4"))
    device = [e.label for e in events if e.resource == "device"]
    assert device[:4] == ["send step", "fwd g1 [0,1)", "send fwd g1", "fwd g0 [0,1)"]
    assert device[5] == "train g2 [0,4)"
    assert total == pytest.approx(max(e.end_s for e in events))
    links = {e.resource for e in events}
    assert {"device->edge", "edge->device", "edge->cloud", "cloud->edge"} <= links


def test_cost_zero_bandwidth_makes_a_needed_link_infeasible():
    m = CostModel.build(tiny_spec(), three_profiles(), Links(10, 10, 0, 10))
    assert math.isinf(m.predict(Schedule.parse("8:0:0")))
    assert math.isfinite(m.predict(Schedule.parse("8:0:4")))
    down = CostModel.build(tiny_spec(), three_profiles(), Links.symmetric(0, 0))
    assert math.isfinite(down.predict(Schedule.parse("8:4:4")))  # device-only needs no link


def test_cost_more_bandwidth_is_never_slower(model):
    fast = CostModel.build(tiny_spec(), three_profiles(), Links.symmetric(20, 200, 0.001, 0.01))
    for text in ("8:0:4", "4:1:2,4:4:4", "3:1:4,3:1:2,2:0:0"):
        assert fast.predict(Schedule.parse(text)) <= model.predict(Schedule.parse(text))


def test_cost_rejects_negative_bandwidth():
    with pytest.raises(ConfigError, match=r"link de_mbps must be >= 0, got -1"):
        Links.symmetric(-1, 10)


def test_cost_memory_counts_saved_activations_per_group(model):
    mem1 = model.memory_bytes([(2, 4)], [1])
    mem4 = model.memory_bytes([(2, 4)], [4])
    saved = model.facts.saved_bytes
    assert mem4["device"] - mem1["device"] == 3 * (saved[0] + saved[1])
    assert mem4["edge"] - mem1["edge"] == 3 * (saved[2] + saved[3])
    assert mem4["cloud"] == mem1["cloud"]


def test_cost_message_bytes_cost_both_ends_wire_s_per_byte_each_half():
    """A message of b bytes costs its sender and its receiver (message_s + wire_s_per_byte
    * b) / 2 each: an edge that relays the board's samples to the cloud pays per byte twice."""
    m = CostModel.build(tiny_spec(), three_profiles(wire=True), Links.symmetric(10, 100))
    D, E, C = (m.tiers[t] for t in ("device", "edge", "cloud"))
    assert (D.wire_s_per_byte, E.wire_s_per_byte, C.wire_s_per_byte) == (4e-8, 1e-8, 1e-8)
    n = 8
    raw = n * (m.facts.input_bytes + 8) + HEADER_BYTES  # the `fwd` of raw samples
    _, events = m.timeline(Schedule.parse("8:0:0"))  # cloud-only: the edge relays
    span = {(e.resource, e.label): e.end_s - e.start_s for e in events}
    assert span[("device", "send fwd g0")] == pytest.approx((D.message_s + 4e-8 * raw) / 2)
    assert span[("edge", "recv fwd g0")] == pytest.approx((E.message_s + 1e-8 * raw) / 2)
    assert span[("edge", "send fwd g0")] == pytest.approx((E.message_s + 1e-8 * raw) / 2)
    assert span[("cloud", "recv fwd g0")] == pytest.approx((C.message_s + 1e-8 * raw) / 2)
    # the edge's whole step: six messages (step, fwd, bwd of no bytes at cut 0, each taken
    # and passed on), the fwd's bytes twice, five headers besides
    edge_busy = sum(e.end_s - e.start_s for e in events if e.resource == "edge")
    assert edge_busy == pytest.approx(3 * E.message_s + 1e-8 * (raw + 2 * HEADER_BYTES))
    # and the step is longer than without the per-byte cost by at least the relay's
    plain = CostModel.build(tiny_spec(), three_profiles(), Links.symmetric(10, 100))
    extra = m.predict(Schedule.parse("8:0:0")) - plain.predict(Schedule.parse("8:0:0"))
    assert extra >= 1e-8 * raw + 4e-8 * raw / 2
