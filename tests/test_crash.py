"""Crash safety, concurrency and full disks, with real processes.

Training runs as ``python -m resnet_repro train`` in a subprocess (resnet8, batch 16,
fp32, one thread, on the tiny image set) and is killed with SIGKILL: at random moments,
and in the middle of chosen writes through the ``RESNET_REPRO_TEST_KILL_AT`` test hook of
:mod:`resnet_repro.fsio` (after the temporary file is written, before the rename). After
every kill the run directory must hold only whole files; after the last resume the
metrics and final weights must equal those of an uninterrupted run bit for bit.

The default run kills at a handful of points (CI); ``make test-slow`` runs the full
chain of 13 kill points on a longer run.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import math
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
import torch

from resnet_repro import experiments, fsio, runcheck, runs
from resnet_repro.errors import UserError
from resnet_repro.train import checkpoint
from resnet_repro.train.config import make_config
from resnet_repro.train.loop import fit

TIMING = {"wall_s", "images_per_s", "train_s"}
KILLED = -signal.SIGKILL


# ----------------------------------------------------------------------------- helpers
def cli_config(tree: Path, iterations: int):
    """The config ``train_argv`` produces, for the in-process reference run."""
    return make_config("resnet8", str(tree), iterations=iterations, batch_size=16, precision="fp32",
                       device="cpu", threads=1)


def train_argv(tree: Path, out: Path, iterations: int, name: str = "r") -> list[str]:
    return [sys.executable, "-m", "resnet_repro", "train", "--arch", "resnet8", "--data-dir", str(tree),
            "--iterations", str(iterations), "--batch-size", "16", "--precision", "fp32", "--device", "cpu",
            "--threads", "1", "--out", str(out), "--name", name, "--resume"]


def child_env(kill_at: str | None = None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200")
    env.pop(fsio.KILL_ENV, None)
    if kill_at:
        env[fsio.KILL_ENV] = kill_at
    return env


def comparable(run_dir: Path) -> list[dict]:
    """metrics.jsonl without start/resume events and timing fields."""
    return [{k: v for k, v in ev.items() if k not in TIMING}
            for ev in runs.read_metrics(run_dir) if ev["event"] not in ("start", "resume")]


def final_weights(run_dir: Path) -> dict:
    idx = checkpoint.read_index(run_dir / "checkpoints")
    return checkpoint.load_verified(run_dir / "checkpoints" / "final.pt", idx["sha256"]["final.pt"])["model"]


def assert_same_result(run_dir: Path, ref_dir: Path) -> None:
    assert comparable(run_dir) == comparable(ref_dir)
    a, b = final_weights(ref_dir), final_weights(run_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (ref_dir, run_dir))
    for k in ("status", "iterations_done", "final_train_error", "final_val_error", "final_test_error"):
        assert sa[k] == sb[k], k
    assert runcheck.check_files(run_dir) == []  # killed and resumed: its files still agree with each other


def assert_intact(run_dir: Path) -> None:
    """Every file of the run is whole: JSON files parse, the log holds only complete
    lines, every indexed checkpoint matches its checksum and loads."""
    for name in ("config.json", "summary.json"):
        p = run_dir / name
        if p.exists():
            obj = json.loads(p.read_bytes())
            assert isinstance(obj, dict), name
    if (run_dir / "summary.json").exists():
        assert json.loads((run_dir / "summary.json").read_bytes())["status"] in runs.STATUSES
    log = run_dir / "metrics.jsonl"
    if log.exists():
        raw = log.read_bytes()
        assert raw == b"" or raw.endswith(b"\n"), "metrics.jsonl ends inside a line"
        assert all(isinstance(json.loads(line), dict) for line in raw.splitlines())
    ck = run_dir / "checkpoints"
    if (ck / "index.json").exists():
        raw_idx = json.loads((ck / "index.json").read_bytes())
        assert set(raw_idx) == {"latest", "sha256"}
        for name, sha in raw_idx["sha256"].items():
            data = (ck / name).read_bytes()
            assert hashlib.sha256(data).hexdigest() == sha, f"{name} does not match its checksum"
        for name in raw_idx["latest"]:
            checkpoint.check_resume_state(checkpoint.load_verified(ck / name, raw_idx["sha256"][name]), name)


def temp_files(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.rglob(".*.tmp")]


@pytest.fixture(scope="module")
def reference(tiny_tree, tmp_path_factory):
    """Uninterrupted runs (in process), by iteration count."""
    made: dict[int, Path] = {}

    def get(iterations: int) -> Path:
        if iterations not in made:
            d = tmp_path_factory.mktemp("reference") / "r"
            assert fit(cli_config(tiny_tree, iterations), d)["status"] == "complete"
            made[iterations] = d
        return made[iterations]

    return get


class Child:
    """``resnet-repro ARGV`` in a child process, either forked from this test process
    (its modules already imported: it starts in milliseconds) or as a fresh
    ``python -m resnet_repro`` (the way users run it; seconds to start)."""

    def __init__(self, argv: list[str], kill_at: str | None, log: Path, fork: bool) -> None:
        self.log = log
        if fork:
            self.proc = None
            self.fork = multiprocessing.get_context("fork").Process(target=self._run, args=(argv, kill_at, log))
            self.fork.start()
            self.pid = self.fork.pid
        else:
            self.fork = None
            with open(log, "wb") as fh:
                self.proc = subprocess.Popen([sys.executable, "-m", "resnet_repro", *argv], env=child_env(kill_at),
                                             stdout=fh, stderr=subprocess.STDOUT)
            self.pid = self.proc.pid

    @staticmethod
    def _run(argv, kill_at, log) -> None:
        from resnet_repro.cli import main

        if kill_at:
            os.environ[fsio.KILL_ENV] = kill_at
        else:
            os.environ.pop(fsio.KILL_ENV, None)
        fsio._kill_counts.clear()
        fh = open(log, "w")
        sys.stdout = sys.stderr = fh
        code = 0
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc(file=fh)
            code = 99
        fh.flush()
        os._exit(code)

    def running(self) -> bool:
        return (self.fork.is_alive() if self.fork else self.proc.poll() is None)

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout: float = 300) -> int:
        if self.fork:
            self.fork.join(timeout)
            if self.fork.exitcode is None:
                self.kill()
                self.fork.join()
                raise AssertionError(f"child hung: {self.output()}")
            return self.fork.exitcode
        return self.proc.wait(timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def kill_chain(tree: Path, out: Path, iterations: int, points: list[str], seed: int,
               fork: bool = True) -> tuple[int, list[str]]:
    """Train into ``out/r``, killing the process at each of ``points`` (``WHAT:N`` for the
    write hook, ``delay`` for a random moment during training), resuming every time; then
    resume to the end. Returns the number of kills that hit a running process and what
    each attempt ended as."""
    rng = random.Random(seed)
    run_dir = out / "r"
    argv = train_argv(tree, out, iterations)[3:]
    survived, outcomes = 0, []
    for i, point in enumerate(points):
        log = out / f"attempt{i}.log"
        if point == "delay":
            log_file = run_dir / "metrics.jsonl"
            before = log_file.stat().st_mtime_ns if log_file.exists() else 0
            child = Child(argv, None, log, fork)
            deadline = time.monotonic() + 120
            while child.running() and time.monotonic() < deadline:  # wait until it trains
                if log_file.exists() and log_file.stat().st_mtime_ns != before:
                    break
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 1.0))
            if child.running():
                child.kill()
        else:
            child = Child(argv, point, log, fork)
        code = child.wait()
        assert code in (KILLED, 0), f"{point}: exit {code}: {child.output()[-3000:]}"
        assert "Traceback" not in child.output()
        survived += code == KILLED
        outcomes.append(f"{point}={'killed' if code == KILLED else 'finished'}")
        assert_intact(run_dir)
    final = Child(argv, None, out / "final.log", fork)
    assert final.wait() == 0, final.output()[-3000:]
    assert_intact(run_dir)
    assert temp_files(run_dir) == [], "temporary files of killed writes were not cleaned up"
    assert not (run_dir / ".lock").exists()
    return survived, outcomes


# ----------------------------------------------------------------------------- kill and resume
FAST_POINTS = ["checkpoint:2", "metrics.jsonl:8", "delay", "final.pt:1"]
FULL_POINTS = ["config.json:1", "checkpoint:1", "index.json:2", "metrics.jsonl:7", "summary.json:3", "delay",
               "checkpoint:3", "delay", "metrics.jsonl:30", "delay", "index.json:4", "delay", "final.pt:1"]


def test_kill_and_resume_fast(tiny_tree, tmp_path, reference):
    ref = reference(40)
    survived, outcomes = kill_chain(tiny_tree, tmp_path, 40, FAST_POINTS, seed=1)
    # The hooks always hit; a random-delay kill may come too late for a short run.
    assert survived >= len(FAST_POINTS) - 1, outcomes
    assert_same_result(tmp_path / "r", ref)


@pytest.mark.slow
def test_kill_and_resume_full(tiny_tree, tmp_path, reference):
    ref = reference(200)
    survived, outcomes = kill_chain(tiny_tree, tmp_path, 200, FULL_POINTS, seed=2, fork=False)
    print(f"kill points survived: {survived} ({', '.join(outcomes)})")
    assert survived >= 10, outcomes
    assert_same_result(tmp_path / "r", ref)


@pytest.mark.slow
def test_kill_and_resume_at_random_moments(tiny_tree, tmp_path, reference):
    ref = reference(200)
    survived, outcomes = kill_chain(tiny_tree, tmp_path, 200, ["delay"] * 15, seed=3)
    print(f"random kills survived: {survived} of 15")
    assert survived >= 10, outcomes
    assert_same_result(tmp_path / "r", ref)


def test_kill_hook_is_inert_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(fsio.KILL_ENV, raising=False)
    for i in range(3):
        fsio.atomic_write_text(tmp_path / "a.pt", str(i))
    assert (tmp_path / "a.pt").read_text() == "2"
    # Set, but for another file: nothing happens either.
    monkeypatch.setenv(fsio.KILL_ENV, "summary.json:1")
    fsio.atomic_write_text(tmp_path / "a.pt", "x")
    assert (tmp_path / "a.pt").read_text() == "x"


def test_killed_write_keeps_the_old_file_and_cleanup_removes_the_temp(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text('{"status": "running"}\n')
    code = ("import sys; from resnet_repro.fsio import atomic_write_json; "
            "atomic_write_json(sys.argv[1], {'status': 'complete'})")
    p = subprocess.run([sys.executable, "-c", code, str(target)], env=child_env("summary.json:1"), timeout=60)
    assert p.returncode == KILLED
    assert json.loads(target.read_text()) == {"status": "running"}
    left = temp_files(tmp_path)
    assert len(left) == 1 and json.loads(left[0].read_text()) == {"status": "complete"}
    assert fsio.remove_stale_temps(tmp_path) == left and temp_files(tmp_path) == []


@pytest.mark.parametrize("command, target", [("table", "table6.md"), ("figure", "fig.png"), ("report", "REPORT.md")])
def test_report_outputs_survive_a_kill(tiny_tree, tmp_path, reference, command, target):
    runs_dir = str(reference(40).parent)
    out = tmp_path / target
    argv = {"table": ["table", "6", "--runs", runs_dir, "--format", "markdown", "--out", str(out)],
            "figure": ["figure", "6", "--runs", runs_dir, "--out", str(tmp_path / "fig")],
            "report": ["report", "--runs", runs_dir, "--out", str(out)]}[command]
    out.write_bytes(b"OLD\n")
    child = Child(argv, f"{target}:1", tmp_path / "a.log", fork=True)
    assert child.wait() == KILLED, child.output()
    assert out.read_bytes() == b"OLD\n"  # the old file, whole; the new one died as a temporary file
    left = [p for p in temp_files(tmp_path) if p.name.startswith(f".{target}.")]
    assert len(left) == 1
    child = Child(argv, None, tmp_path / "b.log", fork=True)
    assert child.wait() == 0, child.output()
    for new in (out.read_bytes(), left[0].read_bytes()):  # the new file, and the whole one the kill left behind
        if target.endswith(".png"):
            assert new.startswith(b"\x89PNG") and new.endswith(b"IEND\xaeB`\x82")
        else:
            assert "Table 6" in new.decode() and new.endswith(b"\n")


# ----------------------------------------------------------------------------- concurrency
def test_second_process_is_refused_with_the_owner_named(tiny_tree, tmp_path, capsys):
    from resnet_repro.cli import main

    out = tmp_path
    first = subprocess.Popen(train_argv(tiny_tree, out, 4000), env=child_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    try:
        log = out / "r" / "metrics.jsonl"
        deadline = time.monotonic() + 120
        while not (log.exists() and log.stat().st_size) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, first.stderr.read().decode()
        before = (out / "r" / "config.json").read_bytes()
        capsys.readouterr()
        with pytest.raises(SystemExit) as second:  # this test process is the second one
            main(train_argv(tiny_tree, out, 4000)[3:])
        assert second.value.code == 2
        err = capsys.readouterr().err
        assert f"in use by process {first.pid}" in err and "resnet_repro" in err and "Traceback" not in err
        assert len([ln for ln in err.splitlines() if ln.strip()]) == 1
        assert (out / "r" / "config.json").read_bytes() == before
    finally:
        first.kill()
        first.wait(timeout=60)
    # The lock of the killed process is stale: the next trainer takes it over.
    lock_text = (out / "r" / ".lock").read_text().split()
    assert int(lock_text[0]) == first.pid
    with runs.RunLock(out / "r") as lock:
        assert lock.held and int((out / "r" / ".lock").read_text().split()[0]) == os.getpid()
    assert not (out / "r" / ".lock").exists()



def test_run_in_progress_sees_a_live_holder_without_disturbing_it(tmp_path):
    run = tmp_path / "r"
    assert runs.run_in_progress(run) is False  # no directory at all
    with runs.RunLock(run) as lock:
        before = (run / ".lock").read_bytes()
        assert runs.run_in_progress(run) is True
        assert lock.held and (run / ".lock").read_bytes() == before
    assert runs.run_in_progress(run) is False
    (run / ".lock").write_text("999999999 1\n")  # left by a process that no longer exists
    assert runs.run_in_progress(run) is False


_LOCK_WORKER = r"""
import os, sys, time
from resnet_repro import runs
from resnet_repro.errors import UserError
run, inside, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
got = refused = 0
for _ in range(rounds):
    try:
        lock = runs.RunLock(run).acquire()
    except UserError as exc:
        assert "is in use by" in str(exc), exc  # the owner's pid is named once its lock file is written
        refused += 1
        time.sleep(0.001)
        continue
    fd = os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # fails if another holder is inside
    time.sleep(0.002)
    os.close(fd)
    os.unlink(inside)
    lock.release()
    got += 1
print(got, refused)
"""


def test_lock_excludes_across_processes(tmp_path):
    run = tmp_path / "run"
    procs = [subprocess.Popen([sys.executable, "-c", _LOCK_WORKER, str(run), str(tmp_path / "inside"), "150"],
                              env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    results = [p.communicate(timeout=120) for p in procs]
    for p, (_out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err.decode()
    counts = [tuple(map(int, out.split())) for out, _ in results]
    assert sum(g for g, _ in counts) > 0 and sum(r for _, r in counts) > 0  # both happened: a real contest
    assert sum(g + r for g, r in counts) == 450


def test_stale_lock_with_reused_pid_is_taken_over(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    # Written in this module's format by a process that has died; its pid now belongs to
    # a live process (our parent) that started at another time.
    (run / ".lock").write_text(f"{os.getppid()} 1\n")
    with runs.RunLock(run):
        assert (run / ".lock").read_text().split()[0] == str(os.getpid())
    # A hand-written bare pid of a live process is respected.
    (run / ".lock").write_text(f"{os.getppid()}\n")
    with pytest.raises(UserError, match=f"in use by process {os.getppid()}.*delete"):
        runs.RunLock(run).acquire()


def test_symlinked_lock_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (run / ".lock").symlink_to(victim)
    with pytest.raises(UserError, match="symbolic link"):
        runs.RunLock(run).acquire()
    assert victim.read_text() == "keep"


def test_stale_running_status_reads_interrupted(tiny_tree, tmp_path):
    cfg = cli_config(tiny_tree, 40)
    fit(cfg, tmp_path / "r", stop_after=6)
    summ = json.loads((tmp_path / "r" / "summary.json").read_text())
    runs.write_summary(tmp_path / "r", {**summ, "status": "running"})  # as a SIGKILLed run leaves it
    assert runs.load_runs(tmp_path)["status"].tolist() == ["interrupted"]
    with runs.RunLock(tmp_path / "r"):
        assert runs.load_runs(tmp_path)["status"].tolist() == ["running"]


# ----------------------------------------------------------------------------- disk full
class DiskFull:
    """Makes atomic writes of matching files fail with ENOSPC after writing half their
    bytes (the real temp-file cleanup runs), from the ``after``-th matching write on."""

    def __init__(self, monkeypatch, match, after: int = 1) -> None:
        self.match, self.after, self.seen, self.failed = match, after, 0, 0
        real = fsio.atomic_write

        def failing(path, writer):
            p = Path(path)
            if not self.match(p):
                return real(path, writer)
            self.seen += 1
            if self.seen < self.after:
                return real(path, writer)
            self.failed += 1

            def half(fh):
                buf = __import__("io").BytesIO()
                writer(buf)
                fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            return real(path, half)

        monkeypatch.setattr(fsio, "atomic_write", failing)


def test_disk_full_at_a_checkpoint_keeps_the_previous_one(tiny_tree, tmp_path, monkeypatch, reference):
    ref = reference(40)
    cfg = cli_config(tiny_tree, 40)
    run = tmp_path / "r"
    full = DiskFull(monkeypatch, lambda p: p.suffix == ".pt", after=3)
    with pytest.raises(UserError, match=r"write failed at iteration 6 \(No space left on device\).*--resume"):
        fit(cfg, run)
    assert full.failed == 1
    summ = json.loads((run / "summary.json").read_text())
    assert summ["status"] == "interrupted" and "No space left" in summ["message"]
    assert checkpoint.read_index(run / "checkpoints")["latest"] == ["iter-0000002.pt", "iter-0000004.pt"]
    assert_intact(run)
    assert temp_files(run) == [] and not (run / "checkpoints" / "iter-0000006.pt").exists()
    assert not (run / ".lock").exists()
    monkeypatch.undo()  # space is back
    assert fit(cfg, run, resume=True)["status"] == "complete"
    assert_same_result(run, ref)


def test_disk_full_everywhere_then_resume(tiny_tree, tmp_path, monkeypatch, reference):
    ref = reference(40)
    cfg = cli_config(tiny_tree, 40)
    run = tmp_path / "r"
    # The disk fills at the 20th log line: every later write of any file fails too.
    state = {"n": 0}

    def disk_is_full(p: Path) -> bool:
        state["n"] += p.name == "metrics.jsonl"
        return state["n"] >= 20

    DiskFull(monkeypatch, disk_is_full)
    with pytest.raises(UserError, match="No space left on device.*free space, then continue with --resume"):
        fit(cfg, run)
    assert_intact(run)
    assert temp_files(run) == []
    assert len(runs.read_metrics(run)) == 19  # the log holds whole lines only
    assert runs.load_runs(tmp_path)["status"].tolist() == ["interrupted"]
    monkeypatch.undo()
    assert fit(cfg, run, resume=True)["status"] == "complete"
    assert_same_result(run, ref)


def test_disk_full_before_training_is_a_clear_cli_error(tiny_tree, tmp_path, monkeypatch, capsys):
    from resnet_repro.cli import main

    DiskFull(monkeypatch, lambda p: p.name == "config.json")
    argv = train_argv(tiny_tree, tmp_path, 8)[3:]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: a file operation failed before training started")
    assert "No space left on device" in lines[0] and "--resume" in lines[0]
    assert not (tmp_path / "r" / "config.json").exists() and temp_files(tmp_path) == []
    monkeypatch.undo()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "complete"


# ----------------------------------------------------------------------------- divergence
def test_divergence_is_reported_with_its_iteration_and_marked_in_table6(tiny_tree, tmp_path):
    from resnet_repro.report.tables import get_table, to_text

    cfg = make_config("resnet20", str(tiny_tree), iterations=40, batch_size=16, precision="fp32", device="cpu",
                      lr=1e30)
    s = fit(cfg, tmp_path / "d")
    assert s["status"] == "diverged"
    end = runs.read_metrics(tmp_path / "d")[-1]
    assert end == {"event": "end", "iteration": s["iterations_done"], "status": "diverged",
                   "message": s["message"]}
    last_train = [e for e in runs.read_metrics(tmp_path / "d") if e["event"] == "train"][-1]
    assert last_train["iteration"] == s["iterations_done"] and last_train["train_loss"] != last_train["train_loss"]
    # Never averaged in as a number; named in the caption instead.
    t = get_table(6, tmp_path)
    row = t.frame[t.frame["net"] == "ResNet-20"].iloc[0]
    assert row["n"] == 0 and math.isnan(row["mean"])
    assert "1 diverged resnet20 A run(s), not averaged in" in t.caption
    assert "1 diverged resnet20 A run(s), not averaged in" in to_text(t, "markdown")


# ----------------------------------------------------------------------------- run --jobs N
DUP_SPEC = """
name = "dup"
title = "the same run named three times"
paper = "none"
dataset = "cifar10"
data = ["data/cifar10"]
tables = []
figures = []

[[runs]]
arch = ["resnet8", "resnet8"]

[[runs]]
arch = ["resnet8"]
seeds = [0]

[profiles.paper]
schedule = "paper"

[profiles.quick]
schedule = "quick"

[profiles.smoke]
schedule = "smoke"
"""


def test_run_plans_each_run_directory_once(tiny_tree, tmp_path):
    spec = experiments.parse_spec(DUP_SPEC, "dup.toml")
    plans = experiments.plan(spec, "smoke", out=tmp_path, data_dir=str(tiny_tree), jobs=2)
    dirs = [p.run_dir for p in plans]
    assert len(dirs) == 1 == len(set(dirs))


@pytest.mark.slow
def test_two_jobs_on_one_run_directory_never_train_together(tiny_tree, tmp_path):
    """Even if two planned runs named one directory, the run lock lets one process train
    and refuses the other, naming it."""
    spec = experiments.parse_spec(DUP_SPEC, "dup.toml")
    (p,) = experiments.plan(spec, "smoke", out=tmp_path, data_dir=str(tiny_tree), jobs=2, iterations=300,
                            precision="fp32", device="cpu")
    twin = dataclasses.replace(p, label=p.label + "-twin")
    outcomes = experiments.execute_local([p, twin], jobs=2)
    statuses = sorted(o.status for o in outcomes)
    assert statuses == ["complete", "failed"], [(o.status, o.message) for o in outcomes]
    refused = next(o for o in outcomes if o.status == "failed")
    assert "is in use by process" in refused.message
    assert json.loads((p.run_dir / "summary.json").read_text())["status"] == "complete"
    starts = [e for e in runs.read_metrics(p.run_dir) if e["event"] in ("start", "resume")]
    assert len(starts) == 1
