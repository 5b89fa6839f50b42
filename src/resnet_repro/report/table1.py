"""Paper Table 1 ("Architectures for ImageNet") rebuilt from the code, and the CIFAR-10
complexity companion of Table 6 (Sec. 4.2).

Every block shape, parameter count and multiply-add count here is measured from the
networks :func:`resnet_repro.models.build` makes (see
:mod:`resnet_repro.analysis.complexity`); only the "paper" columns are read from
:mod:`resnet_repro.paper`.
"""

from __future__ import annotations

import io
import math

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from resnet_repro.analysis.complexity import (
    IMAGENET_DEPTHS,
    analyse,
    cifar_complexity,
    paper_cifar_params,
    paper_mult_adds,
)
from resnet_repro.errors import UserError

FORMATS = ("rich", "markdown", "csv")
_STAGES = ("conv1", "conv2_x", "conv3_x", "conv4_x", "conv5_x")


def table1_frame(stride_on: str = "1x1") -> pd.DataFrame:
    """Paper Table 1 with one row per network: plain and residual nets of depth 18, 34,
    50, 101, 152 (ResNets with the paper's shortcut options: A for 18/34, B for
    50/101/152; Sec. 3.3, 4.1).

    Columns: ``net`` (``"plain-18"``, ``"ResNet-50"``), ``name`` (``"resnet50"``),
    ``depth``, ``shortcut`` (``"A"``/``"B"``/``"-"``), one column per stage
    ``"conv1 (112x112)"`` .. ``"conv5_x (7x7)"`` holding the block shape in Table 1
    notation (``"[3x3, 64; 3x3, 64] x2"``; the stage's measured output size is in the
    column name), ``params`` (trainable parameters), ``mult-adds (1e9)`` (ours, one
    224x224 image, FlopCounterMode FLOPs / 2), ``paper mult-adds (1e9)`` (Table 1's
    FLOPs row; the paper gives it per depth, plain and residual alike) and ``ratio``
    (ours / paper).

    Args:
        stride_on: bottleneck stride placement, ``"1x1"`` (the paper's) or ``"3x3"``
            (torchvision v1.5, about 6% more multiply-adds for ResNet-50).

    Raises:
        UserError: a ``stride_on`` other than 1x1 / 3x3.
    """
    rows = []
    for depth in IMAGENET_DEPTHS:
        for kind in ("plain", "resnet"):
            name = f"{kind}{depth}"
            c = analyse(name, None, stride_on if depth >= 50 else None)
            stages = {s.stage: s for s in c.stages}
            row = {
                "net": c.paper_name,
                "name": c.name,
                "depth": depth,
                "shortcut": c.shortcut or "-",
            }
            for st in _STAGES:
                s = stages[st]
                row[f"{st} ({s.output_size}x{s.output_size})"] = s.layers
            paper = paper_mult_adds(depth)
            row.update(
                {
                    "params": c.params,
                    "mult-adds (1e9)": c.mult_adds / 1e9,
                    "paper mult-adds (1e9)": paper / 1e9,
                    "ratio": c.mult_adds / paper,
                }
            )
            rows.append(row)
    return pd.DataFrame(rows)


def cifar_complexity_frame() -> pd.DataFrame:
    """Parameters and multiply-adds of the CIFAR-10 ResNets of Sec. 4.2 / Table 6 (20, 32,
    44, 56, 110, 1202 layers) with shortcut options A, B and C, for one 32x32 image.

    Columns: ``net``, ``name``, ``depth``, ``n`` (blocks per stage, depth = 6n+2),
    ``shortcut``, ``params``, ``params (M)``, ``paper params (M)`` (Table 6; the paper
    uses option A, so only the A rows carry it, NaN elsewhere), ``mult-adds (1e6)``. A
    plain net has exactly the parameters and multiply-adds of its option-A ResNet.
    """
    rows = []
    for c in cifar_complexity():
        depth = int(c.name.removeprefix("resnet"))
        paper = paper_cifar_params(depth) if c.shortcut == "A" else None
        rows.append(
            {
                "net": c.paper_name,
                "name": c.name,
                "depth": depth,
                "n": (depth - 2) // 6,
                "shortcut": c.shortcut,
                "params": c.params,
                "params (M)": c.params / 1e6,
                "paper params (M)": math.nan if paper is None else paper / 1e6,
                "mult-adds (1e6)": c.mult_adds / 1e6,
            }
        )
    return pd.DataFrame(rows)


def _cell(value: object, column: str) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if "(1e6)" in column:
            return f"{value:,.2f}"
        if "(M)" in column:
            return f"{value:,.2f}"
        return f"{value:,.3f}"
    if isinstance(value, int) and not isinstance(value, bool) and column == "params":
        return f"{value:,}"
    return str(value)


def _display(frame: pd.DataFrame, drop: tuple[str, ...]) -> tuple[list[str], list[list[str]]]:
    cols = [c for c in frame.columns if c not in drop]
    body = [
        [_cell(v, c) for c, v in zip(cols, rec, strict=True)]
        for rec in frame[cols].itertuples(index=False)
    ]
    return cols, body


def render_frame(
    frame: pd.DataFrame,
    fmt: str = "rich",
    console: Console | None = None,
    title: str = "",
    caption: str = "",
    drop: tuple[str, ...] = (),
) -> str:
    """Render a table as ``"rich"`` (a rich Table), ``"markdown"`` (a pipe table) or
    ``"csv"`` (all columns, full precision), print it on ``console`` if given, and
    return the text.

    Raises:
        UserError: an unknown ``fmt``.
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "csv":
        text = frame.to_csv(index=False, float_format="%.6g")
        if console is not None:
            console.print(text, end="", markup=False, highlight=False, soft_wrap=True)
        return text
    cols, body = _display(frame, drop)
    if fmt == "markdown":
        numeric = [pd.api.types.is_numeric_dtype(frame[c]) for c in cols]
        lines = []
        if title:
            lines += [f"**{title}**", ""]
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "|".join("---:" if n else "---" for n in numeric) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in body]
        if caption:
            lines += ["", caption]
        text = "\n".join(lines) + "\n"
        if console is not None:
            console.print(text, end="", markup=False, highlight=False, soft_wrap=True)
        return text
    table = Table(
        title=escape(title) if title else None,
        caption=escape(caption) if caption else None,
        caption_justify="left",
    )
    for c in cols:
        numeric = pd.api.types.is_numeric_dtype(frame[c])
        table.add_column(
            Text(c),
            justify="right" if numeric else "left",
            no_wrap=numeric or c in ("net", "shortcut"),
        )
    for r in body:
        table.add_row(*(Text(v) for v in r))
    if console is not None:
        console.print(table)
    buf = Console(file=io.StringIO(), width=max(200, console.width if console else 0), record=True)
    buf.print(table)
    return buf.export_text()


TABLE1_TITLE = "Table 1: architectures for ImageNet (from the code)"
TABLE1_CAPTION = (
    "Block shapes [kernel, filters; ...] x blocks per stage and the output size of each stage "
    "are measured on a 224x224 image; conv2_x starts with a 3x3 max pool, stride 2; conv3_x..conv5_x downsample by stride 2 in their first "
    "block (on the first 1x1 conv of a bottleneck, as in the paper). mult-adds: FlopCounterMode "
    "FLOPs / 2 (convs and fc; BN, ReLU, pooling and additions not counted). ResNet-18/34 use "
    "option A shortcuts, 50/101/152 option B. paper: Table 1's FLOPs row (multiply-adds)."
)


def render_table1(console: Console | None = None, fmt: str = "rich", stride_on: str = "1x1") -> str:
    """Paper Table 1 from the code (see :func:`table1_frame`), as ``fmt`` ``"rich"`` |
    ``"markdown"`` | ``"csv"``; printed on ``console`` when given, and returned as text.

    Raises:
        UserError: an unknown ``fmt`` or ``stride_on``.
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    frame = table1_frame(stride_on)
    caption = TABLE1_CAPTION
    if stride_on != "1x1":
        caption += (
            f" Bottleneck stride on the {stride_on} conv (torchvision v1.5), not the paper's."
        )
    return render_frame(frame, fmt, console, TABLE1_TITLE, caption, drop=("name", "depth"))


CIFAR_TITLE = "CIFAR-10 nets (Sec. 4.2, Table 6): parameters and multiply-adds, one 32x32 image"
CIFAR_CAPTION = (
    "Table 6 uses option A (zero-padding shortcuts, no extra parameters); B and C add 1x1 "
    "projections. A plain net has the parameters and multiply-adds of its option-A ResNet."
)


def render_cifar_complexity(console: Console | None = None, fmt: str = "rich") -> str:
    """The CIFAR-10 complexity table (see :func:`cifar_complexity_frame`) as ``fmt``
    ``"rich"`` | ``"markdown"`` | ``"csv"``; printed on ``console`` when given, and
    returned as text.

    Raises:
        UserError: an unknown ``fmt``.
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    frame = cifar_complexity_frame()
    return render_frame(
        frame, fmt, console, CIFAR_TITLE, CIFAR_CAPTION, drop=("name", "params (M)")
    )
