"""Running an exported model with onnxruntime on a board's data: predictions, accuracy, speed."""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hiertrain_edge.datasets import Dataset
from hiertrain_edge.errors import ConfigError, DataError
from hiertrain_edge.export.onnx_export import DEFAULT_OPSET, decode_metadata

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 64
_FLOAT_TYPE = "tensor(float)"
_NORMALISATION_TOLERANCE = 1e-6  # mean/std are written as JSON floats; allow rounding only

# onnxruntime's own words for "I do not know this opset" (checked with 1.32).
_ORT_OPSET_RE = re.compile(r"[Oo]pset (\d+)")
_ORT_MAX_OPSET_RE = re.compile(r"till opset (\d+)")
_ORT_PREFIX_RE = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ")


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise ConfigError(
            "inference needs onnxruntime: pip install onnxruntime (or 'hiertrain-edge[onnx]')"
        ) from exc
    return onnxruntime


def _ort_message(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return _ORT_PREFIX_RE.sub("", text)


def _load_error(path: Path, exc: Exception, ort_version: str) -> ConfigError:
    """Turn onnxruntime's load failure into one line that says what is wrong."""
    text = str(exc)
    if type(exc).__name__ == "InvalidProtobuf" or "Protobuf parsing failed" in text:
        return ConfigError(f"{path} is not an ONNX model (its bytes do not parse as one)")
    if "No graph was found" in text:
        return ConfigError(f"{path} is not an ONNX model (it holds no graph)")
    opset = _ORT_OPSET_RE.search(text)
    if opset:
        newest = _ORT_MAX_OPSET_RE.search(text)
        bound = f" (it supports opsets up to {newest.group(1)})" if newest else ""
        return ConfigError(
            f"{path} uses opset {opset.group(1)}, which onnxruntime {ort_version} does not "
            f"support{bound}; export it again with --opset {DEFAULT_OPSET}"
        )
    return ConfigError(f"onnxruntime {ort_version} cannot load {path}: {_ort_message(exc)}")


def _format_shape(dims: tuple[Any, ...]) -> str:
    return "(" + ", ".join(str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"


class OnnxModel:
    """An ONNX model loaded into onnxruntime, with its per-sample input shape and metadata."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        ort = _import_ort()
        self.path = Path(path)
        self.ort_version = str(ort.__version__)
        if not self.path.is_file():
            raise ConfigError(f"ONNX model {str(self.path)!r} does not exist")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3  # errors only; onnxruntime's warnings go to stderr
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own pybind classes
            raise _load_error(self.path, exc, self.ort_version) from exc

        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise ConfigError(
                f"{self.path} has {len(inputs)} inputs; models with one input are supported"
            )
        if inputs[0].type != _FLOAT_TYPE:
            raise ConfigError(
                f"{self.path} takes {inputs[0].type}; only {_FLOAT_TYPE} (float32) input is "
                "supported"
            )
        if not inputs[0].shape:
            raise ConfigError(f"{self.path} takes a scalar input; a batch axis is expected")
        self.input_name = inputs[0].name
        self.input_shape: tuple[Any, ...] = tuple(inputs[0].shape[1:])  # per sample
        self.output_rank = len(outputs[0].shape)
        self.metadata = decode_metadata(self.session.get_modelmeta().custom_metadata_map)
        self.providers = list(self.session.get_providers())

    @property
    def units(self) -> tuple[int, int] | None:
        """The exported unit range [A, B), when the model came from hiertrain-edge."""
        units = self.metadata.get("units")
        return (int(units[0]), int(units[1])) if units else None

    @property
    def gives_class_scores(self) -> bool:
        """True when outputs are (batch, classes): the whole model or a slice to its end."""
        if self.output_rank != 2:
            return False
        units, total = self.units, self.metadata.get("num_units")
        return units is None or total is None or units[1] == int(total)

    def check_data(self, data: Dataset) -> None:
        """Raise DataError unless `data`'s samples fit the model's input."""
        sample = tuple(data.sample_shape)
        expected = self.input_shape
        fits = len(sample) == len(expected) and all(
            not isinstance(e, int) or e == s for e, s in zip(expected, sample, strict=True)
        )
        if not fits:
            hint = ""
            if self.units and self.units[0] > 0:
                hint = (
                    f" (it is a slice starting at unit {self.units[0]}: its input is unit "
                    f"{self.units[0] - 1}'s output, not data)"
                )
            raise DataError(
                f"data samples have shape {_format_shape(sample)} but {self.path} takes "
                f"{_format_shape(expected)} per sample{hint}"
            )
        mean, std = self.metadata.get("mean"), self.metadata.get("std")
        if mean is not None and std is not None:
            same = (
                abs(float(mean) - data.mean) <= _NORMALISATION_TOLERANCE
                and abs(float(std) - data.std) <= _NORMALISATION_TOLERANCE
            )
            if not same:
                log.warning(
                    "%s was trained on inputs normalised with mean %g, std %g but %s is loaded "
                    "with mean %g, std %g; predictions may be off",
                    self.path,
                    float(mean),
                    float(std),
                    data.source,
                    data.mean,
                    data.std,
                )

    def run(self, x: np.ndarray) -> np.ndarray:
        """Outputs for one batch of float32 samples."""
        return self.session.run(None, {self.input_name: x})[0]


@dataclass
class InferenceResult:
    """Predictions, accuracy when labels and class scores exist, and per-batch timing."""

    samples: int
    batch_size: int
    predictions: np.ndarray | None  # argmax per sample, when outputs are class scores
    correct: int | None
    latencies_s: list[float]  # one per batch, in order
    total_s: float  # onnxruntime time over all batches

    @property
    def accuracy(self) -> float | None:
        return None if self.correct is None else self.correct / max(1, self.samples)

    @property
    def throughput(self) -> float:
        """Samples per second of onnxruntime time (loading and the warm-up run excluded)."""
        return self.samples / self.total_s if self.total_s > 0 else math.inf

    def _full_batches(self) -> list[float]:
        # A short last batch would pull the statistics down; leave it out when others exist.
        full = self.samples // self.batch_size
        return self.latencies_s[:full] if full else self.latencies_s

    @property
    def latency_median_s(self) -> float:
        return float(np.median(self._full_batches()))

    @property
    def latency_p95_s(self) -> float:
        return float(np.percentile(self._full_batches(), 95))

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "batch_size": self.batch_size,
            "accuracy": self.accuracy,
            "correct": self.correct,
            "throughput_samples_per_s": self.throughput,
            "latency_per_batch_s": {
                "median": self.latency_median_s,
                "p95": self.latency_p95_s,
                "batches": len(self._full_batches()),
            },
            "total_s": self.total_s,
        }


def run_inference(
    model: OnnxModel, data: Dataset, batch_size: int = DEFAULT_BATCH_SIZE
) -> InferenceResult:
    """Run `model` over `data` in order, in batches; one untimed warm-up batch first."""
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    if len(data) == 0:
        raise DataError(f"no samples to run inference on in {data.source}")
    model.check_data(data)
    x = np.ascontiguousarray(data.x.numpy(), dtype=np.float32)
    labels = data.y.numpy() if data.y is not None and len(data.y) == len(x) else None
    scores = model.gives_class_scores

    # The first run allocates onnxruntime's buffers; keep it out of the timing.
    model.run(x[:batch_size])

    predictions: list[np.ndarray] = []
    latencies: list[float] = []
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        t0 = time.perf_counter()
        out = model.run(batch)
        latencies.append(time.perf_counter() - t0)
        if scores:
            predictions.append(out.argmax(axis=1))
    log.debug("ran %d batches of up to %d samples", len(latencies), batch_size)

    predicted = np.concatenate(predictions) if scores else None
    correct = None
    if predicted is not None and labels is not None:
        correct = int((predicted == labels).sum())
    return InferenceResult(
        samples=len(x),
        batch_size=batch_size,
        predictions=predicted,
        correct=correct,
        latencies_s=latencies,
        total_s=sum(latencies),
    )
