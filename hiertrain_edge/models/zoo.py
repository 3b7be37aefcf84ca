"""Built-in models as ordered unit factories, and user models as `package.module:function`."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from hiertrain_edge.errors import ModelError

UnitFactory = Callable[[], nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """A model as N unit factories, so a tier can build only the units it runs.

    Building unit i always consumes the same random numbers whether or not the
    other units are built, because every factory seeds from (seed, i); see
    `build_units`.
    """

    name: str
    factories: tuple[UnitFactory, ...]
    input_shape: tuple[int, ...]  # per sample, e.g. (1, 28, 28)
    num_classes: int

    @property
    def num_units(self) -> int:
        return len(self.factories)


# --- small CNN for 28x28 grayscale (MNIST-like) -------------------------------------


def _small_cnn(num_classes: int = 10) -> ModelSpec:
    factories: list[UnitFactory] = [
        lambda: nn.Sequential(nn.Conv2d(1, 16, 5, padding=2), nn.ReLU()),
        lambda: nn.MaxPool2d(2),
        lambda: nn.Sequential(nn.Conv2d(16, 32, 5, padding=2), nn.ReLU()),
        lambda: nn.MaxPool2d(2),
        lambda: nn.Sequential(nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU()),
        lambda: nn.Linear(128, num_classes),
    ]
    return ModelSpec("small_cnn", tuple(factories), (1, 28, 28), num_classes)


# --- VGG-11 for 32x32 RGB (no batch norm, as in the original configuration A) --------

_VGG11_CFG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


def _vgg11(num_classes: int = 10) -> ModelSpec:
    factories: list[UnitFactory] = []
    channels = 3
    for item in _VGG11_CFG:
        if item == "M":
            factories.append(lambda: nn.MaxPool2d(2))
        else:
            factories.append(
                lambda c_in=channels, c_out=item: nn.Sequential(
                    nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()
                )
            )
            channels = item
    factories += [
        lambda: nn.Sequential(nn.Flatten(), nn.Linear(512, 512), nn.ReLU()),
        lambda: nn.Sequential(nn.Linear(512, 512), nn.ReLU()),
        lambda: nn.Linear(512, num_classes),
    ]
    return ModelSpec("vgg11", tuple(factories), (3, 32, 32), num_classes)


# --- ResNet-18 for 32x32 RGB, one residual block per unit ----------------------------


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity or 1x1 projection shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x):  # noqa: D102
        out = self.bn1(self.conv1(x)).relu()
        out = self.bn2(self.conv2(out))
        return (out + self.shortcut(x)).relu()


def _resnet18(num_classes: int = 10) -> ModelSpec:
    factories: list[UnitFactory] = [
        lambda: nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
    ]
    c_in = 64
    for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block_stride in (stride, 1):
            factories.append(lambda a=c_in, b=c_out, s=block_stride: BasicBlock(a, b, s))
            c_in = c_out
    factories.append(
        lambda: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes))
    )
    return ModelSpec("resnet18", tuple(factories), (3, 32, 32), num_classes)


# --- MobileNetV2 for 32x32 RGB, one inverted-residual block per unit ------------------


class InvertedResidual(nn.Module):
    """Expand 1x1, depthwise 3x3, project 1x1; residual when shapes allow."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):  # noqa: D102
        out = self.block(x)
        return x + out if self.residual else out


# (expansion, channels, repeats, first stride); strides of the first two stages are 1
# for 32x32 inputs, as in the common CIFAR adaptation of Sandler et al. 2018, Table 2.
_MOBILENETV2_CFG = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _mobilenetv2(num_classes: int = 10) -> ModelSpec:
    factories: list[UnitFactory] = [
        lambda: nn.Sequential(
            nn.Conv2d(3, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6()
        )
    ]
    c_in = 32
    for expand, c_out, repeats, stride in _MOBILENETV2_CFG:
        for r in range(repeats):
            s = stride if r == 0 else 1
            factories.append(lambda a=c_in, b=c_out, s=s, e=expand: InvertedResidual(a, b, s, e))
            c_in = c_out
    factories.append(
        lambda: nn.Sequential(
            nn.Conv2d(320, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6()
        )
    )
    factories.append(
        lambda: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, num_classes))
    )
    return ModelSpec("mobilenetv2", tuple(factories), (3, 32, 32), num_classes)


ZOO: dict[str, Callable[[int], ModelSpec]] = {
    "small_cnn": _small_cnn,
    "vgg11": _vgg11,
    "resnet18": _resnet18,
    "mobilenetv2": _mobilenetv2,
}


def _user_model(ref: str, input_shape: tuple[int, ...] | None, num_classes: int) -> ModelSpec:
    module_name, _, func_name = ref.partition(":")
    if not module_name or not func_name:
        raise ModelError(f"user model must be given as package.module:function, got {ref!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(f"cannot import user model module {module_name!r}: {exc}") from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ModelError(f"{module_name!r} has no function {func_name!r} (from {ref!r})")
    if input_shape is None:
        raise ModelError(f"user model {ref!r} needs an input shape (input_shape in the job file)")

    # A user Sequential is built whole once, then each unit factory hands out a fresh
    # copy of its child, so the units are re-creatable like the zoo's.
    def build_child(i: int) -> nn.Module:
        seq = func()
        if not isinstance(seq, nn.Sequential):
            raise ModelError(f"{ref} must return torch.nn.Sequential, got {type(seq).__name__}")
        return seq[i]

    probe = func()
    if not isinstance(probe, nn.Sequential) or len(probe) == 0:
        raise ModelError(f"{ref} must return a non-empty torch.nn.Sequential")
    factories = tuple((lambda i=i: build_child(i)) for i in range(len(probe)))
    return ModelSpec(ref, factories, tuple(input_shape), num_classes)


def get_model(
    name: str, num_classes: int = 10, input_shape: tuple[int, ...] | None = None
) -> ModelSpec:
    """Return the spec of a zoo model by name, or of a user model `package.module:function`."""
    if ":" in name:
        return _user_model(name, input_shape, num_classes)
    if name not in ZOO:
        raise ModelError(
            f"unknown model {name!r}; expected one of {', '.join(sorted(ZOO))} "
            "or package.module:function"
        )
    spec = ZOO[name](num_classes)
    if input_shape is not None and tuple(input_shape) != spec.input_shape:
        raise ModelError(
            f"model {name} takes input of shape {spec.input_shape}, got {tuple(input_shape)}"
        )
    return spec
