"""The after-training commands: `export` (a model file to ONNX) and `infer` (onnxruntime)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hiertrain_edge.cli.common import add_threads
from hiertrain_edge.errors import DataError

# Kept equal to hiertrain_edge.export's constants without importing torch to build the parser.
_DEFAULT_OPSET = 17
_MIN_OPSET, _MAX_OPSET = 11, 20
_DEFAULT_BATCH_SIZE = 64
_DEFAULT_TEST_FRACTION = 0.2  # as `join` and `demo`: the board's held-out samples


def _shape(dims: tuple[object, ...]) -> str:
    return "[batch, " + ", ".join(str(d) for d in dims) + "]"


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB" if n_bytes >= 1e6 else f"{n_bytes / 1e3:.1f} kB"


def cmd_export(args: argparse.Namespace) -> int:
    from hiertrain_edge.export.onnx_export import export_checkpoint

    result = export_checkpoint(args.checkpoint, args.out, args.slice, args.opset)
    meta = result.metadata
    start, stop = result.units
    job = f"job {meta['job_id']}" if meta.get("job_id") else "job n/a"
    steps = f", {meta['steps']} steps" if meta.get("steps") is not None else ""
    print(
        f"exported {result.model} units {start}:{stop} of {result.num_units} ({job}{steps}) "
        f"to {result.path}: opset {result.opset}, input {_shape(result.input_shape)} float32, "
        f"output {_shape(result.output_shape)}, {_size(result.size_bytes)}"
    )
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    from hiertrain_edge.datasets import load_dataset, split
    from hiertrain_edge.export.inference import OnnxModel, run_inference

    # The model first: a wrong path fails before the data set is read.
    model = OnnxModel(args.model, threads=args.threads)
    data = load_dataset(args.data)
    if args.all:
        selection = "all"
    else:
        _, data = split(data, args.test_fraction)
        selection = "test"
        if len(data) == 0:
            raise DataError(
                f"test fraction {args.test_fraction} leaves no held-out samples in "
                f"{data.source}; use --all to run on every sample"
            )
    result = run_inference(model, data, args.batch_size)

    if args.report:
        report = {
            "model": str(model.path),
            "data": data.source,
            "selection": selection,
            "test_fraction": None if args.all else args.test_fraction,
            "onnxruntime": model.ort_version,
            "providers": model.providers,
            "metadata": model.metadata,
            **result.to_dict(),
        }
        path = Path(args.report)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=1))
        tmp.replace(path)

    which = "held-out test" if selection == "test" else "all"
    print(
        f"{model.path} on {which} samples of {data.source}: {result.samples} samples, "
        f"onnxruntime {model.ort_version}"
    )
    if result.accuracy is not None:
        print(f"accuracy {result.accuracy:.4f} ({result.correct}/{result.samples})")
    elif not model.gives_class_scores:
        print("accuracy n/a (the model's outputs are activations, not class scores)")
    print(
        f"throughput {result.throughput:.1f} samples/s; latency per batch of "
        f"{result.batch_size}: median {result.latency_median_s * 1e3:.2f} ms, "
        f"p95 {result.latency_p95_s * 1e3:.2f} ms"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:

    p = sub.add_parser("export", help="write a trained model file (model.pt) as ONNX")
    p.add_argument("--checkpoint", required=True, help="model file written by a tier (model.pt)")
    p.add_argument("--out", required=True, help="ONNX file to write")
    p.add_argument(
        "--slice",
        metavar="A:B",
        help="export units [A, B) alone, e.g. 0:4 for a board's share (default: all units)",
    )
    p.add_argument(
        "--opset",
        type=int,
        default=_DEFAULT_OPSET,
        help=f"ONNX opset, {_MIN_OPSET}..{_MAX_OPSET} (default {_DEFAULT_OPSET})",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("infer", help="run an ONNX model with onnxruntime on a board's data")
    p.add_argument("model", metavar="MODEL.onnx", help="ONNX file written by `export`")
    p.add_argument(
        "--data",
        help="data path as for join (default: the bundled MNIST test set)",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--test-fraction",
        type=float,
        default=_DEFAULT_TEST_FRACTION,
        help="run on the last fraction of the samples, the held-out split of training "
        f"(default {_DEFAULT_TEST_FRACTION}, as join)",
    )
    which.add_argument("--all", action="store_true", help="run on every sample")
    p.add_argument(
        "--batch-size",
        type=int,
        default=_DEFAULT_BATCH_SIZE,
        help=f"samples per onnxruntime call (default {_DEFAULT_BATCH_SIZE})",
    )
    p.add_argument("--report", help="write a JSON report (accuracy, throughput, latency) here")
    add_threads(p)
    p.set_defaults(func=cmd_infer, tier="device")
