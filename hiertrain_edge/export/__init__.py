"""After training: the model as ONNX, and inference on a board's data with onnxruntime."""

from hiertrain_edge.export.inference import InferenceResult, OnnxModel, run_inference
from hiertrain_edge.export.onnx_export import (
    DEFAULT_OPSET,
    MAX_OPSET,
    MIN_OPSET,
    ExportResult,
    export_checkpoint,
    export_units,
    parse_slice,
)

__all__ = [
    "DEFAULT_OPSET",
    "MAX_OPSET",
    "MIN_OPSET",
    "ExportResult",
    "InferenceResult",
    "OnnxModel",
    "export_checkpoint",
    "export_units",
    "parse_slice",
    "run_inference",
]
