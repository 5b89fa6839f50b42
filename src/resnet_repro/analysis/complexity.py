"""Parameters and FLOPs of the paper's networks, counted from the code.

* ImageNet nets (paper Table 1, Sec. 3.3): multiply-adds for one 224x224 image, per
  stage (``conv1``, ``conv2_x`` .. ``conv5_x``, head) and in total, beside the paper's
  1.8 / 3.6 / 3.8 / 7.6 / 11.3 x 10^9 (read from :mod:`resnet_repro.paper`).
* CIFAR-10 nets (Sec. 4.2, Table 6): parameters and multiply-adds for one 32x32 image,
  beside the parameter counts of Table 6.

Totals are counted with :class:`torch.utils.flop_counter.FlopCounterMode`, which counts
2 FLOPs per multiply-add of a convolution or matrix product (``aten.convolution``,
``aten.addmm``); we divide by 2 and report **multiply-adds**, the paper's unit ("FLOPs
(multiply-adds)", Table 1). BN, ReLU, pooling, the shortcut additions and biases are not
counted (neither does the paper's figure appear to count them). The per-layer view is
computed independently from forward hooks (``out_elems * in_ch/groups * kh * kw`` per conv,
``out_elems * in_features`` per fc) and sums to the same total.

Networks are built on PyTorch's ``meta`` device: shapes only, no memory and no
arithmetic, so even ResNet-152 or ResNet-1202 takes well under a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from resnet_repro import paper
from resnet_repro.models.blocks import PadShortcut
from resnet_repro.models.registry import CIFAR_PAPER_DEPTHS, build, count_params, spec

IMAGENET_DEPTHS = (18, 34, 50, 101, 152)
STAGE_NAMES = ("conv1", "conv2_x", "conv3_x", "conv4_x", "conv5_x", "head")
_SKIP = (nn.ReLU, nn.Identity, nn.Dropout)


@dataclass(frozen=True)
class LayerRow:
    """One layer of the per-layer view.

    Attributes:
        name: module path, e.g. ``"layer2.0.shortcut.0"``.
        kind: short description, e.g. ``"conv 3x3, 128, /2"``, ``"BN"``,
            ``"projection 1x1, 512, /2"``, ``"shortcut A: /2, zero-pad to 128"``.
        stage: the paper's stage name (``conv1``, ``conv2_x`` .. ``conv5_x``, ``head``;
            CIFAR nets use ``conv1``, ``conv2_x`` .. ``conv4_x``, ``head``).
        output_shape: output of the layer for one image, without the batch dimension:
            ``(C, H, W)`` or ``(num_classes,)``.
        params: trainable parameters of the layer.
        mult_adds: multiply-adds for one image (0 for BN, pooling, option-A shortcuts).
    """

    name: str
    kind: str
    stage: str
    output_shape: tuple[int, ...]
    params: int
    mult_adds: int


@dataclass(frozen=True)
class StageRow:
    """One stage of paper Table 1 (or of the CIFAR net of Sec. 4.2).

    Attributes:
        stage: ``conv1``, ``conv2_x`` .. ``conv5_x`` or ``head``.
        output_size: side of the stage's output map in pixels (112, 56, 28, 14, 7 for a
            224x224 input; 1 for the head).
        layers: the block shape in Table 1 notation, e.g. ``"[3x3, 64; 3x3, 64] x2"``,
            ``"[1x1, 64; 3x3, 64; 1x1, 256] x3"``, ``"7x7, 64, stride 2"``.
        pre: a layer Table 1 lists before the blocks of the stage
            (``"3x3 max pool, stride 2"`` for conv2_x of the ImageNet nets), else ``""``.
        blocks: number of residual (or plain) blocks; 0 for the stem and the head.
        params: trainable parameters in the stage.
        mult_adds: multiply-adds of the stage for one image.
    """

    stage: str
    output_size: int
    layers: str
    pre: str
    blocks: int
    params: int
    mult_adds: int


@dataclass(frozen=True)
class Complexity:
    """Size and cost of one network.

    Attributes:
        name: canonical name (``"resnet50"``); ``paper_name``: ``"ResNet-50"``.
        family: ``"imagenet"`` or ``"cifar"``.
        shortcut: the option built (``"A"``/``"B"``/``"C"``; None for plain nets).
        stride_on: ``"1x1"``/``"3x3"`` for bottleneck nets, else None.
        input_size: image side used for the count (224 ImageNet, 32 CIFAR).
        params: trainable parameters (BN running statistics excluded).
        mult_adds: multiply-adds for one image (FlopCounterMode FLOPs / 2).
        layers: the per-layer view; ``stages``: the per-stage view.
    """

    name: str
    paper_name: str
    family: str
    shortcut: str | None
    stride_on: str | None
    input_size: int
    params: int
    mult_adds: int
    layers: tuple[LayerRow, ...]
    stages: tuple[StageRow, ...]


def _stage_of(name: str) -> str:
    top = name.split(".", 1)[0]
    if top.startswith("layer") and top[5:].isdigit():
        return f"conv{int(top[5:]) + 1}_x"
    if top == "maxpool":  # Table 1 lists the max pool in the conv2_x row
        return "conv2_x"
    if top in ("avgpool", "fc"):
        return "head"
    return "conv1"


def _kind(name: str, m: nn.Module) -> str:
    if isinstance(m, nn.Conv2d):
        kh, kw = m.kernel_size
        stride = f", /{m.stride[0]}" if m.stride[0] > 1 else ""
        what = "projection" if ".shortcut." in f".{name}." else "conv"
        return f"{what} {kh}x{kw}, {m.out_channels}{stride}"
    if isinstance(m, nn.BatchNorm2d):
        return "BN"
    if isinstance(m, nn.Linear):
        return f"fc {m.in_features}->{m.out_features}"
    if isinstance(m, nn.MaxPool2d):
        k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
        s = m.stride if isinstance(m.stride, int) else m.stride[0]
        return f"max pool {k}x{k}, /{s}"
    if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AvgPool2d)):
        return "global avg pool"
    if isinstance(m, PadShortcut):
        return f"shortcut A: /{m.stride}, zero-pad {m.in_ch}->{m.out_ch}"
    return type(m).__name__


def _mult_adds(m: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    """Multiply-adds of one call of ``m`` per image, from its output shape."""
    per_image = out.numel() // max(out.shape[0], 1)
    if isinstance(m, nn.Conv2d):
        kh, kw = m.kernel_size
        return per_image * (m.in_channels // m.groups) * kh * kw
    if isinstance(m, nn.Linear):
        return per_image * m.in_features
    return 0


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def measure(model: nn.Module, input_size: int) -> tuple[int, list[LayerRow]]:
    """Run one ``(1, 3, input_size, input_size)`` image through ``model`` (eval mode, no
    grad, on the model's device; ``meta`` works) and count its cost.

    Returns:
        ``(mult_adds, layers)``: the total multiply-adds for one image as counted by
        ``FlopCounterMode`` (its FLOPs divided by 2: it counts a multiply-add of a conv
        or matmul as 2 FLOPs), and the per-layer view from forward hooks on every leaf
        module except ReLU / Identity / Dropout (a module called twice gives two rows).

    Raises:
        RuntimeError: if the model cannot run on an input of that size.
    """
    rows: list[LayerRow] = []
    handles = []

    def hook(name: str):
        def fn(m: nn.Module, args: tuple, out: torch.Tensor) -> None:
            rows.append(
                LayerRow(
                    name=name,
                    kind=_kind(name, m),
                    stage=_stage_of(name),
                    output_shape=tuple(int(d) for d in out.shape[1:]),
                    params=sum(p.numel() for p in m.parameters(recurse=False) if p.requires_grad),
                    mult_adds=_mult_adds(m, args[0], out),
                )
            )

        return fn

    for name, m in model.named_modules():
        if name and not any(True for _ in m.children()) and not isinstance(m, _SKIP):
            handles.append(m.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    x = torch.zeros(1, 3, input_size, input_size, device=_device_of(model))
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return counter.get_total_flops() // 2, rows


def count_mult_adds(model: nn.Module, input_size: int) -> int:
    """Multiply-adds of ``model`` for one ``3 x input_size x input_size`` image, counted
    with ``FlopCounterMode`` (FLOPs / 2; convs and fc only, see the module docstring).

    Raises:
        RuntimeError: if the model cannot run on an input of that size.
    """
    return measure(model, input_size)[0]


def _block_shape(stage: nn.Module) -> str:
    """Table 1 notation of a stage: ``"[3x3, 64; 3x3, 64] x2"``."""
    blocks = list(stage.children())
    first = blocks[0]
    convs = [getattr(first, c) for c in ("conv1", "conv2", "conv3") if hasattr(first, c)]
    inner = "; ".join(f"{c.kernel_size[0]}x{c.kernel_size[1]}, {c.out_channels}" for c in convs)
    return f"[{inner}] x{len(blocks)}"


def _stages(model: nn.Module, layers: list[LayerRow]) -> list[StageRow]:
    out = []
    for stage in STAGE_NAMES:
        rows = [r for r in layers if r.stage == stage]
        if not rows:
            continue
        last = rows[-1].output_shape
        size = last[-1] if len(last) == 3 else 1
        pre = ""
        if stage == "conv1":
            c = model.conv1
            desc, blocks = (
                f"{c.kernel_size[0]}x{c.kernel_size[1]}, {c.out_channels}, stride {c.stride[0]}",
                0,
            )
        elif stage == "head":
            desc, blocks = f"global average pool, {model.fc.out_features}-d fc", 0
        else:
            layer = getattr(model, f"layer{STAGE_NAMES.index(stage)}")
            desc, blocks = _block_shape(layer), len(list(layer.children()))
            pool = [r for r in rows if r.kind.startswith("max pool")]
            if pool:
                k, stride = pool[0].kind.removeprefix("max pool ").split(", /")
                pre = f"{k} max pool, stride {stride}"
        out.append(
            StageRow(
                stage,
                int(size),
                desc,
                pre,
                blocks,
                sum(r.params for r in rows),
                sum(r.mult_adds for r in rows),
            )
        )
    return out


@lru_cache(maxsize=128)
def analyse(name: str, shortcut: str | None = None, stride_on: str | None = None) -> Complexity:
    """Parameters, multiply-adds, per-stage and per-layer views of a named network, built
    on the ``meta`` device and measured on one image of the paper's size (224x224 for
    the ImageNet nets of Table 1, 32x32 for the CIFAR nets of Sec. 4.2).

    Args:
        name: e.g. ``"resnet50"``, ``"plain34"``, ``"resnet20"``.
        shortcut: ``"A"``/``"B"``/``"C"``; None takes the paper's default (A for CIFAR
            and ImageNet 18/34, B for 50/101/152).
        stride_on: bottleneck stride placement, ``"1x1"`` (default, the paper's) or
            ``"3x3"`` (torchvision v1.5); None for basic-block nets.

    Raises:
        UserError: unknown name, bad shortcut option, or a stride option on a
            basic-block net (from :func:`resnet_repro.models.build`).
    """
    s = spec(name)
    with torch.device("meta"):
        model = build(name, shortcut=shortcut, stride_on=stride_on)
    mult_adds, layers = measure(model, s.input_size)
    return Complexity(
        name=s.name,
        paper_name=s.paper_name,
        family=s.family,
        shortcut=getattr(model, "shortcut_option", None),
        stride_on=getattr(model, "stride_on", None) if s.block == "bottleneck" else None,
        input_size=s.input_size,
        params=count_params(model),
        mult_adds=int(mult_adds),
        layers=tuple(layers),
        stages=tuple(_stages(model, layers)),
    )


def paper_mult_adds(depth: int) -> float:
    """The paper's multiply-adds for one 224x224 image (Table 1, "FLOPs" row):
    1.8e9, 3.6e9, 3.8e9, 7.6e9, 11.3e9 for depths 18, 34, 50, 101, 152.

    Raises:
        KeyError: for a depth that is not in Table 1.
    """
    return float(paper.table(1)["nets"][str(depth)]["flops_mult_adds"])


def paper_stage_sizes() -> dict[str, int]:
    """Output map side of each stage in paper Table 1: ``{"conv1": 112, "conv2_x": 56,
    ..., "conv5_x": 7, "head": 1}``."""
    return {k: int(v["output"]) for k, v in paper.table(1)["stages"].items()}


def imagenet_complexity(residual: bool = True, stride_on: str = "1x1") -> list[Complexity]:
    """:func:`analyse` of the five ImageNet nets of Table 1 (18, 34, 50, 101, 152) with the
    paper's shortcut options (A for 18/34, B for 50/101/152) or their plain counterparts.

    Raises:
        UserError: a ``stride_on`` other than 1x1 / 3x3.
    """
    kind = "resnet" if residual else "plain"
    return [
        analyse(f"{kind}{d}", None, stride_on if spec(f"{kind}{d}").block == "bottleneck" else None)
        for d in IMAGENET_DEPTHS
    ]


def cifar_complexity(
    depths: tuple[int, ...] = CIFAR_PAPER_DEPTHS, options: tuple[str, ...] = ("A", "B", "C")
) -> list[Complexity]:
    """:func:`analyse` of the CIFAR-10 ResNets of Sec. 4.2 / Table 6 (20, 32, 44, 56, 110,
    1202 layers) for each shortcut option. A plain net has exactly the parameters and
    multiply-adds of its option-A ResNet.

    Raises:
        UserError: a depth that is not 6n+2 or an unknown option.
    """
    return [analyse(f"resnet{d}", opt) for d in depths for opt in options]


def paper_cifar_params(depth: int) -> float | None:
    """Parameters the paper reports for the CIFAR-10 ResNet of ``depth`` (Table 6, option
    A, rounded to 0.01M: 0.27M for ResNet-20); None for depths not in Table 6."""
    row = paper.cifar_table6().get(depth)
    return None if row is None else float(row["params"])
