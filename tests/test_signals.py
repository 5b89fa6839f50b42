"""SIGTERM/SIGINT during training: a signal before the last iteration checkpoints and
marks the run interrupted (resume finishes it exactly); a signal during the last
iteration lets the run complete, since a checkpoint at the end would be refused by
--resume (it is past the run's last iteration)."""

from __future__ import annotations

import os
import signal

import pytest

from resnet_repro import runs
from resnet_repro.train import checkpoint
from resnet_repro.train.config import make_config
from resnet_repro.train.loop import fit

ITERS = 20


def cfg_for(tree):
    return make_config(arch="resnet8", data_dir=str(tree), iterations=ITERS, batch_size=16, precision="fp32",
                       device="cpu", threads=1)


def signal_at(k: int, signum: int = signal.SIGTERM):
    """An on_event callback that sends ``signum`` to this process after iteration ``k``."""
    def on_event(ev):
        if ev.get("event") == "step" and ev["iteration"] == k:
            os.kill(os.getpid(), signum)
    return on_event


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_in_the_last_iteration_completes_the_run(tiny_tree, tmp_path, signum):
    s = fit(cfg_for(tiny_tree), tmp_path / "r", on_event=signal_at(ITERS, signum))
    assert s["status"] == "complete" and s["iterations_done"] == ITERS
    assert (tmp_path / "r" / "checkpoints" / "final.pt").is_file()
    ends = [e for e in runs.read_metrics(tmp_path / "r") if e["event"] == "end"]
    assert [(e["status"], e["iteration"]) for e in ends] == [("complete", ITERS)]


def test_signal_one_iteration_earlier_interrupts_and_resume_completes(tiny_tree, tmp_path):
    cfg = cfg_for(tiny_tree)
    s = fit(cfg, tmp_path / "r", on_event=signal_at(ITERS - 1))
    assert s["status"] == "interrupted" and s["iterations_done"] == ITERS - 1
    assert checkpoint.load_latest(tmp_path / "r" / "checkpoints")["iteration"] == ITERS - 1
    s2 = fit(cfg, tmp_path / "r", resume=True)
    assert s2["status"] == "complete" and s2["iterations_done"] == ITERS
