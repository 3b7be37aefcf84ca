"""Exporting a model file: metadata, slices of it, opsets, and a user nn.Sequential model."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import onnx
import pytest
import torch

from hiertrain_edge.export import export_checkpoint

CLASS_NAMES = [str(i) for i in range(10)]


def props(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_checkpoint_export_records_input_normalisation_classes_and_job(tmp_path, make_checkpoint):
    model, _ = make_checkpoint(tmp_path / "model.pt")
    result = export_checkpoint(tmp_path / "model.pt", tmp_path / "m.onnx")

    assert result.units == (0, 6) and result.opset == 17
    assert result.input_shape == (1, 28, 28) and result.output_shape == (10,)
    found = props(tmp_path / "m.onnx")
    job = json.loads(found.pop("hiertrain.job"))
    assert found == {
        "hiertrain.format": "hiertrain-edge/onnx/1",
        "hiertrain.model": "small_cnn",
        "hiertrain.units": "[0, 6]",
        "hiertrain.num_units": "6",
        "hiertrain.input_shape": "[1, 28, 28]",
        "hiertrain.input_dtype": "float32",
        "hiertrain.output_shape": "[10]",
        "hiertrain.job_id": "a1b2c3d4",
        "hiertrain.steps": "40",
        "hiertrain.num_classes": "10",
        "hiertrain.mean": "0.1307",
        "hiertrain.std": "0.3081",
        "hiertrain.class_names": json.dumps(CLASS_NAMES),
    }
    assert (job["model"], job["seed"], job["num_classes"], job["steps"]) == (
        "small_cnn",
        3,
        10,
        40,
    )

    proto = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 1, 28, 28]

    # The trained weights went in, not the initial ones.
    import onnxruntime as ort

    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=0, atol=1e-5)


def test_slice_records_only_the_ends_it_has(tmp_path, make_checkpoint):
    make_checkpoint(tmp_path / "model.pt")
    middle = export_checkpoint(tmp_path / "model.pt", tmp_path / "mid.onnx", "2:4")
    assert (middle.input_shape, middle.output_shape) == ((16, 14, 14), (32, 7, 7))
    found = props(tmp_path / "mid.onnx")
    assert found["hiertrain.units"] == "[2, 4]"
    assert found["hiertrain.input_shape"] == "[16, 14, 14]"
    for absent in ("hiertrain.mean", "hiertrain.std", "hiertrain.class_names"):
        assert absent not in found

    head = props(export_checkpoint(tmp_path / "model.pt", tmp_path / "h.onnx", ":2").path)
    assert head["hiertrain.mean"] == "0.1307" and "hiertrain.class_names" not in head
    tail = props(export_checkpoint(tmp_path / "model.pt", tmp_path / "t.onnx", "4:").path)
    assert "hiertrain.mean" not in tail and tail["hiertrain.units"] == "[4, 6]"


@pytest.mark.parametrize("opset", [11, 20])
def test_oldest_and_newest_supported_opsets_export(tmp_path, opset, make_checkpoint):
    model, _ = make_checkpoint(tmp_path / "model.pt", "mobilenetv2")
    result = export_checkpoint(tmp_path / "model.pt", tmp_path / "m.onnx", "0:3", opset)
    proto = onnx.load(str(result.path))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [opset]


USER_MODULE = textwrap.dedent(
    """
    from torch import nn

    def tiny_rgb():
        return nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
            nn.AvgPool2d(2),
            nn.Sequential(nn.Flatten(), nn.Linear(8 * 6 * 6, 32), nn.Tanh()),
            nn.Linear(32, 5),
        )
    """
)


def test_user_sequential_model_exports_whole_and_sliced(
    tmp_path, monkeypatch, ort_session, make_checkpoint
):
    (tmp_path / "export_user_models.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    ref = "export_user_models:tiny_rgb"
    model, _ = make_checkpoint(tmp_path / "model.pt", ref, input_shape=(3, 12, 12), num_classes=5)
    x = torch.randn(8, 3, 12, 12, generator=torch.Generator().manual_seed(1))

    whole = export_checkpoint(tmp_path / "model.pt", tmp_path / "u.onnx")
    assert (whole.model, whole.units, whole.output_shape) == (ref, (0, 4), (5,))
    tail = export_checkpoint(tmp_path / "model.pt", tmp_path / "u_tail.onnx", "2:4")
    assert tail.input_shape == (8, 6, 6)
    with torch.no_grad():
        for b in (1, 3, 8):
            got = ort_session(whole.path).run(None, {"input": x[:b].numpy()})[0]
            np.testing.assert_allclose(got, model(x[:b]).numpy(), rtol=0, atol=1e-5)
            h = model[:2](x[:b])
            got = ort_session(tail.path).run(None, {"input": h.numpy()})[0]
            np.testing.assert_allclose(got, model[2:](h).numpy(), rtol=0, atol=1e-5)
