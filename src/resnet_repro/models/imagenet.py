"""The ImageNet networks of paper Table 1 (Sec. 3.3, 4.1): 18, 34 (basic blocks) and
50, 101, 152 (bottleneck blocks), residual or plain.

Stem: 7x7/2 conv with 64 filters + BN + ReLU, 3x3/2 max pool; stages conv2_x..conv5_x
with base widths 64/128/256/512 and the block counts of Table 1 (read from
:mod:`resnet_repro.paper`); global average pooling and a 1000-way fc. Module names
follow torchvision (``conv1``, ``bn1``, ``layer1``..``layer4``, ``fc``).
"""

from __future__ import annotations

import torch
from torch import nn

from resnet_repro import paper
from resnet_repro.models.blocks import BasicBlock, Bottleneck, he_init


def imagenet_depths() -> dict[int, dict]:
    """``{depth: {"block": "basic"|"bottleneck", "blocks": [4 ints], "widths": [...]}}``
    from paper Table 1."""
    return {int(k): v for k, v in paper.table(1)["nets"].items()}


class ImageNetResNet(nn.Module):
    """An ImageNet ResNet or plain net (paper Table 1).

    Args:
        block: ``"basic"`` or ``"bottleneck"``.
        blocks: blocks per stage, e.g. ``[3, 4, 6, 3]``.
        shortcut: ``"A"``, ``"B"``, ``"C"``, or ``None`` for the plain net.
        stride_on: bottleneck stride placement, ``"1x1"`` (paper) or ``"3x3"`` (v1.5).
        num_classes: width of the fc layer (1000 for ImageNet).

    Input ``(N, 3, H, W)`` (224x224 in the paper; any size >= 32 works, the head is
    global average pooling); output ``(N, num_classes)`` logits.
    """

    def __init__(
        self,
        block: str,
        blocks: list[int],
        shortcut: str | None = "B",
        stride_on: str = "1x1",
        num_classes: int = 1000,
        widths: tuple[int, ...] = (64, 128, 256, 512),
    ) -> None:
        super().__init__()
        self.block_type, self.shortcut_option, self.stride_on = block, shortcut, stride_on
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_ch = 64
        stages = []
        for i, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            layers: list[nn.Module] = []
            for j in range(count):
                stride = 2 if (i > 0 and j == 0) else 1
                if block == "basic":
                    layers.append(BasicBlock(in_ch, width, stride, shortcut))
                    in_ch = width
                else:
                    layers.append(Bottleneck(in_ch, width, stride, shortcut, stride_on))
                    in_ch = width * Bottleneck.expansion
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))
