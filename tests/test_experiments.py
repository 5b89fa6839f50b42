"""Experiment specs (validation errors that name the file, key and fix) and `run`:
expansion, skipping complete runs, exact resume of interrupted ones, conflicts,
parallel processes, submitit, TensorBoard. Trains an 8-layer net on a tiny image set."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from resnet_repro import runs
from resnet_repro.cli import main
from resnet_repro.errors import UserError
from resnet_repro.experiments import (
    execute_local,
    execute_submitit,
    list_specs,
    load_all_specs,
    load_spec,
    parse_spec,
    plan,
)
from resnet_repro.train.loop import fit

ROOT = Path(__file__).resolve().parents[1]

GOOD = """
name = "tiny"
title = "tiny"
paper = "none"
dataset = "cifar10"
tables = ["6"]
figures = [6]
[[runs]]
arch = ["plain8", "resnet8"]
seeds = [0]
[profiles.paper]
schedule = "paper"
[profiles.quick]
schedule = "quick"
[profiles.smoke]
schedule = "smoke"
"""


def spec_error(text: str, tmp_path) -> str:
    p = tmp_path / "tiny.toml"
    p.write_text(textwrap.dedent(text))
    with pytest.raises(UserError) as e:
        load_spec(p)
    msg = str(e.value)
    assert msg.startswith(str(p) + ": ") and "\n" not in msg
    return msg


@pytest.mark.parametrize("old, new, expect", [
    ("seeds = [0]", "seed = [0]", "runs[0].seed: unknown key; did you mean 'seeds'? remove it or use one of arch, "),
    ('arch = ["plain8", "resnet8"]', 'arch = ["resnet9"]', "runs[0].arch: depth 9 of 'resnet9' is not 6n+2"),
    ('arch = ["plain8", "resnet8"]', 'arch = ["resnet50"]', "resnet50 is not a cifar10 net; use 6n+2 depths"),
    ('[profiles.smoke]\nschedule = "smoke"', "", "missing profile(s) smoke; add [profiles.smoke] with a schedule"),
    ('title = "tiny"', "", "title: missing; add `title = ...`"),
    ('dataset = "cifar10"', 'dataset = "mnist"', "dataset: input should be 'cifar10' or 'imagenet'"),
    ('schedule = "quick"', 'schedule = "fast"', "profiles.quick.schedule 'fast' is not a CIFAR-10 schedule; use paper, quick, smoke"),
    ('schedule = "quick"', 'schedule = "quick"\niterations = 100', "profiles.quick: give exactly one of"),
    ('tables = ["6"]', 'tables = ["9"]', "tables: unknown table '9'; use 1, 2, 3, 4, 5, 6, 7, 8, cifar-shortcuts"),
    ('figures = [6]', 'figures = [2]', "figures: unknown figure 2"),
    ('seeds = [0]', 'seeds = [0, 0]', "runs[0].seeds: seeds must be distinct"),
    ('schedule = "quick"', 'schedule = "quick"\nseeds_for = { resnet21 = [0] }',
     "profiles.quick.seeds_for names 'resnet21', which is not among the runs"),
    ('schedule = "quick"', 'schedule = "quick"\nseeds_for = { resnet20 = [] }',
     "seeds_for.resnet20 must be a non-empty list"),
    ('schedule = "smoke"', 'schedule = "smoke"\nonly = ["resnet20"]', "profiles.smoke.only names 'resnet20', which is not among the runs"),
    ('name = "tiny"', 'name = "other"', "name: 'other' differs from the file name; set name = 'tiny'"),
    ('seeds = [0]', 'seeds = [0', "not valid TOML"),
])
def test_spec_errors_name_file_key_and_fix(tmp_path, old, new, expect):
    assert old in GOOD
    msg = spec_error(GOOD.replace(old, new), tmp_path)
    assert expect in msg, msg


def test_unknown_experiment_lists_the_specs():
    with pytest.raises(UserError, match=r"no experiment 'cifar10-dept' .*did you mean cifar10-depth\?.*cifar10-1202"):
        load_spec("cifar10-dept")


def test_shipped_specs():
    assert set(list_specs()) >= {"cifar10-depth", "cifar10-1202", "cifar10-shortcuts", "imagenet-plain-vs-residual",
                                 "imagenet-shortcuts", "imagenet-deep"}
    specs = {s.name: s for s in load_all_specs()}
    depth = specs["cifar10-depth"]
    runs_paper = depth.expand("paper")
    assert len(runs_paper) == 17  # 6 nets x 1 seed, ResNet-20/56 x 3 seeds, ResNet-110 x 5 (Table 6)
    assert sorted(seed for a, _, seed, _ in runs_paper if a == "resnet110") == [0, 1, 2, 3, 4]
    quick = depth.expand("quick")  # issue 7: the 13 stored runs
    assert len(quick) == 13
    assert [seed for a, _, seed, _ in quick if a == "resnet110"] == [0]
    assert [seed for a, _, seed, _ in quick if a == "resnet56"] == [0, 1, 2]
    assert {a for a, _, seed, _ in quick if seed == 0} == {f"{k}{d}" for k in ("plain", "resnet")
                                                            for d in (20, 32, 44, 56)} | {"resnet110"}
    assert depth.expand("quick", seeds=[4]) == [(a, s, 4, st) for a, s, _, st in quick if _ == 0]
    assert {(a, s) for a, s, _, _ in runs_paper} >= {("plain20", None), ("resnet56", "A")}
    assert depth.expand("smoke") == [("plain20", None, 0, None), ("plain56", None, 0, None),
                                     ("resnet20", "A", 0, None), ("resnet56", "A", 0, None)]
    assert depth.expand("smoke", seeds=[1, 2])[:2] == [("plain20", None, 1, None), ("plain20", None, 2, None)]
    assert {s for _, s, _, _ in specs["cifar10-shortcuts"].expand("paper")} == {"A", "B", "C"}
    assert {a for a, *_ in specs["imagenet-deep"].expand("paper")} == {"resnet50", "resnet101", "resnet152"}
    assert specs["cifar10-depth"].tables == ["6"] and specs["cifar10-depth"].figures == [1, 6]


@pytest.fixture
def tiny_spec(tmp_path, tiny_tree):
    p = tmp_path / "tiny.toml"
    p.write_text(GOOD.replace('dataset = "cifar10"', f'dataset = "cifar10"\ndata = ["{tiny_tree}"]'))
    return load_spec(p)


def comparable(run_dir):
    return [{k: v for k, v in ev.items() if k not in ("wall_s", "images_per_s", "threads")}
            for ev in runs.read_metrics(run_dir) if ev["event"] not in ("start", "resume")]


def test_run_skips_complete_and_resumes_interrupted(tiny_spec, tmp_path):
    out = tmp_path / "results"
    plans = plan(tiny_spec, "smoke", out=out, iterations=6, precision="fp32", device="cpu", threads=1)
    assert [(p.label, p.status) for p in plans] == [("plain8-it6-s0", "missing"), ("resnet8-A-it6-s0", "missing")]
    assert plans[0].run_dir == out / "cifar10" / "plain8-it6-s0"
    # interrupt the first run by hand, as Ctrl-C would
    fit(plans[0].config, plans[0].run_dir, stop_after=3)
    plans = plan(tiny_spec, "smoke", out=out, iterations=6, precision="fp32", device="cpu", threads=1)
    assert [p.status for p in plans] == ["interrupted", "missing"]
    events = []
    outcomes = execute_local(plans, jobs=1, on_event=lambda label, ev: events.append((label, ev["event"])))
    assert [(o.label, o.status) for o in outcomes] == [("plain8-it6-s0", "complete"), ("resnet8-A-it6-s0", "complete")]
    assert ("plain8-it6-s0", "resume") in events and ("resnet8-A-it6-s0", "start") in events
    kinds = [e["event"] for e in runs.read_metrics(plans[0].run_dir)]
    assert kinds.count("start") == 1 and kinds.count("resume") == 1
    # the resumed run ends exactly as an uninterrupted one
    fit(plans[0].config, tmp_path / "straight")
    assert comparable(plans[0].run_dir) == comparable(tmp_path / "straight")
    # complete runs are skipped: nothing is trained or written again
    before = {p.label: (p.run_dir / "metrics.jsonl").read_bytes() for p in plans}
    plans = plan(tiny_spec, "smoke", out=out, iterations=6, precision="fp32", device="cpu", threads=1)
    assert [p.status for p in plans] == ["complete", "complete"]
    outcomes = execute_local(plans, jobs=2)
    assert [o.status for o in outcomes] == ["skipped", "skipped"]
    assert {p.label: (p.run_dir / "metrics.jsonl").read_bytes() for p in plans} == before


def test_a_directory_with_another_recipe_is_reported_not_touched(tiny_spec, tmp_path):
    out = tmp_path / "results"
    p = plan(tiny_spec, "smoke", out=out, iterations=4, precision="fp32", device="cpu", threads=1)[1]
    fit(p.config.model_copy(update={"lr": 0.05}), p.run_dir)
    before = (p.run_dir / "metrics.jsonl").read_bytes()
    p = plan(tiny_spec, "smoke", out=out, iterations=4, precision="fp32", device="cpu", threads=1)[1]
    assert p.status == "conflict" and "lr: 0.05 there vs 0.1 in the spec" in p.note
    (o,) = execute_local([p])
    assert o.status == "failed" and "different recipe" in o.message
    assert (p.run_dir / "metrics.jsonl").read_bytes() == before


@pytest.mark.slow  # spawns two processes that import torch: ~30 s on a loaded 2-core machine
def test_parallel_runs_in_separate_processes(tiny_spec, tmp_path):
    out = tmp_path / "results"
    plans = plan(tiny_spec, "smoke", out=out, iterations=6, jobs=2, precision="fp32", device="cpu")
    assert all(p.config.threads >= 1 for p in plans)
    seen = set()
    outcomes = execute_local(plans, jobs=2, on_event=lambda label, ev: seen.add((label, ev["event"])))
    assert [o.status for o in outcomes] == ["complete", "complete"]
    assert {("plain8-it6-s0", "eval"), ("resnet8-A-it6-s0", "finished")} <= seen
    for p in plans:
        assert json.loads((p.run_dir / "summary.json").read_text())["iterations_done"] == 6


class InlineExecutor:
    """A stand-in for a submitit executor: runs each job at once, in this process."""

    class Job:
        def __init__(self, fn, args):
            self.job_id = str(len(args))
            try:
                self._result, self._exc = fn(*args), None
            except Exception as exc:  # noqa: BLE001 (kept to re-raise from result())
                self._result, self._exc = None, exc

        def done(self):
            return True

        def result(self):
            if self._exc is not None:
                raise self._exc
            return self._result

    def __init__(self):
        self.submitted = []

    def submit(self, fn, *args):
        self.submitted.append(args[1])
        return self.Job(fn, args)


def test_execute_submitit_submits_only_unfinished_runs(tiny_spec, tmp_path):
    out = tmp_path / "results"
    plans = plan(tiny_spec, "smoke", out=out, iterations=4, precision="fp32", device="cpu", threads=1)
    fit(plans[0].config, plans[0].run_dir)
    plans = plan(tiny_spec, "smoke", out=out, iterations=4, precision="fp32", device="cpu", threads=1)
    ex = InlineExecutor()
    seen = []
    outcomes = execute_submitit(plans, ex, on_event=lambda label, ev: seen.append((label, ev["event"])), poll_s=0)
    assert [o.status for o in outcomes] == ["skipped", "complete"]
    assert ex.submitted == [str(plans[1].run_dir)]
    assert ("resnet8-A-it4-s0", "finished") in seen


@pytest.mark.slow  # a real submitit job: a fresh process that imports torch
def test_submitit_local_executor(tiny_spec, tmp_path):
    submitit = pytest.importorskip("submitit", reason="submitit not installed (pip install -e '.[slurm]')")
    out = tmp_path / "results"
    plans = plan(tiny_spec, "smoke", out=out, iterations=4, precision="fp32", device="cpu", threads=1)[:1]
    ex = submitit.LocalExecutor(folder=str(tmp_path / "jobs"))
    ex.update_parameters(timeout_min=10)
    outcomes = execute_submitit(plans, ex, poll_s=0.5)
    assert [o.status for o in outcomes] == ["complete"], outcomes
    assert plan(tiny_spec, "smoke", out=out, iterations=4, precision="fp32", device="cpu", threads=1)[0].status == "complete"


def test_tensorboard_events_or_a_clear_error(tiny_spec, tmp_path):
    p = plan(tiny_spec, "smoke", out=tmp_path, iterations=4, precision="fp32", device="cpu", threads=1, tensorboard=True)[0]
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match=r"--tensorboard needs the tensorboard package; install it with pip install"):
            fit(p.config, p.run_dir)
        assert not (p.run_dir / "config.json").exists()
        return
    fit(p.config, p.run_dir)
    assert list(p.run_dir.glob("events.out.tfevents.*"))


def test_thread_count_is_checked_only_for_runs_that_resume_from_checkpoints(tiny_spec, tmp_path):
    out = tmp_path / "results"
    p = plan(tiny_spec, "smoke", out=out, iterations=6, precision="fp32", device="cpu", threads=1)[0]
    fit(p.config, p.run_dir, stop_after=3)
    q = plan(tiny_spec, "smoke", out=out, iterations=6, precision="fp32", device="cpu", threads=2)[0]
    assert q.status == "conflict"
    shutil.rmtree(p.run_dir / "checkpoints")  # it starts again from zero: the old count does not matter
    q = plan(tiny_spec, "smoke", out=out, iterations=6, precision="fp32", device="cpu", threads=2)[0]
    assert q.status == "interrupted" and q.config.threads == 2 and q.note == ""


def test_cli_run_dry_run_and_smoke(tiny_spec, tmp_path, capsys):
    spec_path = tmp_path / "tiny.toml"
    args = ["run", str(spec_path), "--profile", "smoke", "--iterations", "4", "--out", str(tmp_path / "r"),
            "--precision", "fp32", "--device", "cpu", "--threads", "1"]
    with pytest.raises(SystemExit) as e:
        main([*args, "--dry-run"])
    assert e.value.code == 0
    assert "missing" in capsys.readouterr().out
    assert not (tmp_path / "r").exists()
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 0
    assert "2 complete" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 0 and "2 skipped" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:  # complete runs show the threads they trained with, not --threads
        main([*args[:-1], "3", "--dry-run"])
    rows = [ln for ln in capsys.readouterr().out.splitlines() if "complete" in ln]
    assert len(rows) == 2 and all(ln.split("│")[3].strip() == "1" for ln in rows), rows  # run, state, threads
    with pytest.raises(SystemExit) as e:
        main([*args, "--seeds", "x"])
    assert e.value.code == 2 and "bad --seeds" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main([*args, "--threads", "0", "--dry-run"])  # the last --threads counts
    assert e.value.code == 2 and "--threads must be >= 1, got 0" in capsys.readouterr().err


def test_imagenet_spec_needs_data(tmp_path):
    spec = load_spec(ROOT / "experiments" / "imagenet-deep.toml")
    assert not (ROOT / "data" / "imagenet").exists()
    with pytest.raises(UserError, match="ImageNet training needs --data-dir with an ImageNet folder"):
        plan(spec, "smoke", out=tmp_path)


def test_parse_spec_from_text():
    s = parse_spec(GOOD, "inline")
    assert s.run_keys() == {("plain8", None), ("resnet8", "A")}



def test_recipe_diff_compares_as_stored_json():
    from resnet_repro.experiments import recipe_diff

    assert recipe_diff({"scale": [73, 137], "threads": 4}, {"scale": (73, 137), "threads": 1}) == []
    assert recipe_diff({"lr": 0.05}, {"lr": 0.1}) == ["lr: 0.05 there vs 0.1 in the spec"]


def test_progress_view_takes_imagenet_and_cifar_events(tiny_spec, tmp_path):
    from io import StringIO

    from rich.console import Console

    from resnet_repro.report.render import ExperimentProgress

    plans = plan(tiny_spec, "smoke", out=tmp_path, iterations=4, precision="fp32", device="cpu", threads=1)
    console = Console(file=StringIO(), width=120)
    with ExperimentProgress(console, plans) as prog:
        label = plans[0].label
        prog.on_event(label, {"event": "start", "iteration": 0, "threads": 1, "precision": "fp32"})
        prog.on_event(label, {"event": "eval", "iteration": 2, "train_error": 50.0, "val_error": 40.0})
        prog.on_event(label, {"event": "eval", "iteration": 4, "train_error": 30.0, "test_error": 20.0})
        prog.on_event(label, {"event": "finished", "status": "complete"})
        assert prog.done_its == {label: 0}
    assert f"{label}: complete" in console.file.getvalue()


def test_resume_keeps_the_runs_thread_count(tiny_spec, tmp_path):
    """`run --jobs N` resumes a run with the threads it trained with, whatever N gives now;
    an explicit other --threads is a conflict, not a silently different run."""
    out = tmp_path / "results"
    p = plan(tiny_spec, "smoke", out=out, iterations=6, precision="fp32", device="cpu", threads=1)[0]
    fit(p.config, p.run_dir, stop_after=3)
    for jobs in (1, 2, 64):
        q = plan(tiny_spec, "smoke", out=out, iterations=6, jobs=jobs, precision="fp32", device="cpu")[0]
        assert q.status == "interrupted" and q.config.threads == 1
    q = plan(tiny_spec, "smoke", out=out, iterations=6, precision="fp32", device="cpu", threads=2)[0]
    assert q.status == "conflict" and "trained with 1 CPU thread," in q.note and "--threads 1" in q.note
    q = plan(tiny_spec, "smoke", out=out, iterations=6, jobs=64, precision="fp32", device="cpu")[0]
    (o,) = execute_local([q])
    assert o.status == "complete"
