"""torchvision <-> ours weight conversion (ImageNet nets of paper Table 1, option B)."""

from __future__ import annotations

import subprocess
import sys
import urllib.error

import pytest
import torch
import torchvision
from torch import nn

from resnet_repro.cli import main
from resnet_repro.errors import UserError
from resnet_repro.models import build, count_params
from resnet_repro.models.convert import (
    build_imported,
    from_torchvision,
    load_torchvision_weights,
    to_torchvision,
    torchvision_build_kwargs,
)

DEPTHS = (18, 34, 50, 101, 152)


def _randomise_bn(model: nn.Module, seed: int) -> None:
    """Random BN affine parameters and running statistics, so eval-mode BN is not close
    to the identity and a mis-mapped BN would change the logits. The last BN of each
    residual branch gets a small scale so 152 layers of additions stay finite."""
    g = torch.Generator().manual_seed(seed)
    last = {
        f"{n}.bn3" if hasattr(b, "bn3") else f"{n}.bn2"
        for n, b in model.named_modules()
        if hasattr(b, "bn2")
    }
    with torch.no_grad():
        for name, m in model.named_modules():
            if not isinstance(m, nn.BatchNorm2d):
                continue
            c = m.num_features
            scale = (0.05, 0.2) if name in last else (0.5, 1.5)
            m.weight.copy_(torch.empty(c).uniform_(*scale, generator=g))
            m.bias.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=g)))


def _torchvision_model(depth: int) -> nn.Module:
    torch.manual_seed(depth)
    tv = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    _randomise_bn(tv, depth)
    return tv.eval()


def _ours_from(sd: dict[str, torch.Tensor], arch: str, **kwargs) -> nn.Module:
    with torch.device("meta"):  # skip a second random init; the weights come from sd
        model = build(arch, **(kwargs or torchvision_build_kwargs(arch)))
    model.load_state_dict(sd, assign=True)
    return model.eval()


@pytest.mark.parametrize("depth", DEPTHS)
def test_converted_net_matches_torchvision(depth: int) -> None:
    arch = f"resnet{depth}"
    tv = _torchvision_model(depth)
    tv_sd = tv.state_dict()
    ours_sd = from_torchvision(tv_sd, arch)
    ours = _ours_from(ours_sd, arch)

    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(100 + depth))
    with torch.no_grad():
        want, got = tv(x), ours(x)
    scale = want.abs().max().item()
    print(f"{arch}: max |logit| {scale:.3g}, max diff {(want - got).abs().max().item():.3g}")
    assert torch.isfinite(want).all() and 0.1 < scale < 1e4
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)

    back = to_torchvision(ours.state_dict(), arch)
    assert list(back) == list(tv_sd)
    for k, v in tv_sd.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    assert count_params(ours) == sum(p.numel() for p in tv.parameters())


@pytest.mark.parametrize("depth", DEPTHS)
def test_option_b_params_equal_torchvision(depth: int) -> None:
    with torch.device("meta"):
        tv = getattr(torchvision.models, f"resnet{depth}")(weights=None)
        for stride_on in ("1x1", "3x3") if depth >= 50 else (None,):
            ours = build(f"resnet{depth}", shortcut="B", stride_on=stride_on)
            assert count_params(ours) == sum(p.numel() for p in tv.parameters())


def test_stride_placement_default_and_effect() -> None:
    default = build("resnet50")
    assert default.stride_on == "1x1"
    first = default.layer2[0]
    assert first.conv1.stride == (2, 2) and first.conv2.stride == (1, 1)

    tv = _torchvision_model(50)
    sd = from_torchvision(tv.state_dict(), "resnet50")
    v15 = _ours_from(sd, "resnet50", shortcut="B", stride_on="3x3")
    v1 = _ours_from(sd, "resnet50", shortcut="B", stride_on="1x1")
    assert count_params(v1) == count_params(v15)
    assert v15.layer2[0].conv2.stride == (2, 2) and v15.layer2[0].conv1.stride == (1, 1)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        a, b = v1(x), v15(x)
    assert a.shape == b.shape
    assert (a - b).abs().max() > 1e-2 * a.abs().max()


def test_conversion_errors_are_one_line() -> None:
    with torch.device("meta"):
        sd18 = torchvision.models.resnet18().state_dict()
        sd34 = torchvision.models.resnet34().state_dict()
        ours_a = build("resnet18", shortcut="A").state_dict()
        ours_c = build("resnet18", shortcut="C").state_dict()
    cases = [
        (lambda: from_torchvision(sd18, "resnet34"), "missing"),
        (lambda: from_torchvision(sd34, "resnet18"), "unexpected"),
        (lambda: from_torchvision(sd18, "plain18"), "no torchvision counterpart"),
        (lambda: from_torchvision(sd18, "resnet20"), "no torchvision counterpart"),
        (lambda: from_torchvision(sd18, "resnet19"), "6n+2"),
        (lambda: to_torchvision(ours_a, "resnet18"), "missing"),
        (lambda: to_torchvision(ours_c, "resnet18"), "unexpected"),
        (lambda: from_torchvision({**sd18, "fc.bias": torch.zeros(3)}, "resnet18"), "shape"),
    ]
    for fn, words in cases:
        with pytest.raises(UserError) as info:
            fn()
        msg = str(info.value)
        assert words in msg and "\n" not in msg, msg


def test_module_prefix_and_num_classes() -> None:
    with torch.device("meta"):
        tv = torchvision.models.resnet18(num_classes=10)
    sd = {f"module.{k}": v for k, v in tv.state_dict().items()}
    ours = from_torchvision(sd, "resnet18")
    assert ours["fc.weight"].shape == (10, 512)
    assert "layer2.0.shortcut.0.weight" in ours and not any("downsample" in k for k in ours)


def test_load_file_and_cli_import(tmp_path, capsys) -> None:
    tv = _torchvision_model(18)
    path = tmp_path / "resnet18.pth"
    torch.save(tv.state_dict(), path)
    wrapped = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": tv.state_dict()}, wrapped)

    sd = load_torchvision_weights("torchvision", "resnet18", path)
    assert torch.equal(
        sd["layer3.0.shortcut.1.running_var"], tv.layer3[0].downsample[1].running_var
    )
    assert set(load_torchvision_weights(f"torchvision:{wrapped}", "resnet18")) == set(sd)

    out = tmp_path / "sub" / "ours.pt"
    argv = [
        "import-weights",
        "--from",
        "torchvision",
        "--arch",
        "resnet18",
        str(path),
        "--out",
        str(out),
    ]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code in (0, None)
    assert "wrote" in capsys.readouterr().out
    model = build_imported(out).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), tv(x), rtol=1e-5, atol=1e-5)
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_load_errors(tmp_path, monkeypatch) -> None:
    bad = tmp_path / "model.pth"
    torch.save(nn.Linear(2, 2), bad)  # a pickled module, refused by weights_only=True
    text_file = tmp_path / "notes.pth"
    text_file.write_text("resnet18 weights\n")
    cases = [
        (
            lambda: load_torchvision_weights("torchvision", "resnet18", tmp_path / "nope.pth"),
            "does not exist",
        ),
        (lambda: load_torchvision_weights("torchvision", "resnet18", bad),
         "(torch.load weights_only=True): it pickles more than tensors and plain values (Unsupported global: "
         "GLOBAL torch.nn.modules.linear.Linear); save model.state_dict(), not the model"),
        (lambda: load_torchvision_weights("torchvision", "resnet18", text_file),
         "file written by torch.save ("),
        (lambda: load_torchvision_weights("timm", "resnet18", bad), "unknown weights source"),
        (lambda: load_torchvision_weights("torchvision", "resnet18"), "no weights given"),
        (lambda: load_torchvision_weights("torchvision:IMAGENET9K", "resnet18"), "IMAGENET1K_V1"),
    ]
    for fn, words in cases:
        with pytest.raises(UserError) as info:
            fn()
        msg = str(info.value)
        assert words in msg and "\n" not in msg and "\x1b" not in msg, msg
        assert "weights_only` set to `False`" not in msg, msg  # torch's advice to load untrusted code

    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.models.ResNet18_Weights, "get_state_dict", offline)
    with pytest.raises(UserError, match="could not download"):
        load_torchvision_weights("torchvision:IMAGENET1K_V1", "resnet18")


def test_cli_bad_input_exits_2_with_one_line(capsys) -> None:
    for argv in (
        ["arch", "resnet18", "--stride-on", "1x1"],
        ["arch", "resnet19"],
        ["arch", "resnet50", "--shortcut", "D"],
        ["import-weights", "--arch", "plain18", "--out", "x.pt", "nope.pth"],
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        captured = capsys.readouterr()
        assert info.value.code == 2, argv
        err = captured.err.strip()
        assert err.startswith("error:") and "\n" not in err and "Traceback" not in err, err


def test_cli_subprocess_error_has_no_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "resnet_repro", "arch", "resnet19"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and proc.stderr.strip().count("\n") == 0
    assert "Traceback" not in proc.stderr


def test_state_dict_without_bn_counters_imports_with_a_note_and_the_same_logits(tmp_path, capsys) -> None:
    """Files from PyTorch before 0.4.1 (or converters) have no ``num_batches_tracked``;
    PyTorch loads them, and so does import-weights: same logits, bit for bit (the same
    ops on the same tensors), with one note line."""
    tv = _torchvision_model(18)
    old = {k: v for k, v in tv.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(old) == len(tv.state_dict()) - 20
    path = tmp_path / "old.pth"
    torch.save(old, path)
    out = tmp_path / "ours.pt"
    with pytest.raises(SystemExit) as exit_info:
        main(["import-weights", "--arch", "resnet18", str(path), "--out", str(out)])
    printed = capsys.readouterr().out
    assert exit_info.value.code in (0, None), printed
    notes = [ln for ln in printed.splitlines() if ln.startswith("note:")]
    assert len(notes) == 1 and "no BN num_batches_tracked counters (20;" in notes[0]
    model = build_imported(out).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(model(x), tv(x))
    assert int(model.state_dict()["bn1.num_batches_tracked"]) == 0


def test_missing_bn_counters_never_hide_the_real_mismatch() -> None:
    with torch.device("meta"):
        sd18 = {k: v for k, v in torchvision.models.resnet18().state_dict().items()
                if not k.endswith("num_batches_tracked")}
    with pytest.raises(UserError) as info:
        from_torchvision(sd18, "resnet34")  # 18 is not 34: blocks are missing, not just counters
    msg = str(info.value)
    assert "missing 80 keys (layer1.2.conv1.weight" in msg and "num_batches_tracked" not in msg
    assert "check --arch" in msg
