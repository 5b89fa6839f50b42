"""The training loop: run-directory contents, exact resume, warm-up, divergence, and
refusals that protect existing runs. Runs a 6n+2 = 8-layer net on a tiny real image set."""

from __future__ import annotations

import json
import os

import pytest
import torch

from resnet_repro import runcheck, runs
from resnet_repro.errors import UserError
from resnet_repro.train import checkpoint
from resnet_repro.train.config import make_config
from resnet_repro.train.loop import BatchOrder, fit

TIMING = {"wall_s", "images_per_s", "train_s"}


def cfg_for(tree, **kw):
    base = dict(arch="resnet8", data_dir=str(tree), iterations=200, batch_size=16, precision="fp32", device="cpu")
    base.update(kw)
    return make_config(**base)


def comparable(run_dir):
    """metrics.jsonl without start/resume events and timing fields."""
    out = []
    for ev in runs.read_metrics(run_dir):
        if ev["event"] in ("start", "resume"):
            continue
        out.append({k: v for k, v in ev.items() if k not in TIMING})
    return out


def final_weights(run_dir):
    return checkpoint.load_verified(run_dir / "checkpoints" / "final.pt", None)["model"]


def test_run_directory_contents(tiny_tree, tmp_path):
    cfg = cfg_for(tiny_tree)
    assert (cfg.log_every, cfg.eval_every, cfg.lr_milestones) == (2, 12, [100, 150])
    s = fit(cfg, tmp_path / "r")
    assert s["status"] == "complete" and s["iterations_done"] == 200
    conf = json.loads((tmp_path / "r" / "config.json").read_text())
    assert conf["config"]["arch"] == "resnet8" and conf["config"]["shortcut"] == "A"
    assert len(conf["config"]["data_checksum"]) == 64
    for key in ("package_version", "torch_version", "hardware", "git_commit", "data_source_kind"):
        assert key in conf["provenance"]
    evs = runs.read_metrics(tmp_path / "r")
    trains = [e for e in evs if e["event"] == "train"]
    evals = [e for e in evs if e["event"] == "eval"]
    assert [e["iteration"] for e in trains] == list(range(2, 201, 2))
    assert [e["iteration"] for e in evals] == list(range(12, 200, 12)) + [200]
    assert {e["lr"] for e in trains if e["iteration"] <= 100} == {0.1}
    assert {e["lr"] for e in trains if 100 < e["iteration"] <= 150} == {0.01}
    assert {e["lr"] for e in trains if e["iteration"] > 150} == {0.001}
    assert all(0 <= e["val_error"] <= 100 and 0 <= e["test_error"] <= 100 for e in evals)
    assert s["final_test_error"] == evals[-1]["test_error"]
    # The class colours are easy: the net must learn them.
    assert evals[-1]["test_error"] < 50
    assert (tmp_path / "r" / "checkpoints" / "final.pt").is_file()
    assert not (tmp_path / "r" / ".lock").exists()


@pytest.mark.parametrize("stop_at", [7, 12, 101])
def test_resume_is_exact(tiny_tree, tmp_path, stop_at):
    cfg = cfg_for(tiny_tree)
    fit(cfg, tmp_path / "straight")
    s1 = fit(cfg, tmp_path / "cut", stop_after=stop_at)
    assert s1["status"] == "interrupted" and s1["iterations_done"] == stop_at
    s2 = fit(cfg, tmp_path / "cut", resume=True)
    assert s2["status"] == "complete"
    assert comparable(tmp_path / "cut") == comparable(tmp_path / "straight")
    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert runcheck.check_files(tmp_path / "cut") == runcheck.check_files(tmp_path / "straight") == []


def test_resume_is_exact_in_bf16(tiny_tree, tmp_path):
    cfg = cfg_for(tiny_tree, precision="bf16", iterations=40)
    fit(cfg, tmp_path / "straight")
    fit(cfg, tmp_path / "cut", stop_after=13)
    fit(cfg, tmp_path / "cut", resume=True)
    assert comparable(tmp_path / "cut") == comparable(tmp_path / "straight")


def test_two_interruptions_and_seed_changes_result(tiny_tree, tmp_path):
    cfg = cfg_for(tiny_tree, iterations=60)
    fit(cfg, tmp_path / "a")
    fit(cfg, tmp_path / "b", stop_after=9)
    fit(cfg, tmp_path / "b", resume=True, stop_after=31)
    assert runcheck.check_files(tmp_path / "b") == []  # interrupted: what it logged so far agrees
    fit(cfg, tmp_path / "b", resume=True)
    assert runcheck.check_files(tmp_path / "b") == []
    assert comparable(tmp_path / "a") == comparable(tmp_path / "b")
    fit(cfg_for(tiny_tree, iterations=60, seed=1), tmp_path / "c")
    assert comparable(tmp_path / "c") != comparable(tmp_path / "a")


def test_batch_order_visits_every_image_once_per_pass():
    order = BatchOrder(100, 16, seed=0, device=torch.device("cpu"))
    seen = torch.cat([order.indices(i) for i in range(25)])  # 400 images = 4 passes
    for p in range(4):
        assert sorted(seen[p * 100:(p + 1) * 100].tolist()) == list(range(100))
    assert torch.equal(order.indices(7), BatchOrder(100, 16, 0, torch.device("cpu")).indices(7))


def test_warmup_ends_on_threshold_and_is_logged(tiny_tree, tmp_path):
    cfg = cfg_for(tiny_tree, warmup="on", iterations=80)
    assert cfg.warmup and cfg.warmup_max_iterations == 10
    fit(cfg, tmp_path / "w")
    evs = runs.read_metrics(tmp_path / "w")
    ends = [e for e in evs if e["event"] == "warmup_end"]
    assert len(ends) == 1
    end = ends[0]["iteration"]
    assert end <= cfg.warmup_max_iterations
    lrs = {e["iteration"]: e["lr"] for e in evs if e["event"] == "train"}
    assert all(lr == 0.01 for i, lr in lrs.items() if i <= end)
    assert all(lr == 0.1 for i, lr in lrs.items() if end < i <= 40)
    assert runcheck.check_files(tmp_path / "w") == []  # the check's warm-up rule is the loop's


def test_warmup_always_ends_at_its_cap(tiny_tree, tmp_path):
    cfg = cfg_for(tiny_tree, warmup="on", iterations=80).model_copy(update={"warmup_until_train_error": -1.0})
    fit(cfg, tmp_path / "w")
    ends = [e for e in runs.read_metrics(tmp_path / "w") if e["event"] == "warmup_end"]
    assert [(e["iteration"], e["reason"]) for e in ends] == [(10, "cap_reached")]
    assert runcheck.check_files(tmp_path / "w") == []


def test_warmup_default_only_for_110_and_deeper(tiny_tree):
    assert not cfg_for(tiny_tree, arch="resnet56").warmup
    assert cfg_for(tiny_tree, arch="resnet110").warmup
    assert cfg_for(tiny_tree, arch="plain110").warmup


def test_divergence_stops_the_run(tiny_tree, tmp_path):
    cfg = cfg_for(tiny_tree, lr=1e30, iterations=40)
    s = fit(cfg, tmp_path / "d")
    assert s["status"] == "diverged" and s["iterations_done"] < 40
    assert "diverged" in s["message"] and "between iterations" in s["message"]
    end = runs.read_metrics(tmp_path / "d")[-1]
    assert end["event"] == "end" and end["status"] == "diverged"
    assert runcheck.check_files(tmp_path / "d") == []


def test_refuses_to_mix_configs_and_to_redo_runs(tiny_tree, tmp_path):
    cfg = cfg_for(tiny_tree, iterations=20)
    fit(cfg, tmp_path / "r", stop_after=5)
    before = (tmp_path / "r" / "metrics.jsonl").read_bytes()
    with pytest.raises(UserError, match="different config .*seed"):
        fit(cfg_for(tiny_tree, iterations=20, seed=3), tmp_path / "r", resume=True)
    with pytest.raises(UserError, match="unfinished run; add --resume"):
        fit(cfg, tmp_path / "r")
    assert (tmp_path / "r" / "metrics.jsonl").read_bytes() == before
    fit(cfg, tmp_path / "r", resume=True)
    with pytest.raises(UserError, match="already complete"):
        fit(cfg, tmp_path / "r")
    assert fit(cfg, tmp_path / "r", resume=True)["status"] == "complete"


def test_lock_refuses_a_live_owner_and_takes_a_stale_one(tiny_tree, tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / ".lock").write_text(str(os.getppid()))
    with pytest.raises(UserError, match=f"in use by process {os.getppid()}"):
        fit(cfg_for(tiny_tree, iterations=8), run)
    (run / ".lock").write_text("999999999")
    assert fit(cfg_for(tiny_tree, iterations=8), run)["status"] == "complete"


def test_unwritable_output(tiny_tree, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot write to"):
        fit(cfg_for(tiny_tree, iterations=8), blocker / "run")


def test_failed_start_leaves_no_run_directory(tiny_tree, tmp_path):
    junk = tmp_path / "data.tar"
    junk.write_bytes(b"not a tar archive")
    for data in (tmp_path / "nonexistent", junk):
        with pytest.raises(UserError):
            fit(cfg_for(data, iterations=8), tmp_path / "out" / "r")
        assert not (tmp_path / "out").exists()
    (tmp_path / "mine").mkdir()  # a folder that was there before is left alone
    with pytest.raises(UserError):
        fit(cfg_for(tmp_path / "nonexistent", iterations=8), tmp_path / "mine")
    assert (tmp_path / "mine").is_dir()


def test_resume_refuses_another_thread_count(tiny_tree, tmp_path):
    """The CPU thread count changes a run's numbers: a resume must use the run's own."""
    before_threads = torch.get_num_threads()
    try:
        cfg = cfg_for(tiny_tree, iterations=20, threads=1)
        fit(cfg, tmp_path / "r", stop_after=5)
        before = (tmp_path / "r" / "metrics.jsonl").read_bytes()
        with pytest.raises(UserError, match=r"threads: 1 there vs 2 now.*pass --threads 1") as exc:
            fit(cfg_for(tiny_tree, iterations=20, threads=2), tmp_path / "r", resume=True)
        assert "\n" not in str(exc.value)
        assert (tmp_path / "r" / "metrics.jsonl").read_bytes() == before
        assert json.loads((tmp_path / "r" / "config.json").read_text())["config"]["threads"] == 1
        torch.set_num_threads(2)  # no --threads on resume: the count the run was started with
        done = fit(cfg_for(tiny_tree, iterations=20), tmp_path / "r", resume=True)
        assert done["status"] == "complete" and done["threads"] == 1
        # threads null (the torch default): the count the run used is what counts
        torch.set_num_threads(1)
        fit(cfg_for(tiny_tree, iterations=20), tmp_path / "d", stop_after=5)
        assert runs.recorded_threads(tmp_path / "d") == 1
        with pytest.raises(UserError, match="threads: 1 there vs 2 now"):
            fit(cfg_for(tiny_tree, iterations=20, threads=2), tmp_path / "d", resume=True)
        torch.set_num_threads(2)  # the default of the resuming process differs
        with pytest.raises(UserError, match="threads: 1 there vs 2 now, from the default"):
            fit(cfg_for(tiny_tree, iterations=20), tmp_path / "d", resume=True)
        assert fit(cfg_for(tiny_tree, iterations=20, threads=1), tmp_path / "d", resume=True)["status"] == "complete"
    finally:
        torch.set_num_threads(before_threads)


@pytest.mark.slow
def test_resume_is_exact_with_compile_across_processes(tiny_tree, tmp_path):
    """The speed configuration of the 64k-iteration CPU runs (torch.compile, bf16 autocast,
    channels_last) resumes to the bit in a fresh process, as after a killed session."""
    import subprocess
    import sys

    cfg = cfg_for(tiny_tree, precision="bf16", channels_last=True, compile=True, iterations=40, threads=1)
    fit(cfg, tmp_path / "straight")
    script = ("import json, sys; from resnet_repro.train.config import RunConfig; from resnet_repro.train.loop import fit; "
              "cfg = RunConfig.model_validate(json.loads(sys.argv[1])); "
              "fit(cfg, sys.argv[2], resume=sys.argv[3] == 'resume', stop_after=int(sys.argv[4]) or None)")
    for mode, stop in (("start", 13), ("resume", 0)):
        subprocess.run([sys.executable, "-c", script, cfg.model_dump_json(), str(tmp_path / "cut"), mode, str(stop)],
                       check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert runs.read_json(tmp_path / "cut" / "summary.json")["status"] == "complete"
    assert comparable(tmp_path / "cut") == comparable(tmp_path / "straight")
    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
