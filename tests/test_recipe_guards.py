"""The paper's recipe guarded: a run whose data, split or schedule differs from what a
table's caption states is left out with a warning at every length (custom ones too)."""

from __future__ import annotations

import warnings

import pytest

from resnet_repro import runcheck
from resnet_repro.report.bench_reports import write_synthetic_run
from resnet_repro.report.tables import get_table


def table6(root):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = get_table(6, root)
    return t, [str(w.message) for w in caught]


def test_a_custom_length_run_on_all_50k_images_is_left_out_like_a_quick_one(tmp_path):
    c = tmp_path / "cifar10"
    ok = write_synthetic_run(c / "resnet20-A-it800-s0", "resnet20", 0, iterations=800, final_test_error=11.0)
    all50k = write_synthetic_run(c / "resnet20-A-it800-all-s1", "resnet20", 1, iterations=800, train_on="all",
                                 final_test_error=9.0)
    quick50k = write_synthetic_run(c / "resnet32-A-quick-all-s0", "resnet32", 0, train_on="all", final_test_error=8.0)
    assert runcheck.check_files(ok) == runcheck.check_files(all50k) == []  # they agree with themselves
    t, msgs = table6(tmp_path)
    for d in (all50k, quick50k):
        assert any(m.startswith(f"{d}: differs from cifar10-depth") and "train_on: 'all' there vs 'split'" in m
                   for m in msgs), msgs
    r20 = t.frame[t.frame["net"] == "ResNet-20"].iloc[0]
    assert (r20["n"], r20["our error (%)"], r20["schedule"]) == (1, "11.00", "custom")
    assert t.frame[t.frame["net"] == "ResNet-32"].iloc[0]["n"] == 0
    assert "45k/5k split" in t.caption and "custom (800 iterations)" in t.caption


# ---------------------------------------------------------------------------- leaving the recipe is said
def test_110_layers_without_warmup_warn_once_and_still_train(tiny_tree, tmp_path, capsys):
    from conftest import run_main

    code, out, err = run_main(["train", "--arch", "resnet110", "--warmup", "off", "--lr", "0.05", "--iterations", "4",
                               "--batch-size", "16", "--data-dir", str(tiny_tree), "--out", str(tmp_path),
                               "--precision", "fp32", "--device", "cpu", "--threads", "1"], capsys)
    assert code == 0, err
    warned = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert warned == ["warning: resnet110 trains without the paper's warm-up (--warmup off): lr 0.05 from the first "
                      "iteration, where the paper uses 0.01 until the training error is below 80% for 110 layers and "
                      "more (Sec. 4.2); such nets have been reported to diverge without it (1202 layers)"]
    start = " ".join(out.split("start ", 1)[1].split())  # the console wraps the line
    assert start.startswith(str(tmp_path)) and "lr 0.05 (no warm-up), /10 at 2, 3; batch 16" in start
    assert "complete" in out


def test_imagenet_batch_64_at_the_papers_lr_warns_and_scale_lr_is_explicit(tmp_path, capsys, monkeypatch):
    from conftest import run_main
    from resnet_repro.train import imagenet_loop

    seen = []

    def fake_fit(cfg, run_dir, resume=False, on_event=None, **kw):  # the run starts: its first event
        seen.append(cfg)
        on_event({"event": "start", "iteration": 0, "precision": "fp32", "precision_reason": "set explicitly",
                  "threads": 1, "device": "cpu", "train_images": 80, "val_images": 20, "test_images": 0})
        return {"status": "complete", "iterations_done": cfg.iterations, "final_train_error": None,
                "final_val_error": None, "final_test_error": None, "wall_s": 0.0, "images_per_s": None}

    monkeypatch.setattr(imagenet_loop, "fit_imagenet", fake_fit)
    base = ["train", "--arch", "resnet18", "--dataset", "imagenet", "--data-dir", str(tmp_path), "--out",
            str(tmp_path / "r"), "--device", "cpu", "--precision", "fp32", "--batch-size", "64"]
    code, out, err = run_main(base, capsys)
    assert code == 0, err
    assert [ln for ln in err.splitlines() if ln.startswith("warning:")] == [
        "warning: --batch-size 64 trains at lr 0.1, the paper's lr for batch 256; the linear-scaling rule gives "
        "0.025 for this batch: pass that as --lr, or --scale-lr"]
    assert "lr 0.1, /10 when val error plateaus (5 evaluations); batch 64" in " ".join(out.split())
    code, out, err = run_main([*base, "--scale-lr", "--name", "scaled"], capsys)
    assert code == 0 and "warning:" not in err
    assert seen[-1].lr == 0.025 and "lr 0.025," in " ".join(out.split())
    code, _, err = run_main([*base, "--lr", "0.025", "--name", "explicit"], capsys)
    assert code == 0 and "warning:" not in err and seen[-1].lr == 0.025


def test_cifar_scale_lr_scales_the_warmup_too(tiny_tree):
    from resnet_repro.train.config import make_config, recipe_warnings

    cfg = make_config("resnet110", str(tiny_tree), batch_size=64, scale_lr=True, device="cpu")
    assert (cfg.lr, cfg.warmup_lr, cfg.warmup) == (0.05, 0.005, True) and recipe_warnings(cfg) == []
    paper = make_config("resnet110", str(tiny_tree), device="cpu")
    assert (paper.lr, paper.warmup_lr, paper.batch_size) == (0.1, 0.01, 128) and recipe_warnings(paper) == []


# ---------------------------------------------------------------------------- options that would only show in a log
@pytest.mark.parametrize("extra, words", [
    (["--workers", "-3"], "--workers must be >= 0, got -3"),
    (["--workers", "2"], "--workers and --sync-bn are options of ImageNet training"),
    (["--sync-bn"], "--workers and --sync-bn are options of ImageNet training"),
])
def test_cifar_refuses_workers_and_sync_bn_in_one_line(tiny_tree, tmp_path, capsys, extra, words):
    from conftest import run_main

    code, out, err = run_main(["train", "--arch", "resnet8", "--data-dir", str(tiny_tree), "--out", str(tmp_path),
                               "--device", "cpu", *extra], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and words in lines[0] and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing was started


def test_evaluate_refuses_negative_workers(tmp_path, capsys):
    from conftest import run_main

    code, _, err = run_main(["evaluate", "--weights", str(tmp_path / "w.pt"), "--arch", "resnet18", "--data-dir",
                             str(tmp_path), "--workers", "-3"], capsys)
    assert code == 2 and err.strip().splitlines() == ["error: --workers must be >= 0, got -3"]
