"""After a short demo on MNIST, export + infer report the board's own test accuracy exactly."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from hiertrain_edge.cli.main import main
from hiertrain_edge.datasets import load_dataset, split
from hiertrain_edge.export import OnnxModel, run_inference
from hiertrain_edge.models import build_model, get_model
from hiertrain_edge.runtime.checkpoint import load_model_file

DEMO_STEPS = 40
DEMO_TIMEOUT_S = 600


# Four Python processes and 40 training steps: 90-120 s on the shared 2-core CI machine.
@pytest.mark.slow
def test_onnx_accuracy_on_held_out_mnist_equals_the_runtime_evaluation(tmp_path, capsys):
    # 1. Train: three tiers on loopback, on the bundled MNIST (10,000 digits, last 2,000 held out).
    demo_report = tmp_path / "demo.json"
    demo = subprocess.run(
        [sys.executable, "-m", "hiertrain_edge", "--log-level", "warning", "demo",
         "--steps", str(DEMO_STEPS), "--threads", "1",
         "--out", str(tmp_path / "demo"), "--report", str(demo_report)],
        timeout=DEMO_TIMEOUT_S, capture_output=True, text=True,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-4000:]
    runtime_accuracy = json.loads(demo_report.read_text())["test_accuracy"]

    # 2. Export the board's model, then infer with the CLI's defaults (the held-out split).
    onnx_path, infer_report = tmp_path / "model.onnx", tmp_path / "infer.json"
    checkpoint = tmp_path / "demo" / "device" / "model.pt"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(onnx_path)]) == 0
    assert main(["infer", str(onnx_path), "--report", str(infer_report)]) == 0
    capsys.readouterr()
    report = json.loads(infer_report.read_text())
    assert report["samples"] == 2000
    assert report["accuracy"] == runtime_accuracy

    # 3. Same predictions one by one, and not by luck: every sample's top two PyTorch logits
    #    are further apart than onnxruntime and PyTorch ever differ, so no argmax tie can flip.
    blob = load_model_file(checkpoint)
    model = build_model(get_model(blob["job"]["model"]), blob["job"]["seed"])
    model.load_state_dict(blob["state"])
    model.eval()
    _, test = split(load_dataset(None), 0.2)
    with torch.no_grad():
        logits = model(test.x).numpy()
    onnx_model = OnnxModel(onnx_path)
    result = run_inference(onnx_model, test)
    assert np.array_equal(result.predictions, logits.argmax(1))
    top2 = np.sort(logits, axis=1)[:, -2:]
    smallest_margin = float((top2[:, 1] - top2[:, 0]).min())
    largest_difference = float(np.abs(onnx_model.run(test.x.numpy()) - logits).max())
    assert largest_difference < 1e-5 < smallest_margin
