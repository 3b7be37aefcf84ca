"""Single-process training on the board's batches: what one hybrid step must equal."""

from __future__ import annotations

import torch
from torch import nn

from hiertrain_edge.datasets import Dataset
from hiertrain_edge.models import build_model
from hiertrain_edge.runtime.batches import BatchOrder
from hiertrain_edge.runtime.job import Job
from hiertrain_edge.runtime.slices import make_optimizer


def train_reference(
    job: Job,
    train: Dataset,
    steps: int,
    group_sizes: list[int] | dict[int, list[int]] | None = None,
) -> nn.Sequential:
    """Train the whole model in one process on the same batches the board draws.

    With `group_sizes` (one list for every step, or a list per step), each step runs the
    groups as separate micro-batches (their loss summed and divided by the batch size),
    which is what the tiers compute; without, the whole batch goes through at once.
    """
    spec = job.spec()
    model = build_model(spec, job.seed)
    model.train()
    optimizer = make_optimizer(job, list(model.parameters()))
    order = BatchOrder(len(train), job.batch_size, job.seed)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    for step in range(steps):
        idx = order.indices(step)
        sizes = group_sizes[step] if isinstance(group_sizes, dict) else group_sizes
        optimizer.zero_grad(set_to_none=True)
        for part in idx.split(sizes or [job.batch_size]):
            loss = loss_fn(model(train.x[part]), train.y[part]) / job.batch_size
            loss.backward()
        optimizer.step()
    return model


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, batch_size: int = 500) -> tuple[float, float]:
    """Accuracy (0..1) and mean cross-entropy of `model` on `data`, in eval mode."""
    model.eval()
    correct, loss_sum = 0, 0.0
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    for start in range(0, len(data), batch_size):
        x = data.x[start : start + batch_size]
        y = data.y[start : start + batch_size]
        logits = model(x)
        loss_sum += float(loss_fn(logits, y))
        correct += int((logits.argmax(1) == y).sum())
    n = max(1, len(data))
    return correct / n, loss_sum / n
