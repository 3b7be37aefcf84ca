"""A user model for the bandwidth-adaptation test: heavy convolutions on large inputs, few
parameters, so the best schedule depends on the device<->edge bandwidth in the range a
tc-shaped link emulates well (a few to a hundred Mbit/s)."""

from torch import nn

INPUT_SHAPE = (3, 96, 96)  # 108 KiB per sample as float32: messages far above tbf's burst


def wide_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64 * 16, 10)),
    )
