"""CIFAR nets of paper Sec. 4.2 / Table 6: structure, parameter counts, shortcuts."""

from __future__ import annotations

import pickle

import pytest
import torch

from resnet_repro import paper
from resnet_repro.errors import UserError
from resnet_repro.models import build, count_params, spec
from resnet_repro.models.blocks import PadShortcut, Projection

# Exact counts for option A (the paper rounds them in Table 6).
EXACT_A = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962, 1202: 19_421_274}


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110, 1202])
def test_param_counts_match_table6(depth):
    n_params = count_params(build(f"resnet{depth}"))
    assert n_params == EXACT_A[depth]
    paper_params = paper.cifar_table6()[depth]["params"]
    # The paper quotes 0.27M, 0.46M, 0.66M, 0.85M, 1.7M, 19.4M.
    digits = 1 if paper_params >= 1e6 else 2
    assert round(n_params / 1e6, digits) == pytest.approx(paper_params / 1e6)


@pytest.mark.parametrize("depth", [20, 56, 110])
def test_plain_has_exactly_the_params_of_option_a(depth):
    assert count_params(build(f"plain{depth}")) == count_params(build(f"resnet{depth}", "A"))


def test_option_b_and_c_add_projection_params():
    # B: two projections (16->32, 32->64) with BN: 16*32 + 2*32 + 32*64 + 2*64 = 2752.
    assert count_params(build("resnet20", "B")) == EXACT_A[20] + 2752
    model = build("resnet20", "C")
    projections = [m for m in model.modules() if isinstance(m, Projection)]
    assert len(projections) == 9  # every block of 3 stages x 3 blocks
    assert count_params(build("resnet20", "C")) > count_params(build("resnet20", "B"))


def test_stage_shapes_and_depth():
    model = build("resnet56").eval()
    shapes = {}
    for name in ("conv1", "layer1", "layer2", "layer3"):
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape)))
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert shapes == {"conv1": (2, 16, 32, 32), "layer1": (2, 16, 32, 32), "layer2": (2, 32, 16, 16),
                      "layer3": (2, 64, 8, 8)}
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(convs) + len(linears) == 56  # 6n+2 weighted layers with option A
    assert all(c.kernel_size == (3, 3) for c in convs)


def test_option_a_is_parameter_free_padding_and_picklable():
    model = build("resnet20", "A")
    pads = [m for m in model.modules() if isinstance(m, PadShortcut)]
    assert len(pads) == 2 and all(sum(p.numel() for p in m.parameters()) == 0 for m in pads)
    clone = pickle.loads(pickle.dumps(model))
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(clone.eval()(x), model.eval()(x))
    sc = PadShortcut(16, 32, 2)
    x = torch.arange(2 * 16 * 4 * 4, dtype=torch.float32).reshape(2, 16, 4, 4)
    y = sc(x)
    assert y.shape == (2, 32, 2, 2)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2]) and torch.count_nonzero(y[:, 16:]) == 0


def test_plain_block_has_no_addition():
    plain = build("plain20")
    assert all(getattr(b, "shortcut", None) is None for s in (plain.layer1, plain.layer2, plain.layer3) for b in s)


def test_he_init_statistics():
    torch.manual_seed(0)
    model = build("resnet110")
    w = model.layer3[5].conv1.weight  # 64 out channels, 3x3: fan_out = 576
    assert w.std().item() == pytest.approx((2 / 576) ** 0.5, rel=0.05)
    assert torch.all(model.layer2[0].bn1.weight == 1) and torch.all(model.layer2[0].bn1.bias == 0)


def test_seeded_build_is_repeatable():
    torch.manual_seed(3)
    a = build("resnet20")
    torch.manual_seed(3)
    b = build("resnet20")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize("bad,needle", [
    ("resnet21", r"not 6n\+2"), ("resnet2", r"not 6n\+2"), ("vgg16", "unknown architecture"), ("resnet", "unknown"),
])
def test_bad_names(bad, needle):
    with pytest.raises(UserError, match=needle):
        spec(bad)


def test_bad_shortcut():
    with pytest.raises(UserError, match="choose one of A, B, C"):
        build("resnet20", "D")


def test_any_6n_plus_2_depth():
    assert spec("resnet8").depth == 8 and spec("plain-14").name == "plain14"
    assert count_params(build("resnet8")) < count_params(build("resnet14"))
