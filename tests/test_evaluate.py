"""The testing protocols: score averaging of 10-crop and multi-scale testing, the
fully-convolutional equivalence, top-1/top-5 counting, imported weights, the results
file the tables read, and the command's refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import default_dtype, run_main
from resnet_repro.data.imagenet import (
    CenterView,
    ImageFolderSplit,
    build_index,
    build_mini_imagenet,
)
from resnet_repro.evaluate import Normalizer, eval_loader, evaluate_loader, protocol_scores
from resnet_repro.models import build
from resnet_repro.models.convert import save_imported
from resnet_repro.train.distributed import DistContext


@pytest.fixture(scope="session")
def mini(shared_cifar, tmp_path_factory) -> Path:
    return build_mini_imagenet(shared_cifar, tmp_path_factory.mktemp("ev") / "mini", 1, 2)


class ColourNet(nn.Module):
    """Logits from the mean of each input channel through a fixed linear map: any input
    size works, and different views give different scores."""

    def __init__(self, classes: int = 6) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3, classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)) * 10)


ZERO = Normalizer(torch.zeros(3), None, "none")


# The score comparisons run in float64 (the protocol code follows torch's default dtype):
# the batched and the per-image forward passes may take different kernels, and in
# float32 a logit's rounding can reach 3 x 2**-24 x sum|w x| = 2e-6 here, above atol;
# in float64 4e-15.
def test_10crop_scores_are_the_mean_of_the_crops_softmax():
    with default_dtype(torch.float64):
        net = ColourNet().eval()
        x = torch.randint(0, 256, (2, 10, 3, 8, 8), dtype=torch.uint8)
        got = protocol_scores(net, x, "10crop", ZERO, torch.device("cpu"))
        want = torch.stack([torch.softmax(net(x[b].double() / 255), 1).mean(0) for b in range(2)])
    assert got.dtype == torch.float64
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(got.sum(1), torch.ones(2, dtype=torch.float64))


def test_multiscale_scores_average_the_scales_of_each_image():
    with default_dtype(torch.float64):
        net = ColourNet().eval()
        g = torch.Generator().manual_seed(0)
        imgs = [[torch.randint(0, 256, (3, s, s + extra), generator=g, dtype=torch.uint8) for s in (8, 12, 16)]
                for extra in (0, 4, 0)]  # images 0 and 2 share shapes (batched together), 1 does not
        got = protocol_scores(net, imgs, "multiscale", ZERO, torch.device("cpu"))
        for b, views in enumerate(imgs):
            want = torch.stack([torch.softmax(net(v[None].double() / 255), 1)[0] for v in views]).mean(0)
            assert torch.allclose(got[b], want, atol=1e-6)


def test_global_pooling_net_is_its_fully_convolutional_form():
    """The fc applied at every position as a 1x1 conv, score map averaged = the net. In
    float64: mean-then-fc and fc-then-mean sum 512 x 12 products in other orders, which in
    float32 may differ by 6144 x 2**-24 x sum|w f| = 7e-3 here, in float64 by 1.3e-11."""
    torch.manual_seed(0)
    net = build("resnet18", "A", num_classes=7).double().eval()
    x = torch.randn(1, 3, 96, 128, dtype=torch.float64)
    with torch.no_grad():
        f = net.layer4(net.layer3(net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x))))))))
        assert f.shape[-2:] == (3, 4)  # a 3x4 map of class scores, not one position
        score_map = torch.einsum("nchw,kc->nkhw", f, net.fc.weight) + net.fc.bias.view(1, -1, 1, 1)
        assert torch.allclose(score_map.mean((2, 3)), net(x), atol=1e-5)


class FixedRanking(nn.Module):
    """Ignores the image; always ranks the classes 0 > 1 > ... > 9."""

    def forward(self, x):
        return torch.arange(10, 0, -1, dtype=torch.float32).repeat(len(x), 1)


def test_top1_and_top5_counting(mini):
    idx = build_index(mini, splits=("val",))
    ds = ImageFolderSplit(idx, "val", CenterView(24, 28))
    loader = eval_loader(ds, DistContext(), batch_size=3, workers=0, pin_memory=False)
    res = evaluate_loader(FixedRanking(), loader, "center", ZERO, DistContext(), torch.device("cpu"))
    # 2 images per class: only class 0 is top-1, classes 0..4 are in the top 5
    assert (res.images, res.skipped) == (20, 0)
    assert res.top1_error == pytest.approx(90.0) and res.top5_error == pytest.approx(50.0)


def test_imported_weights_evaluate_with_torchvision_normalisation(mini, tmp_path, capsys):
    torch.manual_seed(0)
    net = build("resnet18", "B", num_classes=10)
    w = tmp_path / "r18.pt"
    save_imported(net.state_dict(), "resnet18", w, "test")
    code, out, err = run_main(["evaluate", "--weights", str(w), "--arch", "resnet18", "--protocol", "center",
                               "--data-dir", str(mini), "--images", "4", "--device", "cpu", "--workers", "0"], capsys)
    assert code == 0, err
    r = json.loads(Path(f"{w}.eval-center.json").read_text())
    assert {"top1_error", "top5_error", "protocol", "images", "provenance"} <= set(r)
    assert (r["protocol"], r["images"], r["sizes"]["crop"]) == ("center", 4, 224)
    assert r["provenance"]["normalization"] == "torchvision per-channel mean/std"
    assert r["provenance"]["weights_source"] == "test" and r["top5_error"] <= r["top1_error"]


@pytest.mark.parametrize("extra,needle", [
    (["--protocol", "5crop", "--run", "x"], "unknown protocol '5crop'"),
    (["--run", "a", "--weights", "b", "--arch", "resnet18"], "exactly one of --run-dir"),
    (["--weights", "b"], "--weights needs --arch"),
    (["--run", "nowhere"], "is not a run directory"),
    (["--weights", "nofile.pt", "--arch", "resnet18"], "does not exist"),
])
def test_bad_evaluate_input_is_one_line_exit_2(extra, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(["evaluate", "--data-dir", str(tmp_path), "--device", "cpu", *extra], capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_weights_for_another_arch_or_class_count_are_refused(mini, tmp_path, capsys):
    w = tmp_path / "r18.pt"
    save_imported(build("resnet18", "B", num_classes=10).state_dict(), "resnet18", w, "test")
    code, _, err = run_main(["evaluate", "--weights", str(w), "--arch", "resnet34", "--data-dir", str(mini)], capsys)
    assert code == 2 and "holds resnet18, not resnet34" in err
    w2 = tmp_path / "r18-1000.pt"
    save_imported(build("resnet18", "B").state_dict(), "resnet18", w2, "test")
    code, _, err = run_main(["evaluate", "--weights", str(w2), "--arch", "resnet18", "--data-dir", str(mini),
                             "--device", "cpu"], capsys)
    assert code == 2 and "has 10 class folders but the net has 1000 outputs" in err
