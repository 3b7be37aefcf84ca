"""`hiertrain-edge export` and `infer` end to end on a small .npz data set."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hiertrain_edge.cli import export as export_cli
from hiertrain_edge.cli.main import main
from hiertrain_edge.export import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
from hiertrain_edge.export.inference import DEFAULT_BATCH_SIZE


@pytest.fixture
def board(tmp_path, make_checkpoint):
    """A trained-looking small CNN and 50 labelled digits-shaped samples as a board has them."""
    model, _ = make_checkpoint(tmp_path / "model.pt", mean=0.0, std=1.0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(50, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, size=50).astype(np.int64)
    np.savez(tmp_path / "board.npz", x=x, y=y)
    return model, tmp_path


def test_cli_defaults_equal_the_library_constants():
    assert export_cli._DEFAULT_OPSET == DEFAULT_OPSET
    assert (export_cli._MIN_OPSET, export_cli._MAX_OPSET) == (MIN_OPSET, MAX_OPSET)
    assert export_cli._DEFAULT_BATCH_SIZE == DEFAULT_BATCH_SIZE


def test_export_then_infer_on_the_held_out_split(board, capsys):
    model, d = board
    onnx_path = d / "model.onnx"
    assert main(["export", "--checkpoint", str(d / "model.pt"), "--out", str(onnx_path)]) == 0
    size_kb = onnx_path.stat().st_size / 1e3
    assert capsys.readouterr().out == (
        f"exported small_cnn units 0:6 of 6 (job a1b2c3d4, 40 steps) to {onnx_path}: opset 17, "
        f"input [batch, 1, 28, 28] float32, output [batch, 10], {size_kb:.1f} kB\n"
    )

    report_path = d / "infer.json"
    argv = ["infer", str(onnx_path), "--data", str(d / "board.npz"), "--batch-size", "4"]
    assert main([*argv, "--report", str(report_path)]) == 0
    report = json.loads(report_path.read_text())

    # The held-out split is the last 20 %: 10 of 50 samples, judged as PyTorch judges them.
    with np.load(d / "board.npz") as arrays:
        x = torch.from_numpy(arrays["x"][40:].astype(np.float32) / 255.0).unsqueeze(1)
        y = torch.from_numpy(arrays["y"][40:])
    with torch.no_grad():
        correct = int((model(x).argmax(1) == y).sum())
    assert (report["samples"], report["correct"], report["accuracy"]) == (
        10,
        correct,
        correct / 10,
    )
    assert (report["selection"], report["test_fraction"], report["batch_size"]) == ("test", 0.2, 4)
    assert report["latency_per_batch_s"]["batches"] == 2  # two full batches of 4, one of 2
    assert report["throughput_samples_per_s"] > 0
    assert report["metadata"]["job_id"] == "a1b2c3d4"
    assert report["metadata"]["units"] == [0, 6]

    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        f"{onnx_path} on held-out test samples of {d / 'board.npz'}: 10 samples, "
        f"onnxruntime {report['onnxruntime']}"
    )
    assert lines[1] == f"accuracy {correct / 10:.4f} ({correct}/10)"
    assert lines[2].startswith("throughput ") and " latency per batch of 4: median " in lines[2]

    # --all runs every sample.
    assert main(["infer", str(onnx_path), "--data", str(d / "board.npz"), "--all"]) == 0
    assert "on all samples of" in capsys.readouterr().out


def test_a_slice_infers_without_accuracy(board, capsys):
    _, d = board
    out = d / "head.onnx"
    assert (
        main(["export", "--checkpoint", str(d / "model.pt"), "--out", str(out), "--slice", ":2"])
        == 0
    )
    assert (
        main(["infer", str(out), "--data", str(d / "board.npz"), "--report", str(d / "r.json")])
        == 0
    )
    assert "accuracy n/a (the model's outputs are activations, not class scores)" in (
        capsys.readouterr().out
    )
    report = json.loads((d / "r.json").read_text())
    assert (report["accuracy"], report["correct"]) == (None, None)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["export", "--checkpoint", "{d}/model.pt", "--out", "{d}/m.onnx", "--opset", "21"],
            "hiertrain-edge export: error: opset 21 is not supported: "
            "expected 11..20 (default 17)",
        ),
        (
            ["infer", "{d}/missing.onnx", "--data", "{d}/board.npz"],
            "hiertrain-edge infer: error: ONNX model '{d}/missing.onnx' does not exist",
        ),
        (
            ["infer", "{d}/board.npz", "--data", "{d}/board.npz"],
            "hiertrain-edge infer: error: {d}/board.npz is not an ONNX model "
            "(its bytes do not parse as one)",
        ),
        (
            ["export", "--checkpoint", "{d}/model.pt", "--out", "{d}/m.onnx", "--slice", "2:9"],
            "hiertrain-edge export: error: slice 2:9 is empty or out of range for small_cnn "
            "with 6 units: expected A:B with 0 <= A < B <= 6",
        ),
        (
            ["export", "--checkpoint", "{d}/board.npz", "--out", "{d}/m.onnx"],
            "hiertrain-edge export: error: {d}/board.npz is not a hiertrain-edge model file "
            "(expected format hiertrain-edge/model/1)",
        ),
        (
            ["export", "--checkpoint", "{d}", "--out", "{d}/m.onnx"],
            "hiertrain-edge export: error: model file '{d}' is a folder; expected a file such "
            "as model.pt",
        ),
    ],
)
def test_cli_errors_are_one_line_with_status_2(board, capsys, argv, message):
    _, d = board
    assert main([a.format(d=d) for a in argv]) == 2
    assert capsys.readouterr().err == message.format(d=d) + "\n"


def test_infer_with_no_held_out_samples(board, capsys):
    _, d = board
    out = d / "m.onnx"
    assert main(["export", "--checkpoint", str(d / "model.pt"), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["infer", str(out), "--data", str(d / "board.npz"), "--test-fraction", "0"]) == 2
    assert capsys.readouterr().err == (
        "hiertrain-edge infer: error: test fraction 0.0 leaves no held-out samples in "
        f"{d / 'board.npz'}; use --all to run on every sample\n"
    )
