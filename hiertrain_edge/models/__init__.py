"""Layer-list models: the zoo, user models, slicing into units, and their sizes."""

from hiertrain_edge.models.units import UnitInfo, build_model, build_units, describe
from hiertrain_edge.models.zoo import ZOO, ModelSpec, get_model

__all__ = ["ZOO", "ModelSpec", "UnitInfo", "build_model", "build_units", "describe", "get_model"]
