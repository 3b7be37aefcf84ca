"""Fixtures for the export tests: seeded models with non-trivial eval-mode statistics."""

from __future__ import annotations

import onnxruntime as ort
import pytest
import torch
from torch import nn

from hiertrain_edge.models import build_model, get_model


def _seeded_model(name: str, seed: int = 0) -> tuple[nn.Sequential, tuple[int, ...]]:
    """A zoo model with its initial weights and batch-norm statistics away from (0, 1).

    Fresh batch norms hold mean 0, variance 1, weight 1, bias 0, where eval and train mode
    give nearly the same outputs; moving them makes a train-mode export fail the comparison.
    """
    spec = get_model(name)
    model = build_model(spec, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)
            module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)
    return model.eval(), spec.input_shape


def _ort_session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture
def seeded_model():
    return _seeded_model


@pytest.fixture
def ort_session():
    return _ort_session
