"""Small models for tests: hand-weighted ones with answers known by hand, and random ones
that reproduce the architectural traps of real networks (in-place, reused and functional
ReLUs, ReLU6/Hardswish, heads without global pooling)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class OneConv(nn.Module):
    """1×1 conv with identity weights over 2 channels -> GAP -> linear ``W`` (no bias).

    With input channels ``P, Q`` the layer ``conv`` holds ``A = [P, Q]``, the logits are
    ``W @ mean(A)``, so Grad-CAM of class ``c`` is ``(W[c, 0] P + W[c, 1] Q) / (h w)`` and the
    input gradient is ``W[c, k] / (h w)`` on channel ``k`` (0 on the third channel).
    """

    def __init__(self, weight: list[list[float]]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0] = 1.0
            self.conv.weight[1, 1] = 1.0
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, len(weight), bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor(weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.conv(x)).flatten(1))


class PlainNet(nn.Module):
    """conv-ReLU-conv-ReLU with ReLU modules, GAP + linear head."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


class Block(nn.Module):
    """A residual block reusing one in-place ReLU three times (as torchvision's ResNet)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        return self.relu(out)


class InplaceResNet(nn.Module):
    """Stem + two residual blocks with in-place, reused ReLUs; GAP + linear head."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        self.layer1 = Block(8)
        self.layer2 = Block(8)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class FunctionalNet(nn.Module):
    """DenseNet's ending: ``features`` (ends in BatchNorm) then ``F.relu(inplace=True)``."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
            nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8),
        )
        self.classifier = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.features(x), inplace=True)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


class Relu6Net(nn.Module):
    """MobileNet-style: BatchNorm + ReLU6 and Hardswish; dropout before the linear head."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(inplace=True),
            nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.Hardswish(),
        )
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(8, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


class VggNet(nn.Module):
    """VGG-style: conv-ReLU-maxpool, flatten, two linear layers (no GAP head: no CAM)."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Linear(8 * 4 * 4, 16), nn.ReLU(inplace=True),
                                        nn.Dropout(0.5), nn.Linear(16, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class Mlp(nn.Module):
    """No spatial layer at all."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


ARCHITECTURES = {
    "plain": PlainNet,
    "inplace_resnet": InplaceResNet,
    "functional_relu": FunctionalNet,
    "relu6": Relu6Net,
    "vgg": VggNet,
}


def bundle(model: nn.Module, size: int = 16, classes: int | None = None):
    """A ModelBundle for a tiny model: float inputs of ``size``², identity normalisation."""
    import xai_widgets as xw

    preprocessing = xw.Preprocessing(resize=None, crop=(size, size), mean=(0.0, 0.0, 0.0),
                                     std=(1.0, 1.0, 1.0))
    names = None if classes is None else [f"class{i}" for i in range(classes)]
    return xw.ModelBundle(model, preprocessing, names, name=type(model).__name__)


# ---------------------------------------------------------------- added for the method tests


class OneConvRelu(OneConv):
    """:class:`OneConv` with a ReLU between the conv and the pooling.

    With input channels ``P, Q`` the logits are ``W @ mean(relu([P, Q]))``. For class ``c``
    on channel ``k`` (0 on the third channel), by hand:

    * gradient: ``W[c, k] · 1[x_k > 0] / (h w)``
    * guided backprop: ``relu(W[c, k]) · 1[x_k > 0] / (h w)``
    * DeconvNet: ``relu(W[c, k]) / (h w)`` everywhere (the forward sign is ignored)
    """

    def __init__(self, weight: list[list[float]]) -> None:
        super().__init__(weight)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


class ClassMapNet(nn.Module):
    """SqueezeNet-style head: 1×1 identity conv (3 -> 3 classes), ReLU, GAP; no linear layer.

    The logit of class ``c`` is ``mean(relu(x_c))``, so CAM of class ``c`` is ``relu(x_c)``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3)[:, :, None, None])
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.relu(self.conv(x))).flatten(1)


class LinearNet(nn.Module):
    """A linear model with one spatial layer: 1×1 conv ``M`` (3 -> 3, no bias), flatten,
    linear ``W`` (+ ``b``). Its input gradient for class ``c`` is
    ``Σ_k W[c, k, :, :] M[k, i]`` on input channel ``i``: known from the weights alone."""

    def __init__(self, classes: int = 5, size: int = 8) -> None:
        super().__init__()
        self.mix = nn.Conv2d(3, 3, 1, bias=False)
        self.fc = nn.Linear(3 * size * size, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.mix(x).flatten(1))


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm of ``model`` random running statistics and affine parameters
    (fresh ones are the identity in eval mode, which hides mistakes); returns ``model``."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                shape = module.num_features
                module.running_mean.copy_(0.5 * torch.randn(shape, generator=generator))
                module.running_var.copy_(0.5 + 1.5 * torch.rand(shape, generator=generator))
                module.weight.copy_(0.5 + 1.5 * torch.rand(shape, generator=generator))
                module.bias.copy_(0.3 * torch.randn(shape, generator=generator))
    return model
