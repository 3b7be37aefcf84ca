"""One clear error per mistake: opset, slice, missing or foreign files, data that does not fit."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from hiertrain_edge.datasets import Dataset
from hiertrain_edge.errors import ConfigError, DataError, ModelError
from hiertrain_edge.export import OnnxModel, export_checkpoint, export_units, run_inference
from hiertrain_edge.models import build_model, get_model


@pytest.fixture(scope="module")
def small_cnn_onnx(tmp_path_factory):
    spec = get_model("small_cnn")
    path = tmp_path_factory.mktemp("onnx") / "small_cnn.onnx"
    export_units(build_model(spec, 0), spec.input_shape, path, model_name="small_cnn")
    return path


def data_of_shape(*shape: int) -> Dataset:
    gen = torch.Generator().manual_seed(0)
    return Dataset(torch.rand(shape, generator=gen), torch.zeros(shape[0], dtype=torch.int64), "d")


@pytest.mark.parametrize("opset", [10, 21])
def test_export_rejects_unsupported_opset(tmp_path, opset):
    spec = get_model("small_cnn")
    with pytest.raises(ConfigError) as err:
        export_units(build_model(spec, 0), spec.input_shape, tmp_path / "m.onnx", opset=opset)
    assert str(err.value) == f"opset {opset} is not supported: expected 11..20 (default 17)"
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("4:2", "slice 4:2 is empty or out of range for small_cnn with 6 units: "
                "expected A:B with 0 <= A < B <= 6"),
        ("0:7", "slice 0:7 is empty or out of range for small_cnn with 6 units: "
                "expected A:B with 0 <= A < B <= 6"),
        ("3", "slice must be A:B with unit indices (e.g. 0:6), got '3'"),
        ("a:b", "slice must be A:B with unit indices (e.g. 0:6), got 'a:b'"),
    ],
)  # fmt: skip
def test_export_rejects_bad_slice(tmp_path, text, message):
    from hiertrain_edge.runtime.checkpoint import save_model

    spec = get_model("small_cnn")
    save_model(tmp_path / "m.pt", {"model": "small_cnn"}, build_model(spec, 0).state_dict(), {})
    with pytest.raises(ModelError) as err:
        export_checkpoint(tmp_path / "m.pt", tmp_path / "m.onnx", text)
    assert str(err.value) == message


def test_export_of_missing_checkpoint(tmp_path):
    with pytest.raises(ConfigError) as err:
        export_checkpoint(tmp_path / "nope.pt", tmp_path / "m.onnx")
    assert str(err.value) == f"model file {str(tmp_path / 'nope.pt')!r} does not exist"


@pytest.mark.parametrize(
    "content",
    [
        b'model = "small_cnn"\nepochs = 1\n',  # a job file given by mistake
        b"\x80\x04\x95\x00",  # a cut-off pickle
    ],
)
def test_export_of_a_file_that_is_not_a_model_file(tmp_path, recwarn, content):
    path = tmp_path / "job.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        export_checkpoint(path, tmp_path / "m.onnx")
    assert str(err.value) == (
        f"{path} is not a hiertrain-edge model file (expected format hiertrain-edge/model/1)"
    )
    assert [str(w.message) for w in recwarn] == []  # nothing more on the terminal


def test_export_of_a_pickle_with_objects_does_not_advise_unsafe_loading(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"format": "hiertrain-edge/model/1", "job": object()}, path)
    with pytest.raises(ConfigError) as err:
        export_checkpoint(path, tmp_path / "m.onnx")
    assert str(err.value) == (
        f"{path} is not a hiertrain-edge model file (expected format hiertrain-edge/model/1)"
    )


def test_infer_on_missing_file(tmp_path):
    with pytest.raises(ConfigError) as err:
        OnnxModel(tmp_path / "nope.onnx")
    assert str(err.value) == f"ONNX model {str(tmp_path / 'nope.onnx')!r} does not exist"


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"hello, not a model\n", "its bytes do not parse as one"), (b"", "it holds no graph")],
)
def test_infer_on_a_file_that_is_not_onnx(tmp_path, content, reason):
    path = tmp_path / "x.onnx"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        OnnxModel(path)
    assert str(err.value) == f"{path} is not an ONNX model ({reason})"


def test_infer_on_an_opset_onnxruntime_does_not_know(tmp_path):
    import onnxruntime

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3])
    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["output"])], "g", [x], [y])
    path = tmp_path / "future.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 99)]), path)
    with pytest.raises(ConfigError) as err:
        OnnxModel(path)
    # onnxruntime 1.32 names its newest opset (28); older builds say less, so match the start.
    assert str(err.value).startswith(
        f"{path} uses opset 99, which onnxruntime {onnxruntime.__version__} does not support"
    )
    assert str(err.value).endswith("; export it again with --opset 17")


def test_infer_rejects_data_of_another_shape(small_cnn_onnx):
    model = OnnxModel(small_cnn_onnx)
    with pytest.raises(DataError) as err:
        run_inference(model, data_of_shape(4, 3, 32, 32))
    assert str(err.value) == (
        f"data samples have shape (3, 32, 32) but {small_cnn_onnx} takes (1, 28, 28) per sample"
    )


def test_infer_on_a_slice_explains_it_takes_activations(tmp_path):
    spec = get_model("small_cnn")
    path = tmp_path / "tail.onnx"
    export_units(build_model(spec, 0), spec.input_shape, path, units=(2, 6))
    with pytest.raises(DataError) as err:
        run_inference(OnnxModel(path), data_of_shape(4, 1, 28, 28))
    assert str(err.value) == (
        f"data samples have shape (1, 28, 28) but {path} takes (16, 14, 14) per sample "
        "(it is a slice starting at unit 2: its input is unit 1's output, not data)"
    )


def test_infer_rejects_bad_batch_size_and_empty_data(small_cnn_onnx):
    model = OnnxModel(small_cnn_onnx)
    with pytest.raises(ConfigError, match=r"^batch size must be >= 1, got 0$"):
        run_inference(model, data_of_shape(4, 1, 28, 28), batch_size=0)
    with pytest.raises(DataError, match=r"^no samples to run inference on in d$"):
        run_inference(model, data_of_shape(0, 1, 28, 28))


def test_infer_warns_when_data_is_normalised_differently(tmp_path, caplog):
    from hiertrain_edge.export.onnx_export import export_units as export

    spec = get_model("small_cnn")
    path = tmp_path / "m.onnx"
    export(build_model(spec, 0), spec.input_shape, path, metadata={"mean": 0.1307, "std": 0.3081})
    data = data_of_shape(3, 1, 28, 28)  # mean 0, std 1: raw [0, 1] pixels
    with caplog.at_level("WARNING", logger="hiertrain_edge.export.inference"):
        result = run_inference(OnnxModel(path), data)
    assert result.samples == 3
    warned = [r for r in caplog.records if r.name == "hiertrain_edge.export.inference"]
    assert [r.getMessage() for r in warned] == [
        f"{path} was trained on inputs normalised with mean 0.1307, std 0.3081 but d is loaded "
        "with mean 0, std 1; predictions may be off"
    ]
    assert np.array_equal(result.predictions.shape, (3,))
