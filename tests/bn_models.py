"""A small user model with batch normalisation, importable by tier processes in tests."""

from torch import nn


def bn_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()),
        nn.MaxPool2d(4),
        nn.Sequential(nn.Flatten(), nn.Linear(4 * 7 * 7, 16), nn.BatchNorm1d(16), nn.ReLU()),
        nn.Linear(16, 10),
    )
