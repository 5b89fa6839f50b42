"""Building blocks shared by the CIFAR (Sec. 4.2) and ImageNet (Sec. 3.3) networks.

One implementation of the paper's three shortcut options (Sec. 3.3, "Residual Network";
Sec. 4.1, "Identity vs. Projection Shortcuts"):

* **A**: identity; where the shape changes, stride-2 subsampling plus zero-padded extra
  channels. Parameter-free.
* **B**: identity where the shape matches; a 1x1 projection (+ BN) where it changes.
* **C**: a 1x1 projection (+ BN) on every shortcut.

A block built with ``shortcut=None`` is the *plain* counterpart: the same layers with no
shortcut and no addition, so a plain net has exactly the parameters of its option-A
ResNet.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from resnet_repro.errors import UserError

SHORTCUT_OPTIONS = ("A", "B", "C")


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias (BN follows every conv)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


class PadShortcut(nn.Module):
    """Option A shortcut where the shape changes: ``x[:, :, ::stride, ::stride]`` with
    ``out_ch - in_ch`` zero channels appended (paper Sec. 3.3, option A). No parameters.

    Input ``(N, in_ch, H, W)``; output ``(N, out_ch, ceil(H/stride), ceil(W/stride))``.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        if out_ch < in_ch:
            raise ValueError(f"option A cannot reduce width ({in_ch} -> {out_ch})")
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_ch - self.in_ch
        if extra:
            x = F.pad(x, (0, 0, 0, 0, 0, extra))
        return x

    def extra_repr(self) -> str:
        return f"{self.in_ch}, {self.out_ch}, stride={self.stride}, zero-padded"


class Projection(nn.Sequential):
    """Projection shortcut ``W_s x`` (paper Eq. 2): 1x1 conv with the block's stride,
    then BN. Used by option B where the shape changes and by option C everywhere.

    Input ``(N, in_ch, H, W)``; output ``(N, out_ch, H/stride, W/stride)``.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__(conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))


def make_shortcut(option: str | None, in_ch: int, out_ch: int, stride: int) -> nn.Module | None:
    """The shortcut of one block for option ``"A"``, ``"B"`` or ``"C"``; ``None`` for a
    plain block (no shortcut, no addition).

    Raises:
        UserError: for an option other than A, B, C or None.
    """
    if option is None:
        return None
    if option not in SHORTCUT_OPTIONS:
        raise UserError(f"unknown shortcut option {option!r}; choose one of A, B, C")
    same = in_ch == out_ch and stride == 1
    if option == "C" or (option == "B" and not same):
        return Projection(in_ch, out_ch, stride)
    if same:
        return nn.Identity()
    return PadShortcut(in_ch, out_ch, stride)


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN (paper Fig. 2 / Fig. 5 left): ``relu(bn2(conv2(relu(bn1(
    conv1(x))))) + shortcut(x))``. With ``shortcut=None`` it is the plain block (no
    addition; the last ReLU still applies).

    Input ``(N, in_ch, H, W)``; output ``(N, out_ch, H/stride, W/stride)``.
    """

    expansion = 1

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, shortcut: str | None = "A") -> None:
        super().__init__()
        self.conv1 = conv3x3(in_ch, out_ch, stride)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = conv3x3(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = make_shortcut(shortcut, in_ch, out_ch, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.relu(out)


class Bottleneck(nn.Module):
    """Bottleneck block (paper Fig. 5 right): 1x1 reduce -> 3x3 -> 1x1 restore with 4x
    expansion, BN after each conv, ReLU after the addition.

    ``stride_on`` places the stride of a downsampling block: ``"1x1"`` on the first 1x1
    conv (the authors' released models) or ``"3x3"`` (torchvision's "v1.5").

    Input ``(N, in_ch, H, W)``; output ``(N, 4 * width, H/stride, W/stride)``.
    """

    expansion = 4

    def __init__(
        self,
        in_ch: int,
        width: int,
        stride: int = 1,
        shortcut: str | None = "B",
        stride_on: str = "1x1",
    ) -> None:
        super().__init__()
        if stride_on not in ("1x1", "3x3"):
            raise UserError(f"unknown stride placement {stride_on!r}; choose 1x1 or 3x3")
        out_ch = width * self.expansion
        s1, s3 = (stride, 1) if stride_on == "1x1" else (1, stride)
        self.conv1 = conv1x1(in_ch, width, s1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, s3)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, out_ch)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.shortcut = make_shortcut(shortcut, in_ch, out_ch, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.relu(out)


def he_init(model: nn.Module) -> None:
    """He (MSRA) initialisation (He et al., 2015, "Delving deep into rectifiers"; used by
    paper Sec. 3.4 and 4.2): conv weights ~ N(0, 2 / fan_out), BN weight 1 and bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
