"""The zoo as ordered units: shapes, sizes, per-unit building and user models."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch

from hiertrain_edge.errors import ModelError
from hiertrain_edge.models import build_model, build_units, describe, get_model
from hiertrain_edge.models.units import check_cut

EXPECTED = {
    # name: (units, output shape of the first unit, parameter count)
    "small_cnn": (6, (16, 28, 28), 215_370),
    "vgg11": (16, (64, 32, 32), 9_750_922),
    "resnet18": (10, (64, 32, 32), 11_173_962),
    "mobilenetv2": (20, (32, 32, 32), 2_236_682),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_zoo_units_shapes_and_sizes(name):
    spec = get_model(name)
    units, first_shape, params = EXPECTED[name]
    infos = describe(spec)
    assert spec.num_units == units == len(infos)
    assert infos[0].out_shape == first_shape
    assert infos[-1].out_shape == (10,)
    assert sum(i.param_bytes for i in infos) == 4 * params
    assert all(i.forward_flops >= 0 for i in infos)
    assert sum(i.forward_flops for i in infos) > 0
    for info in infos:
        n = 1
        for d in info.out_shape:
            n *= d
        assert info.out_bytes == 4 * n


def test_zoo_small_cnn_flops_of_first_conv():
    # 16 filters of 5x5x1 at 28x28 positions, 2 FLOPs per multiply-add, plus nothing else
    # counted (ReLU is not a matmul or convolution).
    assert describe(get_model("small_cnn"))[0].forward_flops == 2 * 16 * 25 * 28 * 28


def test_units_built_alone_equal_units_built_together():
    spec = get_model("vgg11")
    alone = build_units(spec, [7], seed=5)[7]
    whole = build_model(spec, seed=5)
    for (name, a), (_, b) in zip(
        alone.state_dict().items(), whole[7].state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_units_chain_equals_whole_model():
    spec = get_model("resnet18")
    model = build_model(spec, seed=1).eval()
    x = torch.randn(2, 3, 32, 32)
    units = build_units(spec, range(spec.num_units), seed=1)
    h = x
    for i in range(spec.num_units):
        h = units[i].eval()(h)
    assert torch.equal(h, model(x))


def test_zoo_unknown_model_and_bad_cut():
    with pytest.raises(ModelError, match="unknown model 'vgg99'; expected one of mobilenetv2"):
        get_model("vgg99")
    with pytest.raises(ModelError, match=r"cut 7 out of range for small_cnn: expected 0..6"):
        check_cut(get_model("small_cnn"), 7)
    with pytest.raises(ModelError, match=r"model small_cnn takes input of shape \(1, 28, 28\)"):
        get_model("small_cnn", input_shape=(3, 32, 32))


def test_user_model_from_package_module_function(tmp_path, monkeypatch):
    (tmp_path / "my_net.py").write_text(
        textwrap.dedent("""
        from torch import nn
        def build():
            return nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))
        def not_sequential():
            return nn.Linear(2, 2)
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = get_model("my_net:build", num_classes=3, input_shape=(3, 2, 2))
    assert spec.num_units == 4
    assert [i.out_shape for i in describe(spec)] == [(12,), (8,), (8,), (3,)]
    with pytest.raises(ModelError, match="my_net:not_sequential must return a non-empty torch"):
        get_model("my_net:not_sequential", input_shape=(2,))
    with pytest.raises(ModelError, match="needs an input shape"):
        get_model("my_net:build")
    with pytest.raises(ModelError, match="cannot import user model module 'nope_mod'"):
        get_model("nope_mod:build", input_shape=(2,))
    sys.modules.pop("my_net", None)
