"""``resnet-repro arch NAME``: a network layer by layer, with its total parameters and
multiply-adds beside the paper's (Table 1 for ImageNet nets, Table 6 for CIFAR nets)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from resnet_repro.analysis.complexity import (
    Complexity,
    analyse,
    paper_cifar_params,
    paper_mult_adds,
)
from resnet_repro.models.registry import spec


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def _mult_adds(n: int) -> str:
    """``115.6M``, ``1.387G``, ``640``; ``-`` for zero."""
    if not n:
        return "-"
    if n >= 1e9:
        return f"{n / 1e9:.3f}G"
    if n >= 1e5:
        return f"{n / 1e6:.1f}M"
    return f"{n:,}"


def layer_table(c: Complexity) -> Table:
    """A rich Table of ``c``'s per-layer view (layer, type, output CxHxW for one image,
    parameters, multiply-adds), one section per stage headed by the stage's name (paper
    Table 1 stages conv1, conv2_x .. conv5_x, head). Raises nothing."""
    t = Table(
        title=escape(
            f"{c.paper_name} ({c.name}): shortcut {c.shortcut or 'none (plain)'}"
            + (f", stride on {c.stride_on}" if c.stride_on else "")
            + f", one {c.input_size}x{c.input_size} image"
        )
    )
    t.add_column("layer", overflow="fold")
    t.add_column("type", min_width=12)
    t.add_column("output", justify="right", no_wrap=True)
    t.add_column("params", justify="right", no_wrap=True)
    t.add_column("mult-adds", justify="right", no_wrap=True)
    stage = None
    for r in c.layers:
        if r.stage != stage:
            if stage is not None:
                t.add_section()
            t.add_row(Text(r.stage, style="bold"), "", "", "", "")
        t.add_row(
            Text(r.name),
            Text(r.kind),
            Text(_shape(r.output_shape)),
            Text(f"{r.params:,}" if r.params else "-"),
            Text(_mult_adds(r.mult_adds)),
        )
        stage = r.stage
    return t


def stage_table(c: Complexity) -> Table:
    """A rich Table of ``c``'s per-stage view in the layout of paper Table 1 (stage, output
    size in pixels, block shape x count, parameters, multiply-adds per image). Raises
    nothing."""
    t = Table(title="per stage (paper Table 1 layout)")
    for name, right in (
        ("stage", False),
        ("output", True),
        ("layers", False),
        ("params", True),
        ("mult-adds", True),
    ):
        t.add_column(name, justify="right" if right else "left", no_wrap=name != "layers")
    for s in c.stages:
        layers = f"{s.pre}; {s.layers}" if s.pre else s.layers
        t.add_row(
            Text(s.stage),
            Text(f"{s.output_size}x{s.output_size}"),
            Text(layers),
            Text(f"{s.params:,}"),
            Text(_mult_adds(s.mult_adds)),
        )
    return t


def summary_lines(c: Complexity) -> list[str]:
    """Total parameters and multiply-adds for one image, with the paper's figure where it
    has one (Table 1 multiply-adds for ImageNet nets; Table 6 parameters for CIFAR nets).
    Raises nothing."""
    depth = spec(c.name).depth
    lines = [f"parameters: {c.params:,} (trainable; BN running statistics not counted)"]
    scaled = (
        f"{c.mult_adds / 1e9:.3f} x 10^9"
        if c.mult_adds >= 1e9
        else f"{c.mult_adds / 1e6:.2f} x 10^6"
    )
    ma = (
        f"multiply-adds: {c.mult_adds:,} = {scaled} for one {c.input_size}x{c.input_size} "
        "image (FlopCounterMode FLOPs / 2; convs and fc only)"
    )
    lines.append(ma)
    if c.family == "imagenet":
        paper = paper_mult_adds(depth)
        lines.append(
            f"paper Table 1: {paper / 1e9:.1f} x 10^9 multiply-adds for {depth} layers "
            f"(ours / paper = {c.mult_adds / paper:.3f})"
        )
    else:
        paper_params = paper_cifar_params(depth)
        if paper_params is not None and c.shortcut == "A":
            lines.append(
                f"paper Table 6: {paper_params / 1e6:.2f}M parameters for ResNet-{depth} "
                f"(ours {c.params / 1e6:.3f}M)"
            )
        elif paper_params is not None:
            lines.append(
                f"paper Table 6: {paper_params / 1e6:.2f}M parameters for ResNet-{depth} with "
                "option A (a plain net has the same count; B and C add projections)"
            )
    return lines


def render_arch(
    console: Console,
    name: str,
    shortcut: str | None = None,
    stride_on: str | None = None,
) -> None:
    """Print the layer-by-layer table of network ``name`` (output shape for one image,
    parameters and multiply-adds of every conv, BN, pooling, shortcut and fc layer), the
    per-stage view of paper Table 1, and the totals beside the paper's (Table 1 FLOPs for
    ImageNet nets at 224x224; Table 6 parameters for CIFAR nets at 32x32).

    Args:
        console: where to print.
        name: e.g. ``"resnet20"``, ``"plain56"``, ``"resnet50"``.
        shortcut: ``"A"``/``"B"``/``"C"``, or None for the paper's default.
        stride_on: ``"1x1"``/``"3x3"`` for bottleneck nets, None for the default (1x1).

    Raises:
        UserError: unknown name, bad shortcut option, or a stride option on a
            basic-block net (the CLI prints it as one line and exits with code 2).
    """
    from resnet_repro.report.render import print_fitted

    c = analyse(name, shortcut, stride_on)
    print_fitted(console, layer_table(c))
    print_fitted(console, stage_table(c))
    for line in summary_lines(c):
        console.print(line, markup=False, highlight=False)
