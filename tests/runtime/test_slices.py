"""A tier's slice: gradient sum and batch-norm buffer merge for replicated units."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from hiertrain_edge.planning.schedule import Schedule
from hiertrain_edge.runtime.job import job_from_dict
from hiertrain_edge.runtime.slices import TierSlice

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

JOB = job_from_dict(
    {"model": "bn_models:bn_cnn", "input_shape": [1, 28, 28], "batch_size": 8, "seed": 1}
)


def test_replica_gradients_sum_and_buffers_merge_by_samples():
    torch.manual_seed(0)
    spec = JOB.spec()
    # Device trains 6 samples end to end, the edge 2 from raw input: the edge owns every unit.
    schedule = Schedule.parse("6:4:4,2:0:4").validate(4, 8)
    device = TierSlice("device", spec, JOB, schedule)
    edge = TierSlice("edge", spec, JOB, schedule)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    for tier in (device, edge):
        tier.begin_step()
    device.forward_loss(0, 4, x[:6], y[:6], 8)
    edge.forward_loss(0, 4, x[6:], y[6:], 8)
    expected_grad = device.units[3].weight.grad + edge.units[3].weight.grad
    dev_mean = device.units[0][1].running_mean.clone()
    edge_mean = edge.units[0][1].running_mean.clone()

    edge.add_replica_grads([device.replica_grads()])

    assert torch.allclose(edge.units[3].weight.grad, expected_grad, rtol=0, atol=0)
    merged = (6 * dev_mean + 2 * edge_mean) / 8
    assert torch.allclose(edge.units[0][1].running_mean, merged, rtol=1e-6, atol=1e-7)
    assert int(edge.units[0][1].num_batches_tracked) == 1
    edge.step_optimizer()
    device.load_unit_state(edge.unit_state(schedule.replicated("device", 4)))
    assert edge.same_as_owned([device.unit_state(device.replicated)])


def test_sent_state_is_a_copy_that_later_steps_do_not_change():
    # The wire sends large tensors after `send` returns; a view would carry the step's
    # changes into a snapshot taken before it.
    torch.manual_seed(0)
    schedule = Schedule.parse("8:4:4").validate(4, 8)
    device = TierSlice("device", JOB.spec(), JOB, schedule)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    device.begin_step()
    device.forward_loss(0, 4, x, y, 8)
    device.step_optimizer()  # momentum buffers exist from here on
    units = device.unit_state(device.owns)
    opt = device.optimizer_state(device.owns)
    before = {k: {n: t.clone() for n, t in v.items()} for k, v in units.items()}
    momentum = [m["momentum_buffer"].clone() for m in opt["0"]]

    device.begin_step()
    device.forward_loss(0, 4, x, y, 8)  # batch-norm statistics change in place
    device.step_optimizer()  # weights and momentum change in place

    for key, tensors in units.items():
        for name, value in tensors.items():
            assert torch.equal(value, before[key][name]), f"unit {key} {name} changed"
    for state, was in zip(opt["0"], momentum, strict=True):
        assert torch.equal(state["momentum_buffer"], was)
    assert not torch.equal(device.units[0][1].running_mean, before["0"]["1.running_mean"])
