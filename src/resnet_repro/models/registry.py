"""Architecture names -> builders and metadata.

Names are the paper's, written without the dash on the command line: ``plain20``,
``resnet56``, ``resnet1202`` (CIFAR, any depth 6n+2) and ``plain18``, ``resnet34``,
``resnet152`` (ImageNet, the depths of Table 1). Depths 18, 34, 50, 101, 152 are the
ImageNet nets; every other 6n+2 depth is a CIFAR net. 20, 32, 44, 56, 110 and 1202 are
the depths the paper trains on CIFAR-10 (Table 6).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from resnet_repro.errors import UserError
from resnet_repro.models.blocks import SHORTCUT_OPTIONS
from resnet_repro.models.cifar import CifarResNet
from resnet_repro.models.imagenet import ImageNetResNet, imagenet_depths

CIFAR_PAPER_DEPTHS = (20, 32, 44, 56, 110, 1202)
_NAME = re.compile(r"^(plain|resnet)-?(\d+)$")


@dataclass(frozen=True)
class ArchSpec:
    """What a name means.

    Attributes:
        name: canonical name, e.g. ``"resnet56"``.
        family: ``"cifar"`` (32x32 input, Sec. 4.2) or ``"imagenet"`` (224x224, Table 1).
        depth: number of weighted layers (6n+2 for CIFAR).
        residual: False for a plain net.
        block: ``"basic"`` or ``"bottleneck"``.
        default_shortcut: the paper's option for this net (A for CIFAR and ImageNet 18/34,
            B for 50/101/152); None for plain nets.
        input_size: image side in pixels the paper uses.
        num_classes: 10 (CIFAR-10) or 1000 (ImageNet).
    """

    name: str
    family: str
    depth: int
    residual: bool
    block: str
    default_shortcut: str | None
    input_size: int
    num_classes: int

    @property
    def paper_name(self) -> str:
        """The paper's spelling: ``plain-20``, ``ResNet-56``."""
        return f"{'ResNet' if self.residual else 'plain'}-{self.depth}"


def valid_names_hint() -> str:
    """The valid architecture names in one phrase, for error messages and help text."""
    return (
        "plain/resnet + depth: 6n+2 for CIFAR-10 (20, 32, 44, 56, 110, 1202, ...) "
        "or 18, 34, 50, 101, 152 for ImageNet, e.g. resnet20, plain56, resnet50"
    )


def spec(name: str) -> ArchSpec:
    """Parse an architecture name.

    Raises:
        UserError: for a name that is not ``plain<depth>``/``resnet<depth>`` with a
            valid depth; the message lists the valid choices.
    """
    m = _NAME.match(name.strip().lower())
    if not m:
        raise UserError(f"unknown architecture {name!r}; valid names are {valid_names_hint()}")
    kind, depth = m.group(1), int(m.group(2))
    residual = kind == "resnet"
    inet = imagenet_depths()
    if depth in inet:
        block = inet[depth]["block"]
        default = ("A" if block == "basic" else "B") if residual else None
        return ArchSpec(f"{kind}{depth}", "imagenet", depth, residual, block, default, 224, 1000)
    if depth < 8 or (depth - 2) % 6:
        raise UserError(
            f"depth {depth} of {name!r} is not 6n+2 (n >= 1) nor an ImageNet depth (18, 34, 50, "
            f"101, 152); e.g. 20, 32, 44, 56, 110, 1202"
        )
    return ArchSpec(f"{kind}{depth}", "cifar", depth, residual, "basic", "A" if residual else None, 32, 10)


def resolve_shortcut(s: ArchSpec, shortcut: str | None) -> str | None:
    """The shortcut option a net is built with: the user's choice or the paper's default;
    always None for a plain net.

    Raises:
        UserError: for an option other than A/B/C, or a shortcut asked of a plain net.
    """
    if shortcut is None:
        return s.default_shortcut
    opt = shortcut.strip().upper()
    if opt not in SHORTCUT_OPTIONS:
        raise UserError(f"unknown shortcut option {shortcut!r}; choose one of A, B, C")
    if not s.residual:
        return None
    return opt


def build(
    name: str,
    shortcut: str | None = None,
    num_classes: int | None = None,
    stride_on: str | None = None,
) -> nn.Module:
    """Build a network by name with He initialisation (call ``torch.manual_seed`` first
    for a repeatable init).

    Args:
        name: e.g. ``"resnet20"``, ``"plain56"``, ``"resnet50"``.
        shortcut: ``"A"``, ``"B"``, ``"C"``; None takes the paper's default. Ignored for
            plain nets (they have no shortcuts).
        num_classes: fc width; default 10 for CIFAR nets and 1000 for ImageNet nets.
        stride_on: ``"1x1"`` (default, the paper's) or ``"3x3"``; bottleneck nets only.

    Raises:
        UserError: unknown name, depth not 6n+2, unknown shortcut option, or a stride
            option on a basic-block net.
    """
    s = spec(name)
    opt = resolve_shortcut(s, shortcut)
    classes = num_classes or s.num_classes
    if stride_on is not None and stride_on not in ("1x1", "3x3"):
        raise UserError(f"unknown stride placement {stride_on!r}; choose 1x1 or 3x3")
    if stride_on is not None and s.block != "bottleneck":
        raise UserError(
            f"--stride-on applies to bottleneck nets (50, 101, 152) only; {s.name} uses basic "
            "blocks, drop the option"
        )
    if s.family == "cifar":
        return CifarResNet((s.depth - 2) // 6, opt, classes)
    cfg = imagenet_depths()[s.depth]
    return ImageNetResNet(cfg["block"], cfg["blocks"], opt, stride_on or "1x1", classes, tuple(cfg["widths"]))


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters (BN running statistics not included)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
