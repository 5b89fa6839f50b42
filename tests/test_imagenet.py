"""ImageNet data path (paper Sec. 3.4): index and bad layouts, the exact test views on a
hand-made image, the training view's randomness, the PCA lighting noise, the mean image,
unreadable files, and the whole path (training, 10-crop and multi-scale evaluation) on
a small image-folder "ImageNet" made of real CIFAR-10 photos."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_main
from resnet_repro import paper, runs
from resnet_repro.data.imagenet import (
    BadImage,
    CenterView,
    ImageFolderSplit,
    MultiScaleView,
    TenCropView,
    TrainView,
    build_index,
    build_mini_imagenet,
    collate,
    lighting_offsets,
    make_loader,
    normalize_batch,
    stats_from_crops,
)
from resnet_repro.errors import UserError
from resnet_repro.train.imagenet_schedule import PlateauRule, get_imagenet_schedule, paper_sizes


@pytest.fixture(scope="session")
def mini_imagenet(shared_cifar, tmp_path_factory) -> Path:
    """10 classes x (8 train + 2 val) real photos, 256 px on the short side."""
    return build_mini_imagenet(shared_cifar, tmp_path_factory.mktemp("inet") / "mini", 8, 2)


def coord_image(w: int, h: int) -> tuple[Image.Image, np.ndarray]:
    """An RGB image whose red channel is the column and green the row (B = 7)."""
    a = np.zeros((h, w, 3), dtype=np.uint8)
    a[..., 0] = np.arange(w)[None, :]
    a[..., 1] = np.arange(h)[:, None]
    a[..., 2] = 7
    return Image.fromarray(a), a.transpose(2, 0, 1)


# ---------------------------------------------------------------------------- views
def test_ten_crop_takes_the_exact_corner_center_and_flipped_windows():
    img, a = coord_image(40, 30)  # shorter side 30 = test side: no resize
    crops = TenCropView(crop=20, short=30)(img, 0, 0).numpy()
    assert crops.shape == (10, 3, 20, 20) and crops.dtype == np.uint8
    flipped = a[:, :, ::-1]
    windows = [(0, 0), (0, 20), (10, 0), (10, 20), (5, 10)]  # (top, left): tl, tr, bl, br, center
    for k, (t, left) in enumerate(windows):
        np.testing.assert_array_equal(crops[k], a[:, t:t + 20, left:left + 20])
        np.testing.assert_array_equal(crops[5 + k], flipped[:, t:t + 20, left:left + 20])
    # the flipped top-left window is the mirror image of the original top-right one
    np.testing.assert_array_equal(crops[5], crops[1][:, :, ::-1])
    assert crops[4][0, 0, 0] == 10 and crops[4][1, 0, 0] == 5


def test_center_view_crops_the_middle_after_resizing_the_shorter_side():
    img, a = coord_image(40, 30)
    c = CenterView(crop=20, short=30)(img, 0, 0).numpy()
    np.testing.assert_array_equal(c, a[:, 5:25, 10:30])
    small = CenterView(crop=10, short=15)(img, 0, 0)
    assert small.shape == (3, 10, 10)  # 40x30 -> 20x15, then the central 10x10


def test_multiscale_resizes_the_shorter_side_to_each_scale():
    img, a = coord_image(40, 30)
    views = MultiScaleView((30, 45, 60))(img, 0, 0)
    assert [tuple(v.shape) for v in views] == [(3, 30, 40), (3, 45, 60), (3, 60, 80)]
    np.testing.assert_array_equal(views[0].numpy(), a)  # the image's own scale is untouched
    # resizing keeps the picture: the red channel still grows left to right
    red = views[2][0].float().mean(0)
    assert torch.all(red[1:] >= red[:-1] - 1)
    # the paper's scales (Table 4), on a typical 500x375 ImageNet photo
    scales = paper.table(4)["test_scales_shorter_side"]
    assert paper_sizes()["multiscale"] == tuple(scales)
    photo = Image.new("RGB", (500, 375))
    sizes = [tuple(v.shape[1:]) for v in MultiScaleView(scales)(photo, 0, 0)]
    assert sizes == [(s, int(s * 500 / 375)) for s in scales]


def test_sizes_scale_with_the_crop():
    full = paper_sizes()
    rec = paper.recipe("imagenet")
    assert full["crop"] == rec["crop"] and full["scale"] == tuple(rec["scale_augmentation_shorter_side"])
    assert full["test_short"] == rec["scale_augmentation_shorter_side"][0]
    small = paper_sizes(64)
    assert small["crop"] == 64 and small["scale"] == (73, 137) and small["multiscale"][0] == 64


def test_train_view_is_a_pure_function_of_seed_epoch_and_index():
    img, _ = coord_image(60, 40)
    view = TrainView(crop=24, scale=(40, 60), lighting_std=0.1, seed=3)
    x1, a1 = view(img, 5, 0)
    x2, a2 = view(img, 5, 0)
    assert torch.equal(x1, x2) and torch.equal(a1, a2)
    assert x1.shape == (3, 24, 24) and x1.dtype == torch.uint8
    draws = [view.params(60, 40, i, e) for i in range(400) for e in range(2)]
    assert {d.scale for d in draws} == set(range(40, 61))  # every shorter side in [40, 60]
    for d in draws:
        h, w = d.scale, int(d.scale * 60 / 40)
        assert 0 <= d.top <= h - 24 and 0 <= d.left <= w - 24
    assert 0.4 < np.mean([d.flip for d in draws]) < 0.6
    alphas = np.stack([d.alpha for d in draws])
    assert abs(alphas.std() - 0.1) < 0.01 and abs(alphas.mean()) < 0.01
    p0, p1 = view.params(60, 40, 5, 0), view.params(60, 40, 5, 1)  # a new epoch, a new view
    assert (p0.scale, p0.top, p0.left, p0.flip, p0.alpha.tolist()) != (p1.scale, p1.top, p1.left, p1.flip,
                                                                         p1.alpha.tolist())
    # the crop is the window the parameters name, flipped when they say so
    p = view.params(60, 40, 7, 0)
    x, _ = view(img, 7, 0)
    ref = np.asarray(img.resize((int(p.scale * 60 / 40), p.scale), Image.BILINEAR)).transpose(2, 0, 1)
    ref = ref[:, p.top:p.top + 24, p.left:p.left + 24]
    if p.flip:
        ref = ref[:, :, ::-1]
    assert np.abs(x.numpy().astype(int) - ref.astype(int)).max() <= 2


# ---------------------------------------------------------------------------- colour
def test_pca_lighting_noise_has_the_stated_covariance():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    eigval = torch.tensor([0.2, 0.02, 0.005], dtype=torch.float64)
    sigma = 0.1
    alpha = torch.randn(200_000, 3, generator=g, dtype=torch.float64) * sigma
    off = lighting_offsets(alpha, eigval, q)
    emp = torch.cov(off.T)
    want = sigma**2 * q @ torch.diag(eigval**2) @ q.T
    assert torch.allclose(emp, want, rtol=0.03, atol=2e-7)
    assert off.mean(0).abs().max() < 3e-4
    # along each eigenvector the offset's std is sigma * eigenvalue
    proj = off @ q
    assert torch.allclose(proj.std(0), sigma * eigval, rtol=0.02)


def test_mean_image_and_pca_of_pixels():
    g = torch.Generator().manual_seed(1)
    crops = torch.randint(0, 256, (6, 3, 5, 5), generator=g, dtype=torch.uint8)
    crops[:, 1] = (crops[:, 0] // 2 + 20).to(torch.uint8)  # correlated channels
    st = stats_from_crops(crops)
    assert torch.allclose(st.mean, crops.double().div(255).mean(0).float(), atol=1e-6)
    px = crops.double().div(255).permute(0, 2, 3, 1).reshape(-1, 3)
    cov = torch.cov(px.T, correction=0)
    rebuilt = st.eigvec.double() @ torch.diag(st.eigval.double()) @ st.eigvec.double().T
    assert torch.allclose(rebuilt, cov, atol=1e-6)
    assert st.eigval[0] >= st.eigval[1] >= st.eigval[2] >= 0 and st.images == 6


def test_normalize_subtracts_the_mean_image_or_its_channel_means():
    mean = torch.rand(3, 4, 4)
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    assert torch.allclose(normalize_batch(x, mean), x.float() / 255 - mean)
    big = torch.randint(0, 256, (1, 3, 6, 8), dtype=torch.uint8)
    want = big.float() / 255 - mean.mean((1, 2)).view(3, 1, 1)
    # two float32 means of 16 values in [0, 1], by different reductions: each within 15 x 2**-24
    assert torch.allclose(normalize_batch(big, mean), want, atol=4e-6)
    off = torch.tensor([[0.1, -0.2, 0.3], [0.0, 0.0, 0.0]])
    got = normalize_batch(x, mean, offsets=off)
    assert torch.allclose(got[0] - (x[0].float() / 255 - mean), off[0].view(3, 1, 1).expand(3, 4, 4), atol=1e-6)


# ---------------------------------------------------------------------------- schedule
def test_schedules_follow_the_paper():
    rec = paper.recipe("imagenet")
    p = get_imagenet_schedule("paper")
    assert (p.iterations, p.lr_rule, p.batch_size) == (rec["max_iterations"], "plateau", rec["optimizer"]["batch"])
    f = get_imagenet_schedule("fixed")
    assert list(f.milestones) == paper.figure(4)["lr_drops_read_off_approx_iter"]
    assert get_imagenet_schedule(iterations=600).milestones == (150, 300)
    with pytest.raises(UserError, match="unknown ImageNet schedule"):
        get_imagenet_schedule("quick")


def test_plateau_rule_drops_after_patience_evaluations_without_improvement():
    r = PlateauRule(patience=2, threshold=0.5)
    seq = [50.0, 40.0, 39.8, 39.9, 30.0, 29.9, 29.8, 29.7, 29.6]
    drops = [r.update(v) for v in seq]
    # 39.8 and 39.9 do not beat 40 by more than 0.5: drop; 29.9, 29.8 do not beat 30: drop
    # again; 29.7, 29.6 neither: a third drop
    assert drops == [False, False, False, True, False, False, True, False, True]
    assert r.drops == 3 and r.best == 30.0


# ---------------------------------------------------------------------------- files
def test_index_of_the_fixture(mini_imagenet):
    idx = build_index(mini_imagenet)
    assert len(idx.classes) == 10 and len(idx.train) == 80 and len(idx.val) == 20
    assert idx.train[0] == ("train/airplane/0000.JPEG", 0)
    assert {lab for _, lab in idx.val} == set(range(10)) and len(idx.digest) == 64
    with Image.open(Path(idx.root) / idx.train[0][0]) as im:
        assert min(im.size) == 256
    assert build_index(mini_imagenet).digest == idx.digest


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_bad_layouts_are_one_line_errors(mini_imagenet, tmp_path, capsys):
    no_val = _copy(mini_imagenet, tmp_path / "a")
    shutil.rmtree(no_val / "val")
    no_train = _copy(mini_imagenet, tmp_path / "b")
    shutil.rmtree(no_train / "train")
    differ = _copy(mini_imagenet, tmp_path / "c")
    (differ / "val" / "ship").rename(differ / "val" / "boat")
    cases = [(no_val, "has no val/ folder"), (no_train, "has no train/ folder"),
             (differ, "class folders differ between train/ and val/"),
             (tmp_path / "missing", "no ImageNet folder")]
    for path, needle in cases:
        with pytest.raises(UserError, match=needle):
            build_index(path)
        code, _, err = run_main(["train", "--arch", "resnet18", "--dataset", "imagenet", "--data-dir", str(path),
                                 "--schedule", "smoke", "--out", str(tmp_path / "runs"), "--device", "cpu"], capsys)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert "only in train/: ship" in str(pytest.raises(UserError, build_index, differ).value)


@pytest.mark.parametrize("argv,needle", [
    (["--arch", "resnet20"], "is a CIFAR-10 net"),
    (["--arch", "resnet18", "--schedule", "quick"], "unknown ImageNet schedule"),
    (["--arch", "resnet18", "--workers", "-1"], "--workers must be >= 0"),
])
def test_bad_imagenet_options(argv, needle, tmp_path, capsys):
    code, _, err = run_main(["train", "--dataset", "imagenet", "--data-dir", str(tmp_path), *argv], capsys)
    assert code == 2 and needle in err and "Traceback" not in err


def test_unknown_dataset(tmp_path, capsys):
    code, _, err = run_main(["train", "--arch", "resnet18", "--dataset", "svhn", "--data-dir", str(tmp_path)], capsys)
    assert code == 2 and "unknown dataset 'svhn'" in err


def test_unreadable_images_are_skipped_counted_and_warned(mini_imagenet, tmp_path):
    root = _copy(mini_imagenet, tmp_path / "d")
    (root / "train" / "cat" / "0003.JPEG").write_bytes(b"not a jpeg at all")
    (root / "train" / "dog" / "9999.JPEG").write_bytes(b"")
    idx = build_index(root)
    ds = ImageFolderSplit(idx, "train", CenterView(24, 28))
    bad = [i for i in range(len(ds)) if isinstance(ds[i], BadImage)]
    assert [idx.train[i][0] for i in bad] == ["train/cat/0003.JPEG", "train/dog/9999.JPEG"]
    seen, skipped = 0, []
    for b in make_loader(ds, 0, False, batch_size=16):
        seen += len(b["y"])
        skipped += b["bad"]
    assert seen == len(ds) - 2 and [p for p, _ in skipped] == [str(root / "train/cat/0003.JPEG"),
                                                              str(root / "train/dog/9999.JPEG")]
    items = [ds[bad[0]], ds[0]]
    b = collate(items)
    assert b["x"].shape == (1, 3, 24, 24) and b["y"].tolist() == [idx.train[0][1]] and len(b["bad"]) == 1
    from resnet_repro.data.imagenet import warn_bad

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        warn_bad(b["bad"])
    assert "skipped unreadable image" in str(w[0].message) and "0003.JPEG" in str(w[0].message)


# ---------------------------------------------------------------------------- the whole path
def test_resnet34_smoke_training_then_10crop_and_multiscale(mini_imagenet, tmp_path, capsys):
    """The acceptance commands: train ResNet-34 (option A) with --schedule smoke on real
    photos, then evaluate the run with 10-crop and multi-scale testing."""
    out = tmp_path / "runs"
    code, stdout, err = run_main(["train", "--arch", "resnet34", "--shortcut", "A", "--dataset", "imagenet",
                                  "--data-dir", str(mini_imagenet), "--schedule", "smoke", "--out", str(out),
                                  "--device", "cpu", "--precision", "fp32", "--workers", "1"], capsys)
    assert code == 0, err
    run = out / "resnet34-A-smoke-s0"
    conf = json.loads((run / "config.json").read_text())
    c = conf["config"]
    assert (c["dataset"], c["arch"], c["shortcut"], c["batch_size"], c["iterations"]) == ("imagenet", "resnet34",
                                                                                         "A", 8, 8)
    assert c["imagenet"]["crop"] == 64 and c["imagenet"]["scale"] == [73, 137] and c["lr_milestones"] == [2, 4]
    assert conf["provenance"]["data_stats"]["images"] == 80 and conf["provenance"]["world_size"] == 1
    evs = runs.read_metrics(run)
    assert [e["event"] for e in evs if e["event"] != "train"] == ["start", "eval", "eval", "end"]
    trains = [e for e in evs if e["event"] == "train"]
    assert [e["iteration"] for e in trains] == [2, 4, 6, 8]
    assert [e["lr"] for e in trains] == [0.1, 0.01, 0.001, 0.001]
    evals = [e for e in evs if e["event"] == "eval"]
    assert all(e["val_images"] == 20 and 0 <= e["val_top5_error"] <= e["val_error"] <= 100 for e in evals)
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "complete" and s["final_val_error"] == evals[-1]["val_error"]
    assert s["final_test_error"] is None and s["skipped_images"] == 0
    assert "val err" in stdout and "top-5" in stdout

    code, stdout, err = run_main(["evaluate", "--run-dir", str(run), "--protocol", "10crop", "--data-dir",
                                  str(mini_imagenet), "--device", "cpu", "--workers", "1"], capsys)
    assert code == 0, err
    r = json.loads((run / "eval-10crop.json").read_text())
    assert r["protocol"] == "10crop" and r["images"] == 20 and r["classes"] == 10
    assert 0 <= r["top5_error"] <= r["top1_error"] <= 100
    assert r["sizes"] == {"crop": 64, "test_short": 73, "multiscale": [64, 73, 110, 137, 183]}
    assert r["provenance"]["run"] == str(run) and len(r["provenance"]["sha256"]) == 64
    assert "10crop: top-1 error" in stdout

    res = tmp_path / "ms.json"
    code, stdout, err = run_main(["evaluate", "--run", str(run), "--protocol", "multiscale", "--data-dir",  # old name
                                  str(mini_imagenet), "--device", "cpu", "--workers", "0", "--images", "5",
                                  "--out", str(res)], capsys)
    assert code == 0, err
    m = json.loads(res.read_text())
    assert m["protocol"] == "multiscale" and m["images"] == 5 and m["provenance"]["val_subset"] == 5
    assert not (run / "eval-multiscale.json").exists()
