"""Writing a trained model, or a slice of its units, as a checked ONNX file with its metadata."""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hiertrain_edge.errors import ConfigError, ModelError
from hiertrain_edge.models import build_model

log = logging.getLogger(__name__)

FORMAT = "hiertrain-edge/onnx/1"

# Opsets we accept for export. 20 is the newest the TorchScript-based exporter writes
# (torch.onnx's ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET in torch 2.13); 11 is the oldest we test,
# and the first where Clip (ReLU6) takes its bounds as inputs. onnxruntime 1.16, the oldest
# build common on JetPack boards, runs opset 17, hence the default.
MIN_OPSET = 11
MAX_OPSET = 20
DEFAULT_OPSET = 17

INPUT_NAME = "input"
OUTPUT_NAME = "output"
BATCH_AXIS = "batch"
INPUT_DTYPE = "float32"

# The traced batch size; any works, the batch axis is exported as dynamic. Two rather than
# one so that no size-1 dimension can be mistaken for a broadcast by the tracer.
_TRACE_BATCH = 2

# Metadata keys (ONNX metadata_props are strings); these hold JSON, the rest plain text.
META_PREFIX = "hiertrain."
_JSON_KEYS = frozenset(
    {
        "units",
        "num_units",
        "input_shape",
        "output_shape",
        "mean",
        "std",
        "class_names",
        "num_classes",
        "steps",
        "job",
    }
)


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: the file, which units, their per-sample shapes, the metadata."""

    path: Path
    model: str
    units: tuple[int, int]
    num_units: int
    input_shape: tuple[int, ...]  # per sample
    output_shape: tuple[int, ...]  # per sample
    opset: int
    size_bytes: int
    metadata: dict[str, Any] = field(default_factory=dict)


def parse_slice(text: str, num_units: int, model: str = "the model") -> tuple[int, int]:
    """`A:B` (either side may be left out) as the unit range [A, B) of an N-unit model."""
    start_text, sep, stop_text = text.partition(":")
    try:
        if not sep:
            raise ValueError(text)
        start = int(start_text) if start_text.strip() else 0
        stop = int(stop_text) if stop_text.strip() else num_units
    except ValueError:
        raise ModelError(
            f"slice must be A:B with unit indices (e.g. 0:{num_units}), got {text!r}"
        ) from None
    if not 0 <= start < stop <= num_units:
        raise ModelError(
            f"slice {start}:{stop} is empty or out of range for {model} with {num_units} "
            f"units: expected A:B with 0 <= A < B <= {num_units}"
        )
    return start, stop


def check_opset(opset: int) -> int:
    """Reject an opset outside the range we export and test."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConfigError(
            f"opset {opset} is not supported: expected {MIN_OPSET}..{MAX_OPSET} "
            f"(default {DEFAULT_OPSET})"
        )
    return opset


def encode_metadata(values: Mapping[str, Any]) -> dict[str, str]:
    """Our metadata as ONNX metadata_props: prefixed keys, JSON for the structured values."""
    props: dict[str, str] = {}
    for key, value in values.items():
        if value is None:
            continue
        props[META_PREFIX + key] = json.dumps(value) if key in _JSON_KEYS else str(value)
    return props


def decode_metadata(props: Mapping[str, str]) -> dict[str, Any]:
    """The inverse of `encode_metadata`; keys without our prefix are kept as they are."""
    values: dict[str, Any] = {}
    for key, text in props.items():
        if not key.startswith(META_PREFIX):
            values[key] = text
            continue
        name = key[len(META_PREFIX) :]
        try:
            values[name] = json.loads(text) if name in _JSON_KEYS else text
        except json.JSONDecodeError:
            values[name] = text  # written by someone else; show it as it is
    return values


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise ConfigError(
            "ONNX export needs the onnx package: pip install 'hiertrain-edge[onnx]'"
        ) from exc
    return onnx


def _per_sample_shape(units: nn.Module, input_shape: Sequence[int]) -> tuple[int, ...]:
    with torch.no_grad():
        return tuple(units(torch.zeros((1, *input_shape))).shape[1:])


def _atomic_write(data: bytes, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_units(
    model: nn.Sequential,
    input_shape: Sequence[int],
    out: str | Path,
    *,
    units: tuple[int, int] | None = None,
    opset: int = DEFAULT_OPSET,
    metadata: Mapping[str, Any] | None = None,
    model_name: str = "model",
) -> ExportResult:
    """Export units [A, B) of `model` (all of them by default) in eval mode to `out`.

    Args:
        model: the whole model, one child per unit.
        input_shape: per-sample shape of the whole model's input (unit 0's).
        units: (A, B); the slice's input is unit A-1's output.
        metadata: extra values recorded under `hiertrain.` (job id, normalisation, ...).

    Returns:
        What was written. The file passed onnx.checker's full check (with shape inference).
    """
    onnx = _import_onnx()
    check_opset(opset)
    num_units = len(model)
    start, stop = units if units is not None else (0, num_units)
    parse_slice(f"{start}:{stop}", num_units, model_name)  # range check only
    out = Path(out)

    was_training = model.training
    model.eval()
    try:
        # 1. Shapes: the slice's input is what units [0, A) make of one sample.
        head, part = model[:start], model[start:stop]
        slice_input = _per_sample_shape(head, input_shape) if start else tuple(input_shape)
        slice_output = _per_sample_shape(part, slice_input)

        # 2. Trace in eval mode with a dynamic batch axis.
        buffer = io.BytesIO()
        example = torch.zeros((_TRACE_BATCH, *slice_input))
        with warnings.catch_warnings():
            # torch deprecates the TorchScript exporter in favour of one that needs
            # onnxscript; see README, limitations.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                part,
                (example,),
                buffer,
                dynamo=False,
                export_params=True,
                opset_version=opset,
                do_constant_folding=True,
                training=torch.onnx.TrainingMode.EVAL,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: BATCH_AXIS}, OUTPUT_NAME: {0: BATCH_AXIS}},
            )
    finally:
        model.train(was_training)

    # 3. Metadata, then the checker (full check runs shape inference too).
    values: dict[str, Any] = {
        "format": FORMAT,
        "model": model_name,
        "units": [start, stop],
        "num_units": num_units,
        "input_shape": list(slice_input),
        "input_dtype": INPUT_DTYPE,
        "output_shape": list(slice_output),
        **(metadata or {}),
    }
    proto = onnx.load_from_string(buffer.getvalue())
    proto.producer_name = "hiertrain-edge"
    proto.doc_string = (
        f"{model_name} units {start}:{stop} of {num_units}; input "
        f"[{BATCH_AXIS}, {', '.join(map(str, slice_input))}] {INPUT_DTYPE}"
    )
    for key, text in encode_metadata(values).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, text
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    _atomic_write(data, out)
    log.info(
        "exported %s units %d:%d to %s (opset %d, %d bytes)",
        model_name,
        start,
        stop,
        out,
        opset,
        len(data),
    )
    return ExportResult(
        path=out,
        model=model_name,
        units=(start, stop),
        num_units=num_units,
        input_shape=slice_input,
        output_shape=slice_output,
        opset=opset,
        size_bytes=len(data),
        metadata=values,
    )


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    units: str | tuple[int, int] | None = None,
    opset: int = DEFAULT_OPSET,
) -> ExportResult:
    """Export a trained model file (the runtime's model.pt) or a slice of it as ONNX.

    Args:
        units: "A:B" or (A, B), the units to export; all of them by default.
    """
    # Imported here: export sits above the runtime, which owns the model file format.
    from hiertrain_edge.runtime.checkpoint import load_model_file
    from hiertrain_edge.runtime.job import job_from_dict

    check_opset(opset)
    blob = load_model_file(checkpoint)
    job = job_from_dict(blob["job"], f"job in {checkpoint}")
    spec = job.spec()
    model = build_model(spec, job.seed)
    try:
        model.load_state_dict(blob["state"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelError(f"{checkpoint} does not fit model {spec.name}: {first}") from exc
    if isinstance(units, str):
        units = parse_slice(units, spec.num_units, spec.name)
    start, stop = units if units is not None else (0, spec.num_units)

    meta = blob.get("meta", {})
    values: dict[str, Any] = {
        "job_id": meta.get("job_id"),
        "steps": meta.get("steps"),
        "num_classes": job.num_classes,
        "job": job.model_dump(mode="json"),
    }
    # Normalisation belongs to the data going into unit 0, class names to the last unit's
    # outputs; a slice that has neither end records neither.
    if start == 0:
        values["mean"] = meta.get("mean")
        values["std"] = meta.get("std")
    if stop == spec.num_units and meta.get("class_names"):
        values["class_names"] = list(meta["class_names"])
    return export_units(
        model,
        spec.input_shape,
        out,
        units=(start, stop),
        opset=opset,
        metadata=values,
        model_name=spec.name,
    )
