"""Paper-schedule (64k iterations) and quick-schedule runs side by side: Table 6 gives
each schedule its own row per net and never averages them; runs still in progress are
shown with how far they are but counted in no mean; Figures 1 and 6 are drawn at one
schedule, runs in progress labelled, the axis ending where the schedule ends."""

from __future__ import annotations

import json
import math
import warnings

import pytest

from resnet_repro import runs
from resnet_repro.cli import main
from resnet_repro.report.bench_reports import write_synthetic_run
from resnet_repro.report.figures import curve_for, draw, figure_schedule
from resnet_repro.report.tables import RunSet, get_table, to_text


def cut_short(run_dir, iteration: int, status: str = "running"):
    """Turn a complete synthetic run into one stopped at ``iteration`` (as a run copied
    into results/ between working sessions): its log ends there, and its summary holds
    the last evaluation it logged."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    kept = [ln for ln in lines if json.loads(ln).get("iteration", 0) <= iteration and json.loads(ln)["event"] != "end"]
    (run_dir / "metrics.jsonl").write_text("\n".join(kept) + "\n")
    last = [json.loads(ln) for ln in kept if json.loads(ln)["event"] == "eval"][-1]
    summ = json.loads((run_dir / "summary.json").read_text())
    runs.write_summary(run_dir, {**summ, "status": status, "iterations_done": iteration,
                                 "final_train_error": last["train_error"], "final_val_error": last["val_error"],
                                 "final_test_error": last["test_error"], "eval_iteration": last["iteration"]})
    return last


@pytest.fixture
def mixed(tmp_path):
    root = tmp_path / "results"
    c = root / "cifar10"
    write_synthetic_run(c / "resnet20-A-paper-s0", "resnet20", 0, "paper", final_test_error=9.0)
    write_synthetic_run(c / "resnet20-A-paper-s1", "resnet20", 1, "paper", final_test_error=8.0)
    write_synthetic_run(c / "resnet20-A-quick-s0", "resnet20", 0, "quick", final_test_error=19.0)
    write_synthetic_run(c / "plain20-quick-s0", "plain20", 0, "quick", final_test_error=22.0)
    write_synthetic_run(c / "plain20-paper-s0", "plain20", 0, "paper", final_test_error=5.0)
    last = cut_short(c / "plain20-paper-s0", 12000)
    return root, last


def rows(t, net):
    return t.frame[t.frame["net"] == net]


def test_table6_has_a_row_per_schedule_and_never_mixes_them(mixed):
    root, last = mixed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = get_table(6, root)
    r20 = rows(t, "ResNet-20")
    assert list(r20["schedule"]) == ["paper", "quick"]  # the paper's protocol first
    paper_row, quick_row = r20.iloc[0], r20.iloc[1]
    assert (paper_row["n"], paper_row["mean"], paper_row["best"]) == (2, 8.5, 8.0)
    assert paper_row["std"] == pytest.approx(math.sqrt(0.5), abs=1e-12)
    assert paper_row["our error (%)"] == "8.50 ± 0.71 (n=2)"
    assert (quick_row["n"], quick_row["mean"]) == (1, 19.0)
    assert paper_row["paper error (%)"] == quick_row["paper error (%)"] == "8.75"
    # a net with only quick runs keeps one row
    assert list(rows(t, "ResNet-32")["schedule"]) == [""]
    assert "paper (64,000 iterations)" in t.caption and "quick (4,000 iterations)" in t.caption
    assert "never averaged together" in t.caption


def test_a_run_in_progress_is_shown_but_counted_in_no_mean(mixed):
    root, last = mixed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = get_table(6, root)
    p20 = rows(t, "plain-20")
    assert list(p20["schedule"]) == ["paper", "quick"]
    prog = p20.iloc[0]
    assert prog["n"] == 0 and math.isnan(prog["mean"])
    assert prog["our error (%)"] == (f"in progress, not counted: s0 at 12,000 of 64,000 iterations "
                                     f"(test {last['test_error']:.2f}%)")
    assert p20.iloc[1]["mean"] == 22.0  # the quick run, alone
    assert "In progress, not counted in any mean: 1 plain20 run(s) at schedule paper" in t.caption
    assert not any("plain20-paper-s0" in r for r in t.runs)  # not among the runs behind the numbers
    md = to_text(t, "markdown")
    assert "in progress, not counted: s0 at 12,000 of 64,000" in md


def test_a_second_seed_in_progress_beside_complete_runs_is_not_averaged(mixed):
    root, _ = mixed
    d = write_synthetic_run(root / "cifar10" / "resnet20-A-paper-s2", "resnet20", 2, "paper", final_test_error=1.0)
    cut_short(d, 30000, status="interrupted")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = get_table(6, root)
    paper_row = rows(t, "ResNet-20").iloc[0]
    assert (paper_row["n"], paper_row["mean"]) == (2, 8.5)
    assert "1 resnet20 run(s) at schedule paper" in t.caption


def test_figures_are_drawn_at_one_schedule_with_runs_in_progress_labelled(mixed):
    root, _ = mixed
    rs = RunSet.load(root)
    # default: the schedule of the longest complete run (ResNet-20 at paper)
    assert figure_schedule(rs, "cifar10", ["plain-20", "ResNet-20"]) == "paper"
    # Fig. 1's nets (plain-20/56) have no complete paper run: the quick schedule
    assert figure_schedule(rs, "cifar10", ["plain-20", "plain-56"]) == "quick"
    notes: list[str] = []
    c = curve_for(rs, "cifar10", "plain-20", notes, "paper")
    assert c is not None and c.done == 12000 and c.iterations == 64000
    assert c.label == "plain-20 (in progress: 12k of 64k)"
    assert int(c.frame["iteration"].max()) == 12000
    assert curve_for(rs, "cifar10", "plain-20", notes, "quick").done is None
    assert curve_for(rs, "cifar10", "plain-20", notes, None).schedule == "quick"  # a complete run only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d6 = draw(6, root, "paper")
        d1 = draw(1, root, "paper")
    assert "paper schedule, 64,000 iterations" in d6.title and "in progress" in d6.title
    left, middle = d6.figure.axes[0], d6.figure.axes[1]
    assert left.get_xlim() == (0.0, 6.4) and middle.get_xlim() == (0.0, 6.4)
    assert [t.get_text() for t in left.get_legend().get_texts()] == ["plain-20 (in progress: 12k of 64k)"]
    assert [t.get_text() for t in middle.get_legend().get_texts()] == ["ResNet-20"]
    assert any("plain20-paper-s0" in r for r in d1.runs)
    dq = draw(6, root, "quick")
    assert dq.figure.axes[0].get_xlim() == (0.0, 0.4)
    assert "quick schedule, 4,000 iterations (paper: 64,000)" in dq.title


def test_figure_cli_schedule_names_the_file_and_refuses_bad_input(mixed, tmp_path, capsys):
    root, _ = mixed
    out = tmp_path / "figs"
    out.mkdir()
    with pytest.raises(SystemExit) as e:
        main(["figure", "6", "--schedule", "paper", "--runs", str(root), "--out", str(out)])
    assert e.value.code == 0
    assert (out / "figure6-paper.png").is_file() and (out / "figure6-paper.pdf").is_file()
    for argv, msg in ((["figure", "6", "--schedule", "long"], "unknown --schedule 'long'"),
                      (["figure", "4", "--schedule", "paper"], "--schedule applies to Figures 1 and 6")):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main([*argv, "--runs", str(root), "--out", str(out)])
        err = capsys.readouterr().err
        assert e.value.code == 2 and msg in err and len(err.strip().splitlines()) == 1, err
