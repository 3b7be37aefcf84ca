"""hiertrain-edge: hybrid-parallel training of one model on a board, an edge PC and a cloud."""

from hiertrain_edge.errors import HierTrainError

__version__ = "0.1.0"

__all__ = ["HierTrainError", "__version__"]
