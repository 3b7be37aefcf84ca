"""Every zoo model and slices of it: onnxruntime gives PyTorch's eval outputs at any batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hiertrain_edge.export import export_units

TOLERANCE = 1e-5  # absolute, as the issue asks
BATCH_SIZES = (1, 3, 8)

# (A, B) unit ranges per model: the whole model and three slices that chain into it.
CUTS = {
    "small_cnn": [(0, 6), (0, 2), (2, 4), (4, 6)],
    "vgg11": [(0, 16), (0, 5), (5, 10), (10, 16)],
    "resnet18": [(0, 10), (0, 3), (3, 6), (6, 10)],
    "mobilenetv2": [(0, 20), (0, 7), (7, 14), (14, 20)],
}


@pytest.mark.parametrize("name", sorted(CUTS))
def test_zoo_export_matches_torch_at_every_batch_size(name, tmp_path, seeded_model, ort_session):
    model, input_shape = seeded_model(name)
    assert len(model) == CUTS[name][0][1]
    gen = torch.Generator().manual_seed(7)
    inputs = {b: torch.randn((b, *input_shape), generator=gen) for b in BATCH_SIZES}

    sessions = {}
    for start, stop in CUTS[name]:
        path = tmp_path / f"{name}_{start}_{stop}.onnx"
        result = export_units(model, input_shape, path, units=(start, stop), model_name=name)
        assert result.units == (start, stop)
        sessions[start, stop] = ort_session(path)
        # One export, every batch size: the batch axis is symbolic.
        assert sessions[start, stop].get_inputs()[0].shape[0] == "batch"

    with torch.no_grad():
        for b, x in inputs.items():
            # PyTorch's activations after every unit: acts[i] is the input of unit i.
            acts = [x]
            for unit in model:
                acts.append(unit(acts[-1]))

            # Each slice on the activations PyTorch hands it.
            for (start, stop), session in sessions.items():
                expected = acts[stop].numpy()
                got = session.run(None, {"input": acts[start].numpy()})[0]
                assert got.shape == expected.shape == (b, *expected.shape[1:])
                err = float(np.abs(got - expected).max())
                assert err <= TOLERANCE, f"{name} {start}:{stop} batch {b}: max error {err}"

            # The three slices chained in onnxruntime give the whole model's output.
            h = x.numpy()
            for cut in CUTS[name][1:]:
                h = sessions[cut].run(None, {"input": h})[0]
            err = float(np.abs(h - acts[-1].numpy()).max())
            assert err <= TOLERANCE, f"{name} chained slices, batch {b}: max error {err}"


def test_export_restores_training_mode(tmp_path, seeded_model):
    model, input_shape = seeded_model("resnet18")
    model.train()
    export_units(model, input_shape, tmp_path / "r.onnx", units=(0, 2), model_name="resnet18")
    assert model.training and all(m.training for m in model.modules())
