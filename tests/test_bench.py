"""The speed benchmark and its fast paths: the benchmark times the real training step,
writes valid JSON with positive figures, and activation checkpointing changes memory
only, never the numbers. No timing thresholds are asserted anywhere."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from resnet_repro import bench
from resnet_repro.cli import main
from resnet_repro.errors import UserError
from resnet_repro.models import build, count_params
from resnet_repro.train import checkpoint
from resnet_repro.train.config import make_config
from resnet_repro.train.loop import fit, prepare_data, uses_cuda_graphs


def run_main(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def positive_numbers(obj):
    """Every number in a nested JSON object."""
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from positive_numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from positive_numbers(v)


def test_bench_cli_writes_the_table_as_json(tmp_path, capsys):
    out = tmp_path / "b" / "bench.json"
    code, stdout, err = run_main(
        ["bench", "--synthetic", "--synthetic-images", "1000", "--device", "cpu", "--models", "resnet8", "--memory", "resnet8:ours",
         "--rounds", "2", "--iters", "1", "--seconds", "0", "--threads", "1", "--workers", "1",
         "--no-fast-paths", "--out", str(out)], capsys)
    assert code == 0, err
    assert "Speed: ours vs the usual pipeline" in stdout and "Projection" in stdout
    res = json.loads(out.read_text())
    assert set(res) >= {"meta", "rows", "fast_paths", "projection", "memory", "check"}
    assert res["meta"]["baseline_workers"] == 1 and res["meta"]["threads"] == 1 and res["meta"]["data"] == "synthetic"
    sections = {(r["section"], r["model"]) for r in res["rows"]}
    assert sections == {(s, "ResNet-8") for s in ("train", "train FLOP/s", "eval", "eval FLOP/s", "peak RSS")}
    for r in res["rows"]:
        if r["section"] == "peak RSS":  # only our path was probed
            assert r["ours"] > 0 and r["baseline"] is None and r["ratio"] is None
            continue
        assert r["ours"] > 0 and r["baseline"] > 0
        assert r["ratio"] == pytest.approx(r["ours"] / r["baseline"], rel=1e-2)
    train = next(r for r in res["rows"] if r["section"] == "train")
    flops = next(r for r in res["rows"] if r["section"] == "train FLOP/s")
    assert train["batch"] == 128 and train["input"] == 32 and train["mult_adds"] > 0
    assert flops["ours"] == pytest.approx(train["ours"] * train["mult_adds"] * 6 / 1e9, rel=1e-2)
    raw = res["raw"][0]
    assert len(raw["train"]["ours"]["windows"]) == 2 and len(raw["train"]["baseline"]["windows"]) == 2
    assert [m["path"] for m in res["memory"]] == ["ours"]
    for m in res["memory"]:
        assert m["peak_rss_mb"] > 0 and m["rss_before_train_mb"] > 0 and m["seconds_per_step"] > 0
        assert m["peak_rss_mb"] >= m["rss_before_train_mb"]
    (proj,) = res["projection"]
    assert proj["arch"] == "resnet8" and proj["iterations"] == 64000 and proj["ours_hours"] > 0
    assert all(x >= 0 for x in positive_numbers(res))
    assert not any(isinstance(x, float) and math.isnan(x) for x in positive_numbers(res))


@pytest.mark.slow
def test_memory_probes_of_both_paths_and_checkpointing():
    opts = bench.BenchOptions(synthetic=True, synthetic_train=1000, memory_steps=2, threads=1, workers=1)
    ours = bench.run_probe("resnet14", "ours", False, opts)
    base = bench.run_probe("resnet14", "baseline", False, opts)
    ck = bench.run_probe("resnet14", "ours", True, opts)
    for p in (ours, base, ck):
        assert p["peak_rss_mb"] >= p["train_peak_rss_mb"] > 0 and p["seconds_per_step"] > 0
    # checkpointing holds fewer activations: a smaller rise above the pre-training RSS
    assert ck["train_peak_rss_mb"] - ck["rss_before_train_mb"] < ours["train_peak_rss_mb"] - ours["rss_before_train_mb"]


def test_bench_refuses_bad_memory_items_and_check_on_random_images(capsys, tmp_path):
    code, _, err = run_main(["bench", "--synthetic", "--memory", "resnet20:fast", "--out", str(tmp_path / "x.json")],
                            capsys)
    assert code == 2 and "bad --memory item" in err
    code, _, err = run_main(["bench", "--synthetic", "--models", "resnet21", "--memory", "none",
                             "--out", str(tmp_path / "x.json")], capsys)
    assert code == 2 and "not 6n+2" in err
    with pytest.raises(UserError, match="--check needs CIFAR-10"):
        bench.consistency_check(bench.BenchOptions(synthetic=True), lambda m: None)


def test_ours_is_the_training_loop(tiny_tree, tmp_path):
    """The benchmark's path and ``fit`` make exactly the same weights after k iterations."""
    cfg = make_config("resnet8", str(tiny_tree), iterations=20, batch_size=16, precision="bf16", device="cpu")
    fit(cfg, tmp_path / "r", stop_after=5)
    state = checkpoint.load_latest(tmp_path / "r" / "checkpoints")
    ours = bench.OursTrain(cfg, prepare_data(cfg))
    for _ in range(5):
        ours.step()
    got = ours.model.state_dict()
    assert state["iteration"] == 5
    assert all(torch.equal(got[k], state["model"][k]) for k in got)


def test_fast_path_variants_and_alternation():
    opts = bench.BenchOptions(synthetic=True, synthetic_train=512, rounds=2, iters=1,
                              seconds=0.0, ablation_model="resnet8")
    res = bench.measure_fast_paths(opts, lambda m: None)
    keys = {(v["precision"], v["channels_last"], v["compile"]) for v in res}
    default = res[0]
    assert default["channels_last"] and not default["compile"]
    assert ("fp32", False, False) in keys and (default["precision"], False, False) in keys
    assert len(keys) == len(res)  # duplicates measured once
    assert default["vs_default"] == 1.0
    for v in res:
        assert v["images_per_s"] > 0 and len(v["windows"]) == 2


def test_projection_is_the_paper_schedule_arithmetic():
    rows = [bench._row("train", "ResNet-20", "images/s", 1000.0, 250.0, arch="resnet20"),
            bench._row("eval", "ResNet-20", "images/s", 3000.0, 1000.0, arch="resnet20"),
            bench._row("train", "ResNet-50", "images/s", 10.0, 5.0, arch="resnet50"),
            bench._row("eval", "ResNet-50", "images/s", 30.0, 10.0, arch="resnet50")]
    (p,) = bench.projection(rows)  # ImageNet nets are not projected onto the CIFAR schedule
    evals = 64000 // 1000
    assert p["evaluations"] == evals
    assert p["ours_hours"] == pytest.approx((64000 * 128 / 1000 + evals * 15000 / 3000) / 3600, abs=0.01)
    assert p["baseline_hours"] == pytest.approx((64000 * 128 / 250 + evals * 15000 / 1000) / 3600, abs=0.01)


def test_channel_stats_match_numpy():
    x = np.random.default_rng(0).integers(0, 256, (5000, 8, 8, 3), dtype=np.uint8)
    mean, std = bench.channel_stats(x)
    f = x.reshape(-1, 3) / 255.0
    assert np.allclose(mean, f.mean(0)) and np.allclose(std, f.std(0))


def test_cuda_graphs_never_on_cpu(tiny_tree):
    cfg = make_config("resnet8", str(tiny_tree), compile=True, device="cpu")
    assert not uses_cuda_graphs(cfg)
    assert not uses_cuda_graphs(cfg.model_copy(update={"device": "cuda", "compile": False}))
    assert uses_cuda_graphs(cfg.model_copy(update={"device": "cuda"}))
    assert not uses_cuda_graphs(cfg.model_copy(update={"device": "cuda", "arch": "resnet50"}))


# ---------------------------------------------------------------------------- activation checkpointing
@pytest.mark.parametrize("arch,shortcut", [("resnet14", "A"), ("resnet8", "B"), ("plain8", None)])
def test_checkpointing_changes_memory_not_numbers(arch, shortcut):
    torch.manual_seed(0)
    a = build(arch, shortcut)
    b = build(arch, shortcut)
    b.load_state_dict(a.state_dict())
    b.checkpoint_activations = True
    assert count_params(a) == count_params(b)
    x = torch.randn(6, 3, 32, 32)
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    for m in (a, b):
        m.train()
        F.cross_entropy(m(x), y).backward()
    for (n, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), n
    sa, sb = a.state_dict(), b.state_dict()  # BN running stats updated once, not twice
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert int(sb["bn1.num_batches_tracked"]) == 1 and int(sb["layer1.0.bn1.num_batches_tracked"]) == 1
    a.eval(), b.eval()
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_checkpointing_saves_activations():
    """Fewer tensors kept for the backward pass (counted with saved-tensor hooks)."""
    def saved_bytes(model):
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        x = torch.randn(4, 3, 32, 32)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model(x).sum()
        loss.backward()
        return total

    torch.manual_seed(0)
    m = build("resnet56")
    full = saved_bytes(m)
    m.checkpoint_activations = True
    ck = saved_bytes(m)
    assert ck < full / 3


def _comparable(run_dir):
    from resnet_repro import runs

    return [{k: v for k, v in ev.items() if k not in ("wall_s", "images_per_s", "train_s")}
            for ev in runs.read_metrics(run_dir) if ev["event"] not in ("start", "resume")]


def test_fit_with_checkpointing_matches_and_may_resume_without(tiny_tree, tmp_path):
    cfg = make_config("resnet8", str(tiny_tree), iterations=12, batch_size=16, precision="fp32", device="cpu")
    ck = cfg.model_copy(update={"checkpoint_activations": True})
    fit(cfg, tmp_path / "plain")
    fit(ck, tmp_path / "ck")
    assert _comparable(tmp_path / "ck") == _comparable(tmp_path / "plain")
    fit(cfg, tmp_path / "mixed", stop_after=5)  # memory only: a resume may switch it on
    assert fit(ck, tmp_path / "mixed", resume=True)["status"] == "complete"
    assert _comparable(tmp_path / "mixed") == _comparable(tmp_path / "plain")
    wa = checkpoint.load_verified(tmp_path / "plain" / "checkpoints" / "final.pt", None)["model"]
    wb = checkpoint.load_verified(tmp_path / "mixed" / "checkpoints" / "final.pt", None)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_checkpointing_refused_for_imagenet_nets(tiny_tree):
    from resnet_repro.train.loop import build_model

    cfg = make_config("resnet8", str(tiny_tree), device="cpu", checkpoint_activations=True)
    with pytest.raises(UserError, match="CIFAR nets only"):
        build_model(cfg.model_copy(update={"arch": "resnet18", "dataset": "imagenet"}))
