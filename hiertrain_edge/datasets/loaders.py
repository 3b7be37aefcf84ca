"""Loading labelled samples from disk into float tensors, and the train/test split."""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from hiertrain_edge.errors import DataError

# Mean and standard deviation of MNIST pixels after scaling to [0, 1]; the values every
# MNIST example uses, measured over the 60k training images.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm"}


@dataclass
class Dataset:
    """Samples as float32 (N, C, H, W), labels as int64 (N,), and how inputs were scaled."""

    x: torch.Tensor
    y: torch.Tensor
    source: str
    mean: float = 0.0
    std: float = 1.0
    class_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def subset(self, start: int, stop: int) -> Dataset:
        return Dataset(
            self.x[start:stop],
            self.y[start:stop],
            self.source,
            self.mean,
            self.std,
            self.class_names,
        )


def bundled_mnist_path() -> Path:
    """The MNIST test set that ships inside the package (10,000 digits)."""
    return Path(str(resources.files("hiertrain_edge.datasets") / "mnist"))


def _open_maybe_gz(path: Path) -> bytes:
    raw = path.read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def _read_idx(path: Path, magic: int) -> np.ndarray:
    data = _open_maybe_gz(path)
    if len(data) < 8:
        raise DataError(f"{path} is too short to be an IDX file ({len(data)} bytes)")
    (found,) = struct.unpack(">i", data[:4])
    if found != magic:
        raise DataError(f"{path} has IDX magic {found}, expected {magic}")
    ndim = magic & 0xFF
    dims = struct.unpack(f">{ndim}i", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    expected = int(np.prod(dims))
    if body.size != expected:
        raise DataError(f"{path} declares {dims} ({expected} values) but holds {body.size}")
    return body.reshape(dims)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _load_mnist_dir(folder: Path) -> Dataset:
    for prefix in ("t10k", "train"):
        images = _find(folder, f"{prefix}-images-idx3-ubyte")
        labels = _find(folder, f"{prefix}-labels-idx1-ubyte")
        if images and labels:
            break
    else:
        raise DataError(
            f"{folder} holds no MNIST IDX pair (expected t10k- or train-images-idx3-ubyte[.gz] "
            "with the matching labels-idx1-ubyte[.gz])"
        )
    x = _read_idx(images, 2051)
    y = _read_idx(labels, 2049)
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{images} has {x.shape[0]} images but {labels} has {y.shape[0]} labels")
    xt = (torch.from_numpy(x.astype(np.float32) / 255.0) - MNIST_MEAN) / MNIST_STD
    return Dataset(
        xt.unsqueeze(1),
        torch.from_numpy(y.astype(np.int64)),
        str(folder),
        MNIST_MEAN,
        MNIST_STD,
        [str(i) for i in range(10)],
    )


def _load_npz(path: Path) -> Dataset:
    try:
        arrays = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path} as .npz: {exc}") from exc
    if "x" not in arrays or "y" not in arrays:
        raise DataError(f"{path} must hold arrays named 'x' and 'y', found {sorted(arrays.files)}")
    x, y = arrays["x"], arrays["y"]
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{path}: x has {x.shape[0]} samples but y has {y.shape[0]}")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: y must be 1-d integer class labels, got {y.dtype} {y.shape}")
    if x.ndim == 3:  # (N, H, W) grayscale
        x = x[:, None]
    if x.ndim != 4:
        raise DataError(f"{path}: x must be (N, C, H, W) or (N, H, W), got shape {x.shape}")
    if x.dtype == np.uint8:
        xt = torch.from_numpy(x.astype(np.float32) / 255.0)
    else:
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return Dataset(xt, torch.from_numpy(y.astype(np.int64)), str(path))


def _load_image_folder(folder: Path) -> Dataset:
    from PIL import Image  # only image folders need Pillow

    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{folder} has no class sub-folders (expected one folder per class)")
    xs: list[np.ndarray] = []
    ys: list[int] = []
    for label, name in enumerate(classes):
        for img_path in sorted((folder / name).iterdir()):
            if img_path.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            with Image.open(img_path) as img:
                arr = np.asarray(img.convert("L" if img.mode in ("L", "1", "I;16") else "RGB"))
            arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
            if xs and arr.shape != xs[0].shape:
                raise DataError(
                    f"{img_path} has shape {arr.shape}, expected {xs[0].shape} as the first"
                )
            xs.append(arr)
            ys.append(label)
    if not xs:
        raise DataError(
            f"{folder} has class folders but no images ({', '.join(sorted(_IMAGE_SUFFIXES))})"
        )
    x = torch.from_numpy(np.stack(xs).astype(np.float32) / 255.0)
    return Dataset(x, torch.tensor(ys, dtype=torch.int64), str(folder), class_names=classes)


def load_dataset(path: str | Path | None) -> Dataset:
    """Load a data set by path; None means the bundled MNIST test set.

    Accepted: a folder with MNIST IDX files (gzipped or not), a `.npz` with arrays `x`
    and `y`, or a folder with one sub-folder of images per class.
    """
    if path is None:
        return _load_mnist_dir(bundled_mnist_path())
    p = Path(path)
    if not p.exists():
        raise DataError(f"data path {str(p)!r} does not exist")
    if p.is_file():
        if p.suffix == ".npz":
            return _load_npz(p)
        if "idx3-ubyte" in p.name:
            return _load_mnist_dir(p.parent)
        raise DataError(f"unsupported data file {p.name!r}: expected .npz or an MNIST IDX file")
    if any("idx3-ubyte" in c.name for c in p.iterdir()):
        return _load_mnist_dir(p)
    return _load_image_folder(p)


def split(data: Dataset, test_fraction: float) -> tuple[Dataset, Dataset]:
    """Train on the first samples, test on the last `test_fraction` of them."""
    if not 0.0 <= test_fraction < 1.0:
        raise DataError(f"test fraction must be in [0, 1), got {test_fraction}")
    n_test = int(round(len(data) * test_fraction))
    n_train = len(data) - n_test
    if n_train <= 0:
        raise DataError(
            f"no training samples left: {len(data)} samples, test fraction {test_fraction}"
        )
    return data.subset(0, n_train), data.subset(n_train, len(data))
