"""Fixtures for the export tests: seeded models with non-trivial eval-mode statistics."""

from __future__ import annotations

import onnxruntime as ort
import pytest
import torch
from torch import nn

from hiertrain_edge.models import build_model, get_model
from hiertrain_edge.runtime.checkpoint import save_model


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


def _write_checkpoint(
    path, model_name="small_cnn", seed=3, input_shape=None, num_classes=10, mean=0.1307, std=0.3081
):
    """A model file as the board writes it, with weights moved away from their init."""
    spec = get_model(model_name, num_classes, input_shape)
    model = build_model(spec, seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=gen))
    job = {"model": model_name, "num_classes": num_classes, "seed": seed, "steps": 40}
    if input_shape is not None:
        job["input_shape"] = list(input_shape)
    meta = {
        "job_id": "a1b2c3d4",
        "steps": 40,
        "mean": mean,
        "std": std,
        "class_names": [str(i) for i in range(num_classes)],
    }
    save_model(path, job, model.state_dict(), meta)
    return model.eval(), spec


@pytest.fixture
def make_checkpoint():
    return _write_checkpoint
