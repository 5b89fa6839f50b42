"""Runs checked against their own files (``resnet-repro check``, and the same check in
``runs.load_runs`` for every table and figure): the committed results pass; a summary
that is not its log's last evaluation, a logged lr that leaves the schedule, a warm-up
that ends against its rule, iterations that do not add up are each named (run and
field), exit 1, and left out of Table 6 with the same line; runs still in progress pass
when what they have logged agrees."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import ROOT, run_main
from resnet_repro import runcheck, runs

RESULTS = ROOT / "results"
R20 = "resnet20-A-quick-s0"
R110 = "resnet110-A-quick-s0"


@pytest.fixture
def copy(tmp_path) -> Path:
    """A copy of the committed results (config, metrics, summary, responses)."""
    dest = tmp_path / "results"
    shutil.copytree(RESULTS / "cifar10", dest / "cifar10")
    return dest


def edit_summary(run: Path, **fields) -> None:
    runs.write_summary(run, {**json.loads((run / "summary.json").read_text()), **fields})


def edit_log(run: Path, fn) -> None:
    """Rewrite ``metrics.jsonl`` with ``fn(events) -> events``."""
    evs = fn(runs.read_metrics(run))
    (run / "metrics.jsonl").write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in evs))


def flat_lr(evs):
    return [{**e, "lr": 0.1} if e["event"] == "train" else e for e in evs]


def fails(run: Path) -> list[str]:
    return [p.text() for p in runcheck.check_files(run)]


# ---------------------------------------------------------------------------- the stored runs
def test_check_passes_on_the_committed_results(capsys):
    code, out, err = run_main(["check", str(RESULTS)], capsys)
    assert code == 0, out + err
    lines = out.strip().splitlines()
    stored = sorted(p.name for p in RESULTS.glob("*/*") if (p / "config.json").is_file())  # cifar10/, cifar10-finetune/
    assert len(stored) >= 13 and [ln for ln in lines if ln.startswith("FAIL")] == []
    assert sum(ln.startswith("ok ") for ln in lines) == len(stored)
    assert f"ok    {RESULTS / 'cifar10' / R20}: complete, 4,000 of 4,000 iterations, 16 evaluations" in lines
    assert lines[-1] == f"{len(stored)} runs checked: each agrees with its own log and config"


@pytest.mark.parametrize("what", ["summary", "lr"])
def test_a_run_that_disagrees_is_named_exits_1_and_table6_leaves_it_out(copy, capsys, what):
    run = copy / "cifar10" / R20
    if what == "summary":  # the log ends at 19.08
        edit_summary(run, final_test_error=93.57)
        field = "summary.json final_test_error: 93.57, but the last evaluation (metrics.jsonl, iteration 4000) has 19.08"
    else:  # never dropped at 2,000 and 3,000
        edit_log(run, flat_lr)
        field = ("metrics.jsonl lr: 0.1 at iteration 2,025, but the config's schedule gives 0.01 (lr 0.1, divided "
                 "by 10 at iterations 2,000, 3,000)")
    code, out, _ = run_main(["check", str(copy)], capsys)
    assert code == 1
    bad = [ln for ln in out.splitlines() if ln.startswith("FAIL")]
    assert bad == [f"FAIL  {run}: {field}"]
    n = sum(1 for p in (copy / "cifar10").iterdir() if (p / "config.json").is_file())  # quick and paper-schedule runs
    assert n >= 15 and out.strip().splitlines()[-1].startswith(f"1 of {n} runs disagree")

    code, out, err = run_main(["table", "6", "--runs", str(copy), "--format", "csv"], capsys)
    assert code == 0
    warned = [ln for ln in err.splitlines() if str(run) in ln]
    assert warned == [f"warning: {run}: {field}; run left out of tables and figures (see `resnet-repro check {run}`)"]
    r20 = next(ln for ln in out.splitlines() if ln.startswith("ResNet-20,") and ",quick," in ln)  # the quick row
    assert "19.08" not in r20 and "93.57" not in r20  # seeds 1 and 2 only: 19.50, 19.90
    assert "19.70 ± 0.28 (n=2)" in r20


def test_the_report_and_figures_get_checked_runs_too(copy, tmp_path):
    from resnet_repro.report import figures
    from resnet_repro.report.figure7 import collect_responses

    run = copy / "cifar10" / "plain20-quick-s0"
    edit_log(run, flat_lr)
    with pytest.warns(UserWarning, match="plain20-quick-s0: metrics.jsonl lr: 0.1 at iteration 2,025"):
        drawn = figures.draw(1, copy)
    assert str(run) not in drawn.runs
    with pytest.warns(UserWarning, match="plain20-quick-s0: metrics.jsonl lr"):
        assert "plain20" not in {r["arch"] for r in collect_responses([copy])}
    df = runs.load_runs(copy)
    assert df.set_index("run_dir").loc[str(run), "status"] == "inconsistent"


# ---------------------------------------------------------------------------- each rule
def test_each_field_is_named(copy):
    c = copy / "cifar10"
    edit_summary(c / "plain32-quick-s0", final_train_error=1.0)
    edit_summary(c / "plain44-quick-s0", iterations_done=3000, status="complete")
    edit_summary(c / "plain56-quick-s0", wall_s=99.0)
    edit_summary(c / "resnet32-A-quick-s0", images_per_s=9999.0)
    edit_log(c / "resnet44-A-quick-s0", lambda evs: [e for e in evs if not (e["event"] == "eval"
                                                                           and e["iteration"] == 2000)])
    edit_log(c / "resnet56-A-quick-s0", lambda evs: evs[:50] + evs[40:])  # a log holding a stretch twice
    conf = json.loads((c / "resnet56-A-quick-s1" / "config.json").read_text())
    conf["config"]["iterations"] = 5000  # still called "quick"
    (c / "resnet56-A-quick-s1" / "config.json").write_text(json.dumps(conf))
    assert fails(c / "plain32-quick-s0")[0].startswith("summary.json final_train_error: 1.0, but the last evaluation")
    assert fails(c / "plain44-quick-s0")[0] == "summary.json iterations_done: 3,000 in a complete run of 4,000"
    assert fails(c / "plain56-quick-s0")[0] == "summary.json wall_s: 99.00 s, but the log ends at 5,919.85 s"
    assert fails(c / "resnet32-A-quick-s0")[0].startswith("summary.json images_per_s: 9,999.0, but 4,000 iterations")
    assert fails(c / "resnet44-A-quick-s0")[0].startswith(
        "metrics.jsonl eval: eval events at 15 iterations, not at every eval_every = 250 iterations (first "
        "difference at iteration 2,250)")
    assert fails(c / "resnet56-A-quick-s0")[0].startswith("metrics.jsonl iteration: goes back from")
    assert fails(c / "resnet56-A-quick-s1")[0] == "config.json iterations: 5000, but the quick schedule has 4000"


def test_warmup_must_follow_its_rule(copy):
    run = copy / "cifar10" / R110  # warm-up ended at iteration 75 (training error below 80%)
    assert [e["iteration"] for e in runs.read_metrics(run) if e["event"] == "warmup_end"] == [75]

    def late_end(evs):  # claims the warm-up ran to 100, with the lr to match
        out = []
        for e in evs:
            if e["event"] == "warmup_end":
                continue
            if e["event"] == "train" and e["iteration"] == 100:
                e = {**e, "lr": 0.01}
            out.append(e)
            if e["event"] == "train" and e["iteration"] == 100:
                out.append({"event": "warmup_end", "iteration": 100, "reason": "train_error_below_threshold"})
        return out

    edit_log(run, late_end)
    assert fails(run) == ["metrics.jsonl warmup_end: at iteration 100, but its rule (training error below 80.0% or "
                          "iteration 500) ends it at iteration 75"]
    edit_log(run, lambda evs: [e for e in evs if e["event"] != "warmup_end"])
    assert fails(run)[0] == ("metrics.jsonl warmup_end: missing: its rule (training error below 80.0% or iteration "
                             "500) ends the warm-up at iteration 75")


# ---------------------------------------------------------------------------- runs in progress
def cut_at_eval(run: Path, at: int, extra_train: int = 0, status: str = "running") -> None:
    """Make ``run`` look like a copy taken part-way: its log up to the evaluation at
    iteration ``at`` (plus ``extra_train`` later train events, logged before the copy)
    and a summary written at that evaluation."""
    evs = runs.read_metrics(run)
    keep = [e for e in evs if e["iteration"] <= at and e["event"] != "end"]
    keep += [e for e in evs if e["event"] == "train" and at < e["iteration"]][:extra_train]
    ev = next(e for e in evs if e["event"] == "eval" and e["iteration"] == at)
    (run / "metrics.jsonl").write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in keep))
    summ = json.loads((run / "summary.json").read_text())
    train_s = summ["train_s"] * at / 4000
    runs.write_summary(run, {**summ, "status": status, "iterations_done": at, "eval_iteration": at,
                             "final_train_error": ev["train_error"], "final_val_error": ev["val_error"],
                             "final_test_error": ev["test_error"], "wall_s": ev["wall_s"], "train_s": round(train_s, 2),
                             "images_per_s": round(at * 128 / train_s, 1)})


def test_runs_in_progress_pass_when_what_they_logged_agrees(copy, capsys):
    c = copy / "cifar10"
    cut_at_eval(c / R20, 2500, extra_train=7)  # a partial copy: 10 of 16 evaluations, past the first lr drop
    cut_at_eval(c / R110, 250)  # inside ResNet-110's first evaluations, warm-up over
    assert fails(c / R20) == fails(c / R110) == []
    code, out, _ = run_main(["check", str(c / R20), str(c / R110)], capsys)
    assert code == 0
    assert f"ok    {c / R20}: running (no process: copied or killed), 2,500 of 4,000 iterations, 10 evaluations" in out
    # the loop logs an evaluation, then saves its checkpoint, then writes the summary: one behind is fine
    evs = runs.read_metrics(c / "resnet20-A-quick-s1")
    cut_at_eval(c / "resnet20-A-quick-s1", 1000)
    with open(c / "resnet20-A-quick-s1" / "metrics.jsonl", "a") as fh:
        for e in evs:
            if 1000 < e["iteration"] <= 1250 and e["event"] in ("train", "eval"):
                fh.write(json.dumps(e) + "\n")
    assert fails(c / "resnet20-A-quick-s1") == []
    # but a summary that is not in the log, or flattened lr in a partial run, is named
    edit_summary(c / R110, final_test_error=12.0)
    assert fails(c / R110)[0].startswith("summary.json final_test_error: 12.0, but the last evaluation")
    edit_log(c / R20, flat_lr)
    assert fails(c / R20)[0].startswith("metrics.jsonl lr: 0.1 at iteration 2,025")
    # tables count only complete runs, and do not warn about an in-progress one that agrees
    table_runs = runs.load_runs(c / "resnet20-A-quick-s1")
    assert table_runs["status"].tolist() == ["interrupted"] and table_runs["problem"].tolist() == [None]


def test_an_evaluation_file_with_top5_above_top1_is_named(tmp_path):
    from resnet_repro.report.bench_reports import write_synthetic_run

    d = write_synthetic_run(tmp_path / "cifar10" / "resnet20-A-quick-s0", "resnet20", 0)
    (d / "eval-10crop.json").write_text(json.dumps({"protocol": "10crop", "top1_error": 7.0, "top5_error": 25.0}))
    assert fails(d) == ["eval-10crop.json top5_error: top-1 error 7.0, top-5 error 25.0: errors are percentages "
                        "and top-5 <= top-1"]
    assert runs.load_runs(tmp_path)["status"].tolist() == ["inconsistent"]
