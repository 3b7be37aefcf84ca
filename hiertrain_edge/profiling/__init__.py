"""Tier profiles: measuring this host, estimating boards, the hw_profiles/ schema."""

from hiertrain_edge.profiling.measure import (
    ModelFacts,
    measure_profile,
    model_facts,
    quick_profile,
)
from hiertrain_edge.profiling.profile import (
    ComputeFigures,
    LinearFit,
    Provenance,
    TierProfile,
    UnitProfile,
    load_profile,
)

__all__ = [
    "ComputeFigures",
    "LinearFit",
    "ModelFacts",
    "Provenance",
    "TierProfile",
    "UnitProfile",
    "load_profile",
    "measure_profile",
    "model_facts",
    "quick_profile",
]
