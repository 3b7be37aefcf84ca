"""Building a model's units by index, cutting the unit list, and sizing each unit."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from hiertrain_edge.errors import ModelError
from hiertrain_edge.models.zoo import ModelSpec


def build_units(spec: ModelSpec, indices: Iterable[int], seed: int) -> dict[int, nn.Module]:
    """Build only the units at `indices`, each initialised from (seed, unit index).

    Seeding per unit makes unit i's initial weights independent of which other units a
    tier builds, so a board holding units [0, 3) and a reference process holding all of
    them start from identical weights.
    """
    units: dict[int, nn.Module] = {}
    for i in sorted(set(indices)):
        if not 0 <= i < spec.num_units:
            raise ModelError(
                f"unit index {i} out of range for {spec.name} (0..{spec.num_units - 1})"
            )
        state = torch.random.get_rng_state()
        torch.manual_seed(seed * 100_003 + i)
        try:
            units[i] = spec.factories[i]()
        finally:
            torch.random.set_rng_state(state)
    return units


def build_model(spec: ModelSpec, seed: int) -> nn.Sequential:
    """The whole model as one Sequential, initialised exactly as the tiers build it."""
    units = build_units(spec, range(spec.num_units), seed)
    return nn.Sequential(*(units[i] for i in range(spec.num_units)))


def check_cut(spec: ModelSpec, cut: int) -> None:
    """Reject a cut point outside 0..N."""
    if not 0 <= cut <= spec.num_units:
        raise ModelError(f"cut {cut} out of range for {spec.name}: expected 0..{spec.num_units}")


@dataclass(frozen=True)
class UnitInfo:
    """Static size of one unit, per sample where it scales with the batch."""

    index: int
    out_shape: tuple[int, ...]  # per sample
    out_bytes: int  # per sample, float32 activations
    param_bytes: int
    buffer_bytes: int
    forward_flops: int  # per sample


def describe(spec: ModelSpec, seed: int = 0) -> list[UnitInfo]:
    """Output shape, parameter bytes and forward FLOPs of every unit, from one sample."""
    infos: list[UnitInfo] = []
    x = torch.zeros((1, *spec.input_shape))
    for i, unit in build_units(spec, range(spec.num_units), seed).items():
        unit.eval()
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            y = unit(x)
        infos.append(
            UnitInfo(
                index=i,
                out_shape=tuple(y.shape[1:]),
                out_bytes=y[0].numel() * y.element_size(),
                param_bytes=sum(p.numel() * p.element_size() for p in unit.parameters()),
                buffer_bytes=sum(b.numel() * b.element_size() for b in unit.buffers()),
                forward_flops=int(counter.get_total_flops()),
            )
        )
        x = y
    return infos


def input_bytes(spec: ModelSpec) -> int:
    """Bytes of one raw float32 input sample."""
    n = 1
    for d in spec.input_shape:
        n *= d
    return 4 * n
