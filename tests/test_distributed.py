"""Data-parallel training (DDP through torchrun): the batch shares of the ranks, the
evaluation shards, and a real 2-process gloo run on the CPU that matches a 1-process run
with the same global batch, also when resumed under DDP from a 1-process checkpoint.

Why the runs agree: both see the same images per iteration (ShardedBatchSampler), the
same augmentation per image (seeded by the image), the same init (seeded; DDP broadcasts
rank 0's), and DDP averages the per-rank mean-loss gradients, which equals the gradient
of the mean loss over the global batch. Batch normalisation is the one place where
per-process batches would differ, so the runs use SyncBN: torch's SyncBatchNorm refuses
CPU tensors in this torch version, and the CPU run uses CpuSyncBatchNorm (the same
statistics over all ranks by gloo all-reduces).

What remains is the order of the sums (a batch of 8 in one process, 4 + 4 added by the
all-reduce in two), and how far that moves the weights is not a property of this code:
it is the rounding unit times how much 6 SGD steps amplify a rounding difference, and
the kernels (so the rounding) differ between CPUs. In float32 (unit 2**-24 = 6e-8) the
largest relative difference of a weight or BN statistic (``_max_rel_diff``) is 1.1e-5
with oneDNN's AVX-512 kernels on this AMD EPYC and 3.0e-3 with its AVX2 ones (an Intel
Xeon's report: a BN running mean -0.3348 vs -0.3349; ``ONEDNN_MAX_CPU_ISA=AVX2``
reproduces it here): an amplification of up to 5e4 rounding units, so no float32
tolerance that still means something holds on every x86 CPU. The comparison therefore
runs in float64 (``torch.set_default_dtype`` in both runs; every op of the ImageNet loop
follows the default dtype). Its unit is 2**-53 = 1.1e-16, so the same amplification
leaves about 5e4 x 1.1e-16 = 6e-12; measured: 4.2e-14 to 5.0e-14 with oneDNN limited
to AVX-512, AVX2 or SSE4.1, ATen's kernels to AVX2 or none, MKL to AVX2. ``FP64_RTOL`` =
1e-8 is 1,600 times that and 2e5 times the measurements, while a real fault moves the
weights by 9 orders of magnitude more: per-process BN statistics (``sync_bn`` off under
torchrun) give a largest relative difference of 12.5, a doubled step (gradients summed
instead of averaged) 28.6. The logged
training and val errors count wrong argmaxes; they agree exactly unless two logits of an
image lie within ~1e-12 of each other, which float64 makes vanishingly unlikely.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import default_dtype
from resnet_repro import runcheck, runs
from resnet_repro.cli import main
from resnet_repro.data.imagenet import build_mini_imagenet
from resnet_repro.errors import UserError
from resnet_repro.train import checkpoint
from resnet_repro.train.config import make_config
from resnet_repro.train.distributed import (
    CpuSyncBatchNorm,
    DistContext,
    ShardedBatchSampler,
    convert_sync_bn,
    eval_shard,
    per_rank_batch,
    run_on_main,
)
from resnet_repro.train.imagenet_loop import fit_imagenet


@pytest.fixture(scope="session")
def five_classes(shared_cifar, tmp_path_factory) -> Path:
    """5 classes x (8 train + 3 val) real photos: 40 training, 15 (odd) val images."""
    return build_mini_imagenet(shared_cifar, tmp_path_factory.mktemp("ddp") / "mini", 8, 3, classes=5)


def tiny_cfg(data: Path, **kw):
    """An ImageNet-loop config on a small net (the 8-layer residual net, 32-px crops) so
    that two processes train in seconds; everything else is the ImageNet code path."""
    cfg = make_config("resnet18", str(data), dataset="imagenet", iterations=6, batch_size=8, precision="fp32",
                      device="cpu", workers=0, sync_bn=True, threads=1, channels_last=False)
    s = cfg.imagenet.model_copy(update={"crop": 32, "scale": (36, 48), "test_short": 36,
                                        "multiscale": (32, 36, 48), "mean_images": 40})
    return cfg.model_copy(update={"arch": "resnet8", "shortcut": "A", "imagenet": s, "eval_every": 3,
                                  "log_every": 1, **kw})


# ---------------------------------------------------------------------------- units
@pytest.mark.parametrize("n,batch,world", [(37, 8, 2), (37, 8, 4), (40, 8, 2), (9, 3, 3)])
def test_rank_shares_make_up_the_single_process_batch(n, batch, world):
    single = ShardedBatchSampler(n, batch, DistContext(), seed=5, start=0, end=3 * (n // batch) + 1)
    shares = [ShardedBatchSampler(n, batch, DistContext(r, world, r, "gloo"), 5, 0, single.end) for r in range(world)]
    assert all(s.iters_per_epoch == n // batch for s in shares)
    for it, keys in enumerate(single):
        parts = [s.keys(it) for s in shares]
        assert all(len(p) == batch // world for p in parts)
        assert sorted(k for p in parts for k in p) == sorted(keys)  # same images, same epochs
    # one pass (epoch) visits distinct images; the next epoch has another order
    e0 = [k for it in range(single.iters_per_epoch) for k in single.keys(it)]
    assert len({i for i, _ in e0}) == len(e0) == (n // batch) * batch and {e for _, e in e0} == {0}
    e1 = [i for it in range(single.iters_per_epoch, 2 * single.iters_per_epoch) for i, _ in single.keys(it)]
    assert e1 != [i for i, _ in e0]
    # a sampler started mid-run yields exactly the remaining iterations
    late = ShardedBatchSampler(n, batch, DistContext(), 5, 2, single.end)
    assert list(late) == [single.keys(it) for it in range(2, single.end)]


def test_eval_shards_count_every_image_once_without_padding():
    for n, w in [(15, 2), (10, 3), (2, 4)]:
        shards = [eval_shard(n, DistContext(r, w, r, "gloo")) for r in range(w)]
        flat = [i for s in shards for i in s]
        assert sorted(flat) == list(range(n))


def test_batch_must_divide_among_processes(tmp_path, monkeypatch, capsys):
    assert per_rank_batch(256, 8) == 32
    with pytest.raises(UserError, match="not divisible by the 3 processes"):
        per_rank_batch(256, 3)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(SystemExit) as exc:
        main(["train", "--arch", "resnet18", "--dataset", "imagenet", "--data-dir", str(tmp_path),
              "--schedule", "smoke", "--batch-size", "7", "--device", "cpu", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--batch-size 7 is not divisible by the 2 processes" in err
    assert len(err.strip().splitlines()) == 1


def test_cifar_training_refuses_torchrun(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit) as exc:
        main(["train", "--arch", "resnet8", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r")])
    assert exc.value.code == 2 and "--dataset imagenet" in capsys.readouterr().err


def test_run_on_main_passes_results_and_user_errors():
    assert run_on_main(DistContext(), lambda: 41 + 1) == 42

    def bad():
        raise UserError("one line")

    with pytest.raises(UserError, match="one line"):
        run_on_main(DistContext(), bad)


def test_cpu_sync_bn_is_plain_bn_in_one_process():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    ref = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    ref.load_state_dict(net.state_dict())
    conv = convert_sync_bn(net, "cpu")
    assert isinstance(conv[1], CpuSyncBatchNorm) and list(conv.state_dict()) == list(ref.state_dict())
    x = torch.randn(5, 3, 8, 8)
    assert torch.allclose(conv(x), ref(x))
    assert torch.allclose(conv[1].running_var, ref[1].running_var)


# ---------------------------------------------------------------------------- 2 processes
FP64_RTOL = 1e-8  # see the module docstring: 1,600 x what summation order can do in float64
FP64_ENTRY = """import sys

import torch

torch.set_default_dtype(torch.float64)  # the whole ImageNet loop follows it (the 2-process check)
from resnet_repro.cli import main

main(sys.argv[1:])
"""


def _torchrun(args: list[str], timeout: int = 120, entry: Path | None = None) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=2 -m resnet_repro ARGS`` (or the script ``entry``)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    target = [str(entry)] if entry is not None else ["-m", "resnet_repro"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *target, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def _final(run: Path) -> dict:
    return checkpoint.load_verified(run / "checkpoints" / "final.pt", None)["model"]


def _events(run: Path, kind: str) -> list[dict]:
    return [e for e in runs.read_metrics(run) if e["event"] == kind]


def _max_rel_diff(a: dict, b: dict) -> float:
    """The largest ``|a - b| / max(|a|, 1e-3)`` over all float entries of two state dicts
    (counters, such as ``num_batches_tracked``, must be equal)."""
    worst = 0.0
    for k in a:
        if not a[k].is_floating_point():
            assert torch.equal(a[k], b[k]), k
            continue
        x, y = a[k].double(), b[k].double()
        worst = max(worst, ((x - y).abs() / x.abs().clamp_min(1e-3)).max().item())
    return worst


def test_two_process_gloo_run_matches_one_process_and_resumes(five_classes, tmp_path):
    cfg = tiny_cfg(five_classes)
    with default_dtype(torch.float64):
        single = fit_imagenet(cfg, tmp_path / "single")
    assert single["status"] == "complete"
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps({"config": cfg.model_dump(mode="json")}))
    entry = tmp_path / "fp64_entry.py"
    entry.write_text(FP64_ENTRY)

    res = _torchrun(["train", "--config", str(cfg_file), "--out", str(tmp_path), "--name", "ddp"], entry=entry)
    assert res.returncode == 0, res.stderr[-3000:]
    ddp = tmp_path / "ddp"
    start = _events(ddp, "start")[0]
    assert (start["world_size"], start["backend"]) == (2, "gloo")
    # each of the 15 val images (odd: padding would show as 16) counted exactly once
    assert [e["val_images"] for e in _events(ddp, "eval")] == [15, 15]

    a, b = _final(tmp_path / "single"), _final(ddp)
    assert list(a) == list(b) and a["conv1.weight"].dtype == b["conv1.weight"].dtype == torch.float64
    assert _max_rel_diff(a, b) < FP64_RTOL
    t1, t2 = _events(tmp_path / "single", "train"), _events(ddp, "train")
    assert [e["iteration"] for e in t1] == [e["iteration"] for e in t2] == list(range(1, 7))
    assert [e["train_error"] for e in t1] == [e["train_error"] for e in t2]
    assert torch.allclose(torch.tensor([e["train_loss"] for e in t1]), torch.tensor([e["train_loss"] for e in t2]),
                          rtol=FP64_RTOL, atol=0.0)
    v1, v2 = _events(tmp_path / "single", "eval"), _events(ddp, "eval")
    assert [(e["val_error"], e["val_top5_error"]) for e in v1] == [(e["val_error"], e["val_top5_error"]) for e in v2]
    # only rank 0 wrote: one start event, one final checkpoint, no stray files
    assert len(_events(ddp, "start")) == 1 and len(_events(ddp, "end")) == 1

    # interrupted in one process, resumed under DDP in two: the same run
    with default_dtype(torch.float64):
        cut = fit_imagenet(cfg, tmp_path / "cut", stop_after=4)
    assert cut["status"] == "interrupted" and cut["iterations_done"] == 4
    res = _torchrun(["train", "--config", str(cfg_file), "--out", str(tmp_path), "--name", "cut", "--resume"],
                    entry=entry)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _max_rel_diff(a, _final(tmp_path / "cut")) < FP64_RTOL
    assert [e["train_error"] for e in _events(tmp_path / "cut", "train")] == [e["train_error"] for e in t1]
    assert [e["event"] for e in runs.read_metrics(tmp_path / "cut") if e["event"] in ("start", "resume", "end")] == [
        "start", "resume", "end"]
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["world_size"] == 2
    assert runcheck.check_files(ddp) == runcheck.check_files(tmp_path / "cut") == []


def test_plateau_rule_in_the_loop_is_logged_and_survives_resume(five_classes, tmp_path):
    """The paper's rule in one process: a threshold no evaluation can beat makes every
    evaluation after the first a "no improvement", so with patience 1 the lr drops at
    the 2nd and 3rd evaluations; a run cut between them resumes to the same log."""
    base = tiny_cfg(five_classes, eval_every=2, sync_bn=False)
    s = base.imagenet.model_copy(update={"lr_rule": "plateau", "plateau_patience": 1, "plateau_threshold": 100.0})
    cfg = base.model_copy(update={"imagenet": s, "lr_milestones": []})
    fit_imagenet(cfg, tmp_path / "p")
    lrs = {e["iteration"]: e["lr"] for e in _events(tmp_path / "p", "train")}
    assert lrs == {1: 0.1, 2: 0.1, 3: 0.1, 4: 0.1, 5: 0.01, 6: 0.01}
    drops = _events(tmp_path / "p", "lr_drop")
    assert [(e["iteration"], e["lr"]) for e in drops] == [(4, 0.01), (6, 0.001)]
    assert "for 1 evaluations" in drops[0]["reason"]
    plateaus = [e["plateau"] for e in _events(tmp_path / "p", "eval")]
    assert [(p["bad"], p["drops"]) for p in plateaus] == [(0, 0), (0, 1), (0, 2)]
    assert json.loads((tmp_path / "p" / "summary.json").read_text())["lr_drops"] == 2
    assert runcheck.check_files(tmp_path / "p") == []  # the check's plateau rule is the loop's

    fit_imagenet(cfg, tmp_path / "q", stop_after=5)
    fit_imagenet(cfg, tmp_path / "q", resume=True)

    def strip(run):
        return [{k: v for k, v in e.items() if k not in ("wall_s", "images_per_s")}
                for e in runs.read_metrics(run) if e["event"] not in ("start", "resume")]

    assert strip(tmp_path / "q") == strip(tmp_path / "p")


def test_imagenet_resume_checks_the_log_digest_and_the_net(five_classes, tmp_path):
    """A resume keeps the log only if its bytes up to the checkpoint are the ones the
    checkpoint recorded (as the CIFAR loop does), and refuses another net's checkpoint."""
    cfg = tiny_cfg(five_classes, sync_bn=False)
    fit_imagenet(cfg, tmp_path / "r", stop_after=4)
    log = tmp_path / "r" / "metrics.jsonl"
    good = log.read_bytes()
    log.write_bytes(good.replace(b'"event": "train"', b'"event": "TRAIN"', 1))
    with pytest.raises(UserError, match="metrics.jsonl does not match the checkpoint at iteration 4"):
        fit_imagenet(cfg, tmp_path / "r", resume=True)
    log.write_bytes(good)
    state = checkpoint.load_latest(tmp_path / "r" / "checkpoints")
    assert state["metrics_bytes"] <= len(good) and len(state["metrics_sha256"]) == 64
    other = cfg.model_copy(update={"shortcut": "B"})
    cfg_file = tmp_path / "r" / "config.json"
    stored = json.loads(cfg_file.read_text())
    stored["config"]["shortcut"] = "B"  # the directory now claims option B; its checkpoint is option A
    cfg_file.write_text(json.dumps(stored))
    with pytest.raises(UserError, match="is for resnet8 with shortcut A and 5 classes, but this run is resnet8 "
                                        "with shortcut B and 5 classes"):
        fit_imagenet(other, tmp_path / "r", resume=True)


# ---------------------------------------------------------------------------- options torchrun lets through
def test_no_documented_option_is_taken_by_torchrun():
    """torchrun's argparse reads every ``--x`` after ``-m resnet_repro`` too: a prefix of
    two of its options (``--run`` of ``--run-path``/``--run_path``) stops it with
    "ambiguous option" before our command runs. No documented option of ours may be one."""
    import contextlib
    import io

    from torch.distributed.run import get_args_parser
    from typer.main import get_command

    from resnet_repro.cli import app

    parser = get_args_parser()
    bad = []
    for name, command in get_command(app).commands.items():
        for param in command.params:
            if getattr(param, "hidden", False):
                continue  # old spellings kept for plain use, not documented
            for opt in [o for o in param.opts + param.secondary_opts if o.startswith("--")]:
                err = io.StringIO()
                with contextlib.redirect_stderr(err):
                    try:
                        parser.parse_args(["--nproc_per_node", "2", "-m", "resnet_repro", name, opt, "x"])
                    except SystemExit:
                        bad.append(f"{name} {opt}: {err.getvalue().strip().splitlines()[-1]}")
    assert bad == []
    with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit):  # why evaluate's is --run-dir
        parser.parse_args(["-m", "resnet_repro", "evaluate", "--run", "x"])


def test_torchrun_evaluate_run_dir_counts_every_val_image_once(five_classes, tmp_path):
    cfg = tiny_cfg(five_classes, sync_bn=False)
    fit_imagenet(cfg, tmp_path / "r")
    res = _torchrun(["evaluate", "--run-dir", str(tmp_path / "r"), "--protocol", "center", "--data-dir",
                     str(five_classes), "--device", "cpu", "--workers", "0"])
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads((tmp_path / "r" / "eval-center.json").read_text())
    assert r["images"] == 15 and r["protocol"] == "center" and 0 <= r["top5_error"] <= r["top1_error"] <= 100
