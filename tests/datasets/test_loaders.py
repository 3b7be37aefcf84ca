"""Reading MNIST IDX, .npz and image folders; the held-out split."""

from __future__ import annotations

import gzip
import shutil
import struct

import numpy as np
import pytest
import torch
from tierprocs import SHARED_MNIST

from hiertrain_edge.datasets import bundled_mnist_path, load_dataset, split
from hiertrain_edge.errors import DataError

LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # shared/data README


def test_bundled_mnist_is_the_real_test_set():
    data = load_dataset(None)
    assert data.x.shape == (10000, 1, 28, 28) and data.x.dtype == torch.float32
    assert torch.bincount(data.y).tolist() == LABEL_COUNTS
    assert data.y[:5].tolist() == [7, 2, 1, 0, 4]


def test_shared_mnist_equals_bundled_copy():
    a, b = load_dataset(SHARED_MNIST), load_dataset(None)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)


def test_split_default_gives_8000_and_2000():
    train, test = split(load_dataset(None), 0.2)
    assert (len(train), len(test)) == (8000, 2000)
    assert torch.bincount(test.y, minlength=10).sum() == 2000


def test_mnist_uncompressed_idx(tmp_path):
    for f in bundled_mnist_path().glob("*.gz"):
        (tmp_path / f.name[:-3]).write_bytes(gzip.decompress(f.read_bytes()))
    data = load_dataset(tmp_path)
    assert torch.equal(data.y, load_dataset(None).y)


def test_mnist_truncated_file_is_refused(tmp_path):
    shutil.copy(bundled_mnist_path() / "t10k-labels-idx1-ubyte.gz", tmp_path)
    raw = struct.pack(">iiii", 2051, 10, 28, 28) + bytes(100)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(raw)
    with pytest.raises(DataError, match=r"declares \(10, 28, 28\) \(7840 values\) but holds 100"):
        load_dataset(tmp_path)


def test_npz_grayscale_and_rgb(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "g.npz", x=rng.integers(0, 255, (5, 28, 28), dtype=np.uint8), y=np.arange(5)
    )
    g = load_dataset(tmp_path / "g.npz")
    assert g.x.shape == (5, 1, 28, 28) and float(g.x.max()) <= 1.0
    np.savez(
        tmp_path / "c.npz",
        x=rng.standard_normal((4, 3, 32, 32)).astype(np.float32),
        y=np.array([0, 1, 2, 3]),
    )
    assert load_dataset(tmp_path / "c.npz").sample_shape == (3, 32, 32)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((2, 4, 4))}, r"must hold arrays named 'x' and 'y', found \['x'\]"),
        ({"x": np.zeros((2, 4, 4)), "y": np.zeros(3, dtype=int)}, "x has 2 samples but y has 3"),
        ({"x": np.zeros((2, 4)), "y": np.zeros(2, dtype=int)}, r"got shape \(2, 4\)"),
        ({"x": np.zeros((2, 4, 4)), "y": np.zeros(2)}, "y must be 1-d integer class labels"),
    ],
)
def test_npz_bad_arrays(tmp_path, arrays, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load_dataset(tmp_path / "d.npz")


def test_image_folder(tmp_path):
    from PIL import Image

    for label, colour in (("cat", 30), ("dog", 200)):
        (tmp_path / label).mkdir()
        for i in range(3):
            Image.new("RGB", (8, 6), (colour, i, 0)).save(tmp_path / label / f"{i}.png")
    data = load_dataset(tmp_path)
    assert data.class_names == ["cat", "dog"]
    assert data.x.shape == (6, 3, 6, 8)
    assert data.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.x[0, 0, 0, 0] == pytest.approx(30 / 255)


def test_missing_and_unsupported_paths(tmp_path):
    with pytest.raises(DataError, match="data path '/nonexistent/x' does not exist"):
        load_dataset("/nonexistent/x")
    (tmp_path / "a.csv").write_text("1,2")
    with pytest.raises(DataError, match="unsupported data file 'a.csv': expected .npz"):
        load_dataset(tmp_path / "a.csv")
    with pytest.raises(DataError, match="has no class sub-folders"):
        load_dataset(tmp_path)
    with pytest.raises(DataError, match=r"test fraction must be in \[0, 1\), got 1.5"):
        split(load_dataset(None), 1.5)
