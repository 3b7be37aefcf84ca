"""Shared fixtures of the planner tests: a 4-unit model and quick estimated profiles."""

from __future__ import annotations

from torch import nn

from hiertrain_edge.models import ModelSpec
from hiertrain_edge.profiling.profile import TierProfile


def tiny_spec() -> ModelSpec:
    """Four units on 1x8x8 inputs: conv, pool, linear, linear."""
    factories = (
        lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()),
        lambda: nn.MaxPool2d(2),
        lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU()),
        lambda: nn.Linear(32, 3),
    )
    return ModelSpec("tiny4", factories, (1, 8, 8), 3)


def estimated(
    name: str, gflops: float, msg_s: float = 1e-4, memory: int = 10**9, wire_s: float = 0.0
) -> TierProfile:
    return TierProfile.model_validate(
        {
            "name": name,
            "provenance": {
                "kind": "estimated",
                "method": "test figures",
                "sources": ["test"],
                "formula": "see profiling/profile.py",
            },
            "memory_budget_bytes": memory,
            "message_overhead_s": msg_s,
            "optimizer_s_per_byte": 1e-9,
            "copy_s_per_byte": 5e-10,
            "wire_s_per_byte": wire_s,
            "compute": {"gflops": gflops, "mem_gbps": 5.0, "op_overhead_s": 2e-5},
        }
    )


def three_profiles(memory: int = 10**9, wire: bool = False) -> dict[str, TierProfile]:
    """Estimated board, edge and cloud; `wire`: with per-byte message costs (the board's
    four times the others', as a quarter core would measure)."""
    return {
        "device": estimated("dev", 0.02, 4e-4, memory, 4e-8 if wire else 0.0),
        "edge": estimated("edge", 0.2, 1e-4, memory, 1e-8 if wire else 0.0),
        "cloud": estimated("cloud", 2.0, 5e-5, memory, 1e-8 if wire else 0.0),
    }
