"""Small reference networks of the pruning literature, as plain ``nn.Module`` s.

Every prunable layer is an ``nn.Linear`` or ``nn.Conv2d``, so :func:`sparseprune.convert` can mask
them. Each model takes ``input_shape=(C, H, W)`` and ``num_classes`` and sizes its classifier from
them (28x28x1 for the MNIST family, 32x32x3 for CIFAR). Architectures: docs/METHODS.md section 10.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from .. import _validate as V

Shape = Sequence[int]


def _check_shape(model: str, input_shape: Shape, num_classes: int,
                 min_hw: int = 1) -> tuple[int, int, int]:
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list, torch.Size)) else ()
    if len(shape) != 3:
        raise ValueError(f"{model}: input_shape must be (C, H, W) of positive ints, "
                         f"got {input_shape!r}")
    V.input_shape(shape)
    if shape[1] < min_hw or shape[2] < min_hw:
        raise ValueError(f"{model}: input height and width must be at least {min_hw}, "
                         f"got input_shape={shape}")
    V.positive_int(f"{model}: num_classes", num_classes)
    return shape


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers of the given widths with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class LeNet300(nn.Module):
    """LeNet-300-100: flatten -> 300 -> 100 -> classes, ReLU between."""

    def __init__(self, input_shape: Shape = (1, 28, 28), num_classes: int = 10):
        super().__init__()
        c, h, w = _check_shape("LeNet300", input_shape, num_classes)
        self.classifier = _mlp([c * h * w, 300, 100, num_classes])

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(x, 1))


class LeNet5(nn.Module):
    """LeNet-5 as in Caffe (20-50-500): conv 5x5 20, pool, conv 5x5 50, pool, fc 500, fc classes.

    Like Caffe's example and SNIP there is no ReLU after the convs unless ``conv_relu=True``
    (the L0 paper's variant); the hidden fc layer has one either way.
    """

    def __init__(self, input_shape: Shape = (1, 28, 28), num_classes: int = 10, *,
                 conv_relu: bool = False):
        super().__init__()
        c, h, w = _check_shape("LeNet5", input_shape, num_classes, min_hw=16)
        act = (lambda: nn.ReLU(inplace=True)) if conv_relu else nn.Identity
        self.features = nn.Sequential(nn.Conv2d(c, 20, 5), act(), nn.MaxPool2d(2),
                                      nn.Conv2d(20, 50, 5), act(), nn.MaxPool2d(2))
        # Two valid 5x5 convs, each followed by a floor 2x2 pool.
        h, w = (((h - 4) // 2) - 4) // 2, (((w - 4) // 2) - 4) // 2
        self.classifier = _mlp([50 * h * w, 500, num_classes])

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class _ConvNet(nn.Module):
    """Conv-2/4/6 of Frankle & Carbin: 3x3 'same' convs with bias and ReLU, max-pool 2 after every
    pair, then fc 256, fc 256, fc classes. No batch norm, no dropout (as in the ASLP reference)."""

    widths: tuple[int, ...] = ()

    def __init__(self, input_shape: Shape = (1, 28, 28), num_classes: int = 10):
        super().__init__()
        pools = len(self.widths) // 2
        c, h, w = _check_shape(type(self).__name__, input_shape, num_classes, min_hw=2 ** pools)
        layers: list[nn.Module] = []
        for i, width in enumerate(self.widths):
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU(inplace=True)]
            c = width
            if i % 2 == 1:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        h, w = h >> pools, w >> pools  # floor pooling, as nn.MaxPool2d does
        self.classifier = _mlp([c * h * w, 256, 256, num_classes])

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class Conv2(_ConvNet):
    """Conv-2: 64, 64, pool; fc 256, 256, classes."""

    widths = (64, 64)


class Conv4(_ConvNet):
    """Conv-4: 64, 64, pool, 128, 128, pool; fc 256, 256, classes."""

    widths = (64, 64, 128, 128)


class Conv6(_ConvNet):
    """Conv-6: 64, 64, pool, 128, 128, pool, 256, 256, pool; fc 256, 256, classes."""

    widths = (64, 64, 128, 128, 256, 256)


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    # No conv bias: the batch norm right after it has its own shift.
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out)]


class VGG11(nn.Module):
    """CIFAR-style VGG-11 with batch norm: 64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, then
    global average pooling (so 28x28 inputs work too) and one fc layer."""

    plan = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512)

    def __init__(self, input_shape: Shape = (3, 32, 32), num_classes: int = 10):
        super().__init__()
        c, _, _ = _check_shape("VGG11", input_shape, num_classes, min_hw=16)
        layers: list[nn.Module] = []
        for item in self.plan:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += _conv_bn(c, item) + [nn.ReLU(inplace=True)]
                c = item
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 conv-BN when the shape changes) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(c_in, c_out, stride), nn.ReLU(inplace=True),
                                  *_conv_bn(c_out, c_out))
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR-style ResNet-18: 3x3 stem, four stages of two BasicBlocks (64-128-256-512, stride 2
    from the second stage on), global average pooling, one fc layer."""

    def __init__(self, input_shape: Shape = (3, 32, 32), num_classes: int = 10):
        super().__init__()
        c, _, _ = _check_shape("ResNet18", input_shape, num_classes, min_hw=8)
        self.stem = nn.Sequential(*_conv_bn(c, 64), nn.ReLU(inplace=True))
        stages, c = [], 64
        for i, width in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            stages += [BasicBlock(c, width, stride), BasicBlock(width, width)]
            c = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


MODELS: dict[str, type[nn.Module]] = {
    "lenet300": LeNet300, "lenet5": LeNet5, "conv2": Conv2, "conv4": Conv4, "conv6": Conv6,
    "vgg11": VGG11, "resnet18": ResNet18,
}


def build_model(name: str, input_shape: Shape, num_classes: int) -> nn.Module:
    """A new model by name (see ``MODELS``); unknown names raise ValueError listing valid ones."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")
    return MODELS[name](input_shape, num_classes)


@torch.no_grad()
def kaiming_normal_(model: nn.Module) -> nn.Module:
    """Re-initialise like the ASLP reference: every Linear / Conv2d weight ~ N(0, 2 / fan_in)
    (Kaiming normal, fan_in, ReLU) and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)). In place."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                bound = 1.0 / math.sqrt(module.weight[0].numel())
                nn.init.uniform_(module.bias, -bound, bound)
    return model
