"""The CIFAR-10 networks of paper Sec. 4.2 (Table 6, Fig. 6): 6n+2 layers.

A 3x3 stem conv with 16 filters, three stages of 2n 3x3 convs (n blocks of two) with
16/32/64 filters on 32/16/8 maps, downsampling by a stride-2 conv at the start of
stages 2 and 3, BN after every conv, global average pooling and a 10-way fc.
"""

from __future__ import annotations

import torch
from torch import nn

from resnet_repro.models.blocks import BasicBlock, he_init
from resnet_repro.models.checkpointing import run_blocks

CIFAR_WIDTHS = (16, 32, 64)


class CifarResNet(nn.Module):
    """A 6n+2-layer CIFAR net (paper Sec. 4.2): ResNet with ``shortcut`` A/B/C, or the
    plain net with ``shortcut=None``.

    Input ``(N, 3, 32, 32)`` float images; output ``(N, num_classes)`` logits.

    Attributes ``conv1``/``bn1`` (stem), ``layer1``..``layer3`` (the three stages, each
    an ``nn.Sequential`` of n :class:`BasicBlock`), ``fc``. Setting
    ``checkpoint_activations = True`` checkpoints each stage in segments of about sqrt(n)
    blocks in training (see :mod:`resnet_repro.models.checkpointing`): less memory, one
    extra forward pass, same parameters and results.
    """

    checkpoint_activations: bool = False

    def __init__(self, n: int, shortcut: str | None = "A", num_classes: int = 10) -> None:
        super().__init__()
        if n < 1:
            raise ValueError("n must be >= 1 (depth 6n+2 >= 8)")
        self.n, self.shortcut_option = n, shortcut
        self.conv1 = nn.Conv2d(3, CIFAR_WIDTHS[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(CIFAR_WIDTHS[0])
        self.relu = nn.ReLU(inplace=True)
        in_ch = CIFAR_WIDTHS[0]
        stages = []
        for i, width in enumerate(CIFAR_WIDTHS):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(in_ch, width, stride, shortcut))
                in_ch = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        ck = self.checkpoint_activations
        for stage in (self.layer1, self.layer2, self.layer3):
            x = run_blocks(stage, x, ck)
        return self.fc(torch.flatten(self.avgpool(x), 1))
