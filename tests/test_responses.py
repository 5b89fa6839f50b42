"""Layer responses (paper Sec. 4.2, Fig. 7): the std of every 3x3 layer's BN output,
checked against hand-computed values, the choice of layers (6n+1 for a 6n+2-layer CIFAR
net, stem included; block 3x3 convs only for the ImageNet nets), the run-level command
on tiny smoke runs, its errors, and the figure."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from conftest import run_main
from resnet_repro.analysis.responses import (
    ResponseRecorder,
    conv_bn_pairs,
    layer_responses,
    read_responses,
    run_responses,
)
from resnet_repro.cli import main
from resnet_repro.errors import UserError
from resnet_repro.models import build
from resnet_repro.report.figure7 import collect_responses, figure7

GAMMA = [1 + k / 10 for k in range(1, 8)]  # BN scale of recorded layer k = 1..7
BETA = 0.5


def hand_set(model: nn.Module) -> None:
    """Every conv takes the channel mean at the centre tap (so zero padding plays no
    role and stride only subsamples); BN k has scale GAMMA[k-1], shift BETA, running
    mean 0, variance 1 and eps 0, i.e. y = GAMMA*z + BETA. All values stay positive, so
    every ReLU is the identity."""
    with torch.no_grad():
        k = 0
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.zero_()
                m.weight[:, :, 1, 1] = 1.0 / m.in_channels
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(GAMMA[k])
                m.bias.fill_(BETA)
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
                m.eps = 0.0
                k += 1


def two_images() -> torch.Tensor:
    """Image 0 is 1.0 everywhere, image 1 is 3.0 (float64): any tensor computed from them
    by the hand-set net is constant per image and channel, and a layer whose channels are
    all equal has a pooled std of half the difference between the two images' values.

    The hand-set nets run in float64 (``.double()``): each conv sums 9 x C products, so in
    float32 the rounding of the 7 layers may reach sum(9 C) x 2**-24 = 1611 x 6e-8 = 1e-4 of
    a value (1.9e-6 was measured at layer 7 with oneDNN's AVX2 kernels), above any
    tolerance that checks the formula; in float64 that bound is 1611 x 1.1e-16 = 2e-13,
    and the half-difference's cancellation (values between 1 and 3 apart by 1 to 2 times
    their size) at most triples it, so rel=1e-9 leaves a margin of over 10^3."""
    return torch.cat([torch.full((1, 3, 32, 32), 1.0), torch.full((1, 3, 32, 32), 3.0)]).double()


def test_hand_set_plain_net():
    model = build("plain8").double()
    hand_set(model)
    got = [r.std for r in layer_responses(model, two_images())]
    # Half-difference h = 1 at the input; each layer maps it to GAMMA_k * h.
    g = GAMMA
    expected = [g[0], g[0] * g[1], g[0] * g[1] * g[2], g[0] * g[1] * g[2] * g[3]]
    expected += [expected[-1] * g[4], expected[-1] * g[4] * g[5], expected[-1] * g[4] * g[5] * g[6]]
    assert got == pytest.approx(expected, rel=1e-9)
    assert got[:3] == pytest.approx([1.1, 1.32, 1.716], rel=1e-9)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_hand_set_resnet_records_before_the_addition(batch_size):
    model = build("resnet8").double()  # option A
    hand_set(model)
    got = layer_responses(model, two_images(), batch_size=batch_size)
    g = GAMMA
    # Half-differences by hand (h of a sum is the sum of h: all terms grow with the image).
    l1 = g[0] * 1.0                  # stem
    l2 = g[1] * l1                   # layer1.0.conv1
    l3 = g[2] * l2                   # layer1.0.conv2 (recorded before "+ x")
    out1 = l3 + l1                   # block 1 output, 16 equal channels
    l4 = g[3] * out1                 # layer2.0.conv1 (mean over the 16 channels)
    l5 = g[4] * l4                   # layer2.0.conv2
    # Block 2 output: channels 0-15 are l5 + out1, channels 16-31 are l5 (option A
    # zero-pads the shortcut); the next conv averages the 32 channels.
    l6 = g[5] * (l5 + out1 / 2)      # layer3.0.conv1
    l7 = g[6] * l6                   # layer3.0.conv2
    assert [r.std for r in got] == pytest.approx([l1, l2, l3, l4, l5, l6, l7], rel=1e-9)  # float64: see two_images
    assert [r.count for r in got] == [2 * 16 * 32 * 32] * 3 + [2 * 32 * 16 * 16] * 2 + [2 * 64 * 8 * 8] * 2
    assert got[2].std != pytest.approx(out1)  # the value after the addition is not what is recorded


def test_std_pools_images_channels_positions_and_batches():
    """In float64: batches of 2 and of 5 may take different conv kernels, whose rounding
    through 7 layers of a random net can move a std by sum(9 C) x sqrt(9 C) rounding
    units (about 4e4), 2e-3 in float32 but 4e-12 in float64. The reference chains the
    same modules on the same batch: the same kernels, so the same values."""
    torch.manual_seed(0)
    model = build("resnet8").double().eval()
    x = torch.randn(5, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        ref = model.bn1(model.conv1(x))
        b = model.layer3[0]
        ref_last = b.bn2(b.conv2(torch.relu(b.bn1(b.conv1(model.layer2(model.layer1(torch.relu(ref))))))))
    whole = layer_responses(model, x)
    split = layer_responses(model, x, batch_size=2)  # batches of 2, 2, 1 merged
    assert whole[0].std == pytest.approx(ref.std(unbiased=False).item(), rel=1e-9)
    assert whole[-1].std == pytest.approx(ref_last.std(unbiased=False).item(), rel=1e-9)
    assert [r.std for r in split] == pytest.approx([r.std for r in whole], rel=1e-6)


@pytest.mark.parametrize("name,shortcut", [("resnet20", "A"), ("plain20", None), ("resnet20", "C"),
                                           ("resnet56", "B")])
def test_cifar_records_every_3x3_conv_stem_included(name, shortcut):
    model = build(name, shortcut)
    pairs = conv_bn_pairs(model)
    depth = int(name.removeprefix("plain").removeprefix("resnet"))
    assert len(pairs) == depth - 1  # 6n+1: the stem and the 6n block convs, not the fc
    threes = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert [p[0] for p in pairs] == threes
    assert pairs[0][0] == "conv1" and pairs[0][2] == "bn1"
    assert all(p[2] == p[0].replace("conv", "bn") for p in pairs)
    assert not any("shortcut" in p[0] for p in pairs)


@pytest.mark.parametrize("name,count,stem_h", [("resnet18", 16, 64), ("plain34", 32, 64), ("resnet50", 16, 64)])
def test_imagenet_nets_record_block_3x3_convs(name, count, stem_h):
    torch.manual_seed(0)
    model = build(name)
    rs = layer_responses(model, torch.randn(1, 3, stem_h, stem_h))
    assert len(rs) == count and [r.index for r in rs] == list(range(1, count + 1))
    assert "conv1" not in {r.conv for r in rs}  # the 7x7 stem is not a 3x3 layer
    mods = dict(model.named_modules())
    assert all(mods[r.conv].kernel_size == (3, 3) for r in rs)
    if name == "resnet50":
        assert all(r.conv.endswith(".conv2") for r in rs)  # the middle conv of each bottleneck
    assert all(math.isfinite(r.std) and r.std > 0 for r in rs)
    assert model.training and not model._forward_hooks
    assert not any(m._forward_hooks for m in model.modules())


def test_conv_bn_pairing_is_checked():
    with pytest.raises(ValueError, match="not followed by a BatchNorm2d"):
        conv_bn_pairs(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
    with pytest.raises(ValueError, match="not followed by a BatchNorm2d"):
        conv_bn_pairs(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)))
    with pytest.raises(ValueError, match="no 3x3 conv"):
        conv_bn_pairs(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)))
    # Registered next, but not fed by the conv: refused during the forward pass.
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="does not take the output of 3x3 conv 0"):
        layer_responses(net, torch.randn(1, 3, 8, 8))
    assert not any(m._forward_hooks for m in net.modules())
    with pytest.raises(ValueError, match="non-empty"):
        layer_responses(net, torch.randn(0, 3, 8, 8))
    with ResponseRecorder(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))) as rec:
        pass
    assert math.isnan(rec.results()[0].std) and rec.results()[0].count == 0


# ---------------------------------------------------------------------------- runs and CLI
@pytest.fixture(scope="module")
def smoke_runs(tiny_tree, tmp_path_factory):
    """plain8 and resnet8 trained for 8 iterations on the tiny tree, through the CLI."""
    root = tmp_path_factory.mktemp("fig7runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESNET_REPRO_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        for arch in ("plain8", "resnet8"):
            with pytest.raises(SystemExit) as exc:
                main(["train", "--arch", arch, "--iterations", "8", "--data-dir", str(tiny_tree), "--out", str(root),
                      "--batch-size", "16", "--precision", "fp32", "--device", "cpu", "--threads", "1"])
            assert exc.value.code in (0, None)
    return root


def test_responses_command_and_figure(smoke_runs, tiny_tree, tmp_path, capsys):
    runs = sorted(p for p in smoke_runs.iterdir() if p.is_dir())
    assert [p.name for p in runs] == ["plain8-it8-s0", "resnet8-A-it8-s0"]
    code, out, err = run_main(["responses", *map(str, runs), "--device", "cpu"], capsys)
    assert code == 0, err
    assert out.count("wrote") == 2 and "7 3x3 layers" in out

    r = read_responses(runs[1])
    assert r["arch"] == "resnet8" and r["split"] == "test" and r["images"] == 40
    assert [layer["conv"] for layer in r["layers"]][:2] == ["conv1", "layer1.0.conv1"] and len(r["layers"]) == 7
    assert r["schedule"] == "custom" and r["iterations"] == 8
    # Independent check of the stem and the last layer: the trained net, the test images
    # minus the mean of the 108 training images of the seeded split, by plain calls.
    from resnet_repro.data.cifar import load_cifar10, split_indices
    from resnet_repro.train import checkpoint

    arrays = load_cifar10(tiny_tree)
    tr, _ = split_indices(len(arrays.train_x), 0)
    mean = torch.from_numpy(arrays.train_x[tr].astype(np.float64).mean(0) / 255.0).float()
    x = torch.from_numpy(arrays.test_x).float() / 255.0 - mean
    model = build("resnet8")
    model.load_state_dict(checkpoint.load_verified(runs[1] / "checkpoints" / "final.pt", None)["model"])
    model.eval()
    with torch.no_grad():
        stem = model.bn1(model.conv1(x))
        b = model.layer3[0]
        last = b.bn2(b.conv2(torch.relu(b.bn1(b.conv1(model.layer2(model.layer1(torch.relu(stem))))))))
        wrong = (model(x).argmax(1).numpy() != arrays.test_y).sum()
    assert r["layers"][0]["std"] == pytest.approx(stem.double().std(unbiased=False).item(), rel=1e-5)
    assert r["layers"][-1]["std"] == pytest.approx(last.double().std(unbiased=False).item(), rel=1e-5)
    assert r["error"] == pytest.approx(100.0 * wrong / 40)
    # Deterministic: measuring again gives the same file.
    before = (runs[1] / "responses.json").read_bytes()
    assert run_main(["responses", str(runs[1]), "--device", "cpu"], capsys)[0] == 0
    assert (runs[1] / "responses.json").read_bytes() == before

    # The figure: both nets, plain first, the missing paper nets named in a warning.
    with pytest.warns(UserWarning, match="Fig. 7 nets without responses: plain-20, plain-56, ResNet-20"):
        rs = collect_responses([smoke_runs])
    assert [x["paper_name"] for x in rs] == ["plain-8", "ResNet-8"]
    out_base = tmp_path / "fig" / "figure7"
    with pytest.warns(UserWarning):
        paths = figure7([smoke_runs], out_base)
    assert [p.name for p in paths] == ["figure7.png", "figure7.pdf"]
    first = [p.read_bytes() for p in paths]
    assert first[0].startswith(b"\x89PNG") and first[1].startswith(b"%PDF")
    assert b"CreationDate" not in first[1]
    with pytest.warns(UserWarning):
        figure7([smoke_runs], out_base)
    assert [p.read_bytes() for p in paths] == first  # rebuilds byte for byte
    from PIL import Image

    assert Image.open(paths[0]).size == (960, 960)
    # `resnet-repro figure 7` dispatches to the same function: the same bytes.
    code, out, err = run_main(["figure", "7", "--runs", str(smoke_runs), "--out", str(tmp_path / "cli" / "fig7")],
                              capsys)
    assert code == 0, err
    assert "Fig. 7 nets without responses" in err
    assert [(tmp_path / "cli" / f"fig7.{e}").read_bytes() for e in ("png", "pdf")] == first


def test_responses_val_split(smoke_runs):
    r = run_responses(smoke_runs / "plain8-it8-s0", split="val")
    assert r["split"] == "val" and r["images"] == 12 and len(r["layers"]) == 7
    with pytest.raises(UserError, match="unknown split"):
        run_responses(smoke_runs / "plain8-it8-s0", split="train")


def test_bad_runs_are_one_line_exit_2(smoke_runs, tmp_path, capsys):
    src = smoke_runs / "resnet8-A-it8-s0"
    skip = shutil.ignore_patterns("responses.json")
    no_ckpt = shutil.copytree(src, tmp_path / "no-ckpt", ignore=skip)
    (no_ckpt / "checkpoints" / "final.pt").unlink()
    other = shutil.copytree(src, tmp_path / "imagenet-run", ignore=skip)
    conf = json.loads((other / "config.json").read_text())
    conf["config"]["dataset"] = "imagenet"
    (other / "config.json").write_text(json.dumps(conf))
    corrupt = shutil.copytree(src, tmp_path / "corrupt", ignore=skip)
    data = bytearray((corrupt / "checkpoints" / "final.pt").read_bytes())
    data[-100] ^= 0xFF
    (corrupt / "checkpoints" / "final.pt").write_bytes(bytes(data))
    cases = [
        ([str(no_ckpt)], "no final checkpoint"),
        ([str(src), str(no_ckpt)], "no final checkpoint"),  # checked before any work
        ([str(other)], "resnet8 run on imagenet"),
        ([str(tmp_path / "nothing")], "not a run directory"),
        ([str(corrupt)], "checksum mismatch"),
        ([str(src), "--split", "train"], "unknown split"),
        ([str(src), "--data-dir", str(tmp_path / "nowhere")], "no CIFAR-10 found"),
    ]
    stamp = (src / "responses.json").stat().st_mtime_ns if (src / "responses.json").exists() else None
    for argv, needle in cases:
        code, _, err = run_main(["responses", *argv, "--device", "cpu"], capsys)
        assert code == 2, argv
        assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (no_ckpt / "responses.json").exists() and not (other / "responses.json").exists()
    now = (src / "responses.json").stat().st_mtime_ns if (src / "responses.json").exists() else None
    assert now == stamp  # a batch with a bad run writes nothing


def fake_run(root, name, arch, shortcut, iterations, seed, stds):
    """A stored run (synthetic logs that agree with each other, as the figure checks with
    resnet_repro.runcheck) with a responses.json."""
    from resnet_repro.report.bench_reports import write_synthetic_run

    d = write_synthetic_run(root / name, arch, seed, {4000: "quick", 30: "smoke"}[iterations], shortcut=shortcut)
    layers = [{"index": i + 1, "conv": f"c{i}", "bn": f"b{i}", "std": s} for i, s in enumerate(stds)]
    (d / "responses.json").write_text(json.dumps({
        "format": 1, "arch": arch, "paper_name": arch, "shortcut": shortcut, "schedule": "quick",
        "iterations": iterations, "seed": seed, "split": "test", "images": 10000, "layers": layers}))
    return d


def test_figure_picks_one_option_a_run_per_net(tmp_path):
    fake_run(tmp_path, "r20-long", "resnet20", "A", 4000, 1, [1.0] * 19)
    fake_run(tmp_path, "r20-short", "resnet20", "A", 30, 0, [2.0] * 19)
    fake_run(tmp_path, "r20-seed0", "resnet20", "A", 4000, 0, [0.5] * 19)
    fake_run(tmp_path, "r20-B", "resnet20", "B", 4000, 0, [3.0] * 19)
    fake_run(tmp_path, "p20", "plain20", None, 4000, 0, [4.0] * 19)
    bad = fake_run(tmp_path, "p56", "plain56", None, 4000, 0, [1.0] * 55)
    (bad / "responses.json").write_text('{"format": 1, "arch": "plain56", "layers": "?"}')
    (tmp_path / "no-resp" / "checkpoints").mkdir(parents=True)
    (tmp_path / "no-resp" / "config.json").write_text("{}")
    (tmp_path / "no-resp" / "checkpoints" / "final.pt").write_bytes(b"")  # finished: responses can measure it
    (tmp_path / "in-progress").mkdir()  # no final weights: nothing to measure, said so
    (tmp_path / "in-progress" / "config.json").write_text("{}")
    with pytest.warns(UserWarning) as rec:
        rs = collect_responses([tmp_path])
    msgs = " | ".join(str(w.message) for w in rec)
    assert [(r["arch"], r["run_dir"].rsplit("/", 1)[1]) for r in rs] == [("plain20", "p20"), ("resnet20", "r20-seed0")]
    assert "option B run left out" in msgs and "p56/responses.json is unreadable or malformed" in msgs
    assert "1 run(s) without responses.json left out; measure them with `resnet-repro responses" in msgs
    assert f"{tmp_path / 'no-resp'}" in msgs
    assert f"1 run(s) without responses.json and without final weights (checkpoints/final.pt) left out: " \
           f"{tmp_path / 'in-progress'} (in progress" in msgs
    assert "Fig. 7 nets without responses: plain-56, ResNet-56, ResNet-110" in msgs


def test_figure_without_responses_is_an_error(tmp_path):
    with pytest.raises(UserError, match="no run with responses.json"):
        figure7([tmp_path], tmp_path / "f")
