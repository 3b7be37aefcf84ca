"""Inference throughput of onnxruntime against PyTorch, per zoo model, on this machine.

    python benchmarks/bench_onnx.py [--batch-sizes 1,32] [--threads 1] [--min-time-s 2]
                                    [--models small_cnn,vgg11,resnet18,mobilenetv2] [--json FILE]

Each model is built with its seeded initial weights, exported with `export_units` (as
`hiertrain-edge export` does, opset 17), and both engines run the same random float32 batch
in eval mode with the same number of threads: PyTorch under torch.inference_mode(), the ONNX
file in an onnxruntime CPU session. Each (model, batch size) is timed per call after two
warm-up calls, in rounds that alternate the engines (so a change in the machine's load hits
both alike), for at least --min-time-s per engine in all; throughput is batch size / median
call time. The ratio is onnxruntime / PyTorch throughput (> 1: onnxruntime is faster).

Prints a Markdown table; no pass/fail, these are measurements.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from hiertrain_edge.export import export_units
from hiertrain_edge.models import ZOO, build_model, get_model

WARMUP_CALLS = 2
MIN_CALLS = 3  # per engine and round
ROUNDS = 4
SEED = 0


def _median_call_s(calls: dict[str, Callable[[], Any]], min_time_s: float) -> dict[str, float]:
    """Median seconds per call of each engine, timed in alternating rounds."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        for _ in range(WARMUP_CALLS):
            call()
    for _ in range(ROUNDS):
        for name, call in calls.items():
            started = time.perf_counter()
            n = 0
            while n < MIN_CALLS or time.perf_counter() - started < min_time_s / ROUNDS:
                t0 = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - t0)
                n += 1
    return {name: statistics.median(t) for name, t in times.items()}


def bench_model(
    name: str, batch_sizes: list[int], threads: int, min_time_s: float, folder: Path
) -> list[dict[str, Any]]:
    spec = get_model(name)
    model = build_model(spec, SEED).eval()
    path = folder / f"{name}.onnx"
    export_units(model, spec.input_shape, path, model_name=name)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    rows = []
    gen = torch.Generator().manual_seed(SEED)
    for batch in batch_sizes:
        x = torch.randn((batch, *spec.input_shape), generator=gen)
        x_np = np.ascontiguousarray(x.numpy())

        def run_torch(x: torch.Tensor = x) -> None:
            with torch.inference_mode():
                model(x)

        def run_ort(x_np: np.ndarray = x_np) -> None:
            session.run(None, {"input": x_np})

        median_s = _median_call_s({"torch": run_torch, "ort": run_ort}, min_time_s)
        torch_s, ort_s = median_s["torch"], median_s["ort"]
        rows.append(
            {
                "model": name,
                "batch_size": batch,
                "torch_samples_per_s": batch / torch_s,
                "ort_samples_per_s": batch / ort_s,
                "ratio": torch_s / ort_s,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(ZOO), help="comma-separated zoo models")
    parser.add_argument("--batch-sizes", default="1,32", help="comma-separated batch sizes")
    parser.add_argument("--threads", type=int, default=1, help="threads for both engines")
    parser.add_argument("--min-time-s", type=float, default=2.0, help="timing per engine")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as folder:
        for name in args.models.split(","):
            rows += bench_model(name, batch_sizes, args.threads, args.min_time_s, Path(folder))

    print(
        f"onnxruntime {ort.__version__} vs torch {torch.__version__}, {args.threads} thread(s), "
        f"{platform.machine()} {platform.processor() or ''}".rstrip()
    )
    print()
    print("| model | batch | PyTorch samples/s | onnxruntime samples/s | ratio ort/torch |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['model']} | {r['batch_size']} | {r['torch_samples_per_s']:.1f} | "
            f"{r['ort_samples_per_s']:.1f} | {r['ratio']:.2f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
