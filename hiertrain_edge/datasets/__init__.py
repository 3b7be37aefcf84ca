"""Reading a board's training data: MNIST IDX, `.npz`, image folders, the bundled MNIST."""

from hiertrain_edge.datasets.loaders import Dataset, bundled_mnist_path, load_dataset, split

__all__ = ["Dataset", "bundled_mnist_path", "load_dataset", "split"]
