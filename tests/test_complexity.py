"""Parameters and multiply-adds of the paper's nets (Table 1, Table 6), counted from code."""

from __future__ import annotations

import io

import pytest
import torch
from rich.console import Console

from resnet_repro import paper
from resnet_repro.analysis.complexity import (
    IMAGENET_DEPTHS,
    analyse,
    count_mult_adds,
    paper_cifar_params,
    paper_mult_adds,
    paper_stage_sizes,
)
from resnet_repro.errors import UserError
from resnet_repro.models import build, count_params
from resnet_repro.report.arch_view import render_arch
from resnet_repro.report.table1 import cifar_complexity_frame, render_table1, table1_frame

# Measured with FlopCounterMode (FLOPs / 2) on the paper's nets: ResNet-18/34 option A,
# 50/101/152 option B with the stride on the first 1x1 conv, one 224x224 image.
MEASURED_MULT_ADDS = {
    18: 1_794_805_760,
    34: 3_644_493_824,
    50: 3_857_973_248,
    101: 7_570_194_432,
    152: 11_282_415_616,
}


@pytest.mark.parametrize("depth", IMAGENET_DEPTHS)
def test_imagenet_flops_match_table1(depth: int) -> None:
    c = analyse(f"resnet{depth}")
    want = paper_mult_adds(depth)
    print(
        f"ResNet-{depth}: {c.mult_adds:,} mult-adds = {c.mult_adds / 1e9:.3f}e9, paper {want / 1e9}e9"
    )
    assert want == paper.table(1)["nets"][str(depth)]["flops_mult_adds"]
    assert abs(c.mult_adds / want - 1) < 0.05
    assert c.mult_adds == MEASURED_MULT_ADDS[depth]
    assert c.stride_on == ("1x1" if depth >= 50 else None)


def test_paper_flops_values() -> None:
    assert [paper_mult_adds(d) / 1e9 for d in IMAGENET_DEPTHS] == [1.8, 3.6, 3.8, 7.6, 11.3]


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "plain34", "resnet20", "plain56"])
def test_layer_view_sums_to_totals(name: str) -> None:
    c = analyse(name)
    assert sum(r.params for r in c.layers) == c.params
    assert sum(r.mult_adds for r in c.layers) == c.mult_adds
    assert sum(s.params for s in c.stages) == c.params
    assert sum(s.mult_adds for s in c.stages) == c.mult_adds
    with torch.device("meta"):
        assert count_params(build(name)) == c.params


def test_stages_follow_table1() -> None:
    sizes = paper_stage_sizes()
    for depth in IMAGENET_DEPTHS:
        c = analyse(f"resnet{depth}")
        got = {s.stage: s.output_size for s in c.stages}
        assert got == sizes
        blocks = [s.blocks for s in c.stages if s.stage.endswith("_x")]
        assert blocks == paper.table(1)["nets"][str(depth)]["blocks"]
    stages = {s.stage: s for s in analyse("resnet18").stages}
    assert stages["conv2_x"].layers == "[3x3, 64; 3x3, 64] x2"
    assert stages["conv2_x"].pre == "3x3 max pool, stride 2"
    assert stages["conv1"].layers == "7x7, 64, stride 2"
    assert {s.stage: s for s in analyse("resnet152").stages}["conv4_x"].layers == (
        "[1x1, 256; 3x3, 256; 1x1, 1024] x36"
    )


def test_cifar_resnet20() -> None:
    a = analyse("resnet20")
    print(f"ResNet-20 A: {a.params:,} params, {a.mult_adds:,} mult-adds")
    assert a.params == 269_722
    assert a.mult_adds == 40_551_040
    b = analyse("resnet20", "B")
    assert b.mult_adds == 40_813_184  # + the two 1x1/2 projections
    assert a.stages[-1].output_size == 1 and [s.output_size for s in a.stages[:-1]] == [
        32,
        32,
        16,
        8,
    ]
    assert abs(a.params - paper_cifar_params(20)) / paper_cifar_params(20) < 0.01


def test_cifar_params_match_table6() -> None:
    # Table 6 rounds to 2 significant digits (0.27M .. 1.7M) or 3 (19.4M).
    for depth in (20, 32, 44, 56, 110, 1202):
        got = analyse(f"resnet{depth}", "A").params
        want = paper_cifar_params(depth)
        assert want in (float(f"{got:.2g}"), float(f"{got:.3g}")), (depth, got, want)


@pytest.mark.parametrize("name", ["resnet20", "resnet56", "resnet18", "resnet34"])
def test_plain_equals_option_a(name: str) -> None:
    res = analyse(name, "A")
    plain = analyse(name.replace("resnet", "plain"))
    assert plain.shortcut is None and res.shortcut == "A"
    assert plain.params == res.params and plain.mult_adds == res.mult_adds


def test_count_mult_adds_on_real_tensors_matches_meta() -> None:
    torch.manual_seed(0)
    model = build("resnet20")
    assert count_mult_adds(model, 32) == analyse("resnet20").mult_adds
    assert model.training  # restored after the eval-mode count


def test_table1_frame() -> None:
    df = table1_frame()
    assert len(df) == 10
    assert list(df["net"])[:2] == ["plain-18", "ResNet-18"]
    r50 = df[df["name"] == "resnet50"].iloc[0]
    assert r50["conv3_x (28x28)"] == "[1x1, 128; 3x3, 128; 1x1, 512] x4"
    assert r50["params"] == 25_557_032
    assert r50["paper mult-adds (1e9)"] == 3.8
    assert 0.95 < r50["ratio"] < 1.05
    v15 = table1_frame("3x3")
    assert v15[v15["name"] == "resnet50"].iloc[0]["mult-adds (1e9)"] > r50["mult-adds (1e9)"]


def test_render_formats() -> None:
    md = render_table1(None, "markdown")
    assert md.count("\n| ") >= 11 and "ResNet-152" in md
    csv = render_table1(None, "csv")
    assert csv.splitlines()[0].startswith("net,name,depth,shortcut")
    buf = io.StringIO()
    text = render_table1(Console(file=buf, width=200), "rich")
    assert "ResNet-101" in buf.getvalue() and "ResNet-101" in text
    with pytest.raises(UserError):
        render_table1(None, "latex")


def test_cifar_complexity_frame() -> None:
    df = cifar_complexity_frame()
    assert len(df) == 18
    a = df[(df["depth"] == 1202) & (df["shortcut"] == "A")].iloc[0]
    assert abs(a["params (M)"] - a["paper params (M)"]) < 0.05
    assert df[df["shortcut"] != "A"]["paper params (M)"].isna().all()


def test_render_arch() -> None:
    buf = io.StringIO()
    render_arch(Console(file=buf, width=120), "resnet50", None, None)
    out = buf.getvalue()
    assert "layer4.0.shortcut.0" in out and "25,557,032" in out and "3,857,973,248" in out
    with pytest.raises(UserError):
        render_arch(Console(file=io.StringIO()), "resnet18", None, "1x1")
