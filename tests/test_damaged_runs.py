"""Stored runs that are missing or damaged, as tables, figures, the report and the run
planner read them: a --runs path that does not exist is a one-line error, and every
damaged run is named in a warning instead of vanishing (never a crash)."""

from __future__ import annotations

import json
import warnings

import pytest

from conftest import run_main
from resnet_repro import runs
from resnet_repro.experiments import load_spec, plan
from resnet_repro.report import figures
from resnet_repro.report.bench_reports import write_synthetic_run
from resnet_repro.report.figure7 import collect_responses
from resnet_repro.report.report import build_report
from resnet_repro.report.tables import get_table


def caught_warnings(fn, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    return out, [str(w.message) for w in caught]


def cell(t, net, col="our error (%)"):
    rows = t.frame[t.frame["net"] == net]
    assert len(rows) == 1, net
    return rows.iloc[0][col]


def run(root, arch, seed=0, schedule="quick", err=8.0):
    name = f"{arch}-{'A-' if arch.startswith('resnet') else ''}{schedule}-s{seed}"
    return write_synthetic_run(root / "cifar10" / name, arch, seed, schedule, final_test_error=err)


# ---------------------------------------------------------------------------- 1. --runs that does not exist
@pytest.mark.parametrize("argv", [["table", "6"], ["table", "cifar-shortcuts", "--out", "{tmp}/t.md"],
                                  ["figure", "6", "--out", "{tmp}/fig6"], ["figure", "1", "--out", "{tmp}/fig1"],
                                  ["figure", "7", "--out", "{tmp}/fig7"], ["report", "--out", "{tmp}/R.md"]])
def test_runs_path_that_does_not_exist_is_a_one_line_error(tmp_path, capsys, argv):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    missing = tmp_path / "nonexistent"
    argv = [a.replace("{tmp}", str(out_dir)) for a in argv] + ["--runs", str(missing)]
    code, out, err = run_main(argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert f"--runs {missing} does not exist" in lines[0] and "Traceback" not in err
    assert list(out_dir.iterdir()) == []  # nothing written
    assert not missing.exists()


def test_tables_that_read_no_runs_ignore_runs(tmp_path, capsys):
    code, out, _ = run_main(["table", "7", "--runs", str(tmp_path / "nonexistent"), "--format", "csv"], capsys)
    assert code == 0 and "not reproduced" in out


# ---------------------------------------------------------------------------- 2. damaged summary / config
@pytest.mark.parametrize("content", [b'{"status": "compl', b"", b"[1,2]"])
def test_unparseable_summary_is_warned_and_the_cell_says_damaged(tmp_path, content):
    run(tmp_path, "resnet20", err=8.0)
    d = run(tmp_path, "resnet32", err=7.0)
    (d / "summary.json").write_bytes(content)
    t, msgs = caught_warnings(get_table, 6, tmp_path)
    assert any(f"{d}/summary.json is damaged" in m for m in msgs), msgs
    assert cell(t, "ResNet-20") == "8.00"
    text = cell(t, "ResNet-32")
    assert "not run yet" not in text and "damaged" in text and "resnet32-A-quick-s0/summary.json" in text
    assert cell(t, "ResNet-44").startswith("not run yet")  # no run of it at all


def test_unparseable_summary_in_the_report_runs_and_warnings(tmp_path):
    d = run(tmp_path / "results", "resnet32")
    (d / "summary.json").write_text("[1,2]")
    res = build_report(tmp_path / "results", tmp_path / "REPORT.md")
    text = (tmp_path / "REPORT.md").read_text()
    assert any(f"{d}/summary.json is damaged" in w for w in res["warnings"])
    assert "## Warnings" in text and "summary.json is damaged" in text.split("## Warnings")[1]


def test_missing_config_and_missing_summary_are_warned(tmp_path):
    a = run(tmp_path, "resnet20")
    (a / "config.json").unlink()
    b = run(tmp_path, "resnet32")
    (b / "summary.json").unlink()
    c = run(tmp_path, "resnet44")
    summ = json.loads((c / "summary.json").read_text())
    del summ["final_test_error"]
    runs.write_summary(c, summ)
    d = run(tmp_path, "resnet56")
    summ = json.loads((d / "summary.json").read_text())
    del summ["status"]
    runs.write_summary(d, summ)
    t, msgs = caught_warnings(get_table, 6, tmp_path)
    joined = " | ".join(msgs)
    assert f"{a}/config.json is missing" in joined
    assert f"{b}/summary.json is missing" in joined
    assert f"{c}/summary.json: a complete run without final_test_error" in joined
    assert f"{d}/summary.json: status None is not one of" in joined
    for net, f in (("ResNet-20", "config.json"), ("ResNet-32", "summary.json"), ("ResNet-44", "summary.json"),
                   ("ResNet-56", "summary.json")):
        text = cell(t, net)
        assert "not run yet" not in text and f in text and "damaged" in text, (net, text)


def test_damaged_summary_in_the_run_plan(tmp_path):
    root = tmp_path / "copy"
    for arch in ("plain20", "resnet20"):
        run(root, arch)
    bad = root / "cifar10" / "resnet20-A-quick-s0" / "summary.json"
    bad.write_text("[1,2]")
    spec = load_spec("cifar10-depth")
    plans = {p.label: p for p in plan(spec, "quick", out=root, data_dir="synthetic", jobs=1)}
    assert plans["plain20-quick-s0"].status == "complete"
    p = plans["resnet20-A-quick-s0"]
    assert p.status == "conflict" and not p.todo  # no checkpoints: resuming would retrain it over its logs
    assert f"{bad} is damaged" in p.note


def test_damaged_summary_with_checkpoints_resumes(tmp_path):
    root = tmp_path / "copy"
    d = run(root, "resnet20")
    (d / "summary.json").write_text("")
    (d / "checkpoints").mkdir()
    (d / "checkpoints" / "index.json").write_text("{}")
    spec = load_spec("cifar10-depth")
    p = {p.label: p for p in plan(spec, "quick", out=root, data_dir="synthetic", jobs=1)}["resnet20-A-quick-s0"]
    assert p.status == "interrupted" and "summary.json is damaged" in p.note
    (d / "checkpoints" / "final.pt").write_bytes(b"weights")  # it finished: resuming would retrain its tail
    p = {p.label: p for p in plan(spec, "quick", out=root, data_dir="synthetic", jobs=1)}["resnet20-A-quick-s0"]
    assert p.status == "conflict" and not p.todo and "final.pt" in p.note


# ---------------------------------------------------------------------------- 3. missing metrics.jsonl
def test_missing_metrics_drops_a_curve_with_a_warning(tmp_path):
    run(tmp_path, "plain20")
    d = run(tmp_path, "plain56")
    (d / "metrics.jsonl").unlink()
    drawn, msgs = caught_warnings(figures.draw, 1, tmp_path)
    assert any(m.startswith(f"{d}: metrics.jsonl log: missing") and "left out of tables and figures" in m
               for m in msgs), msgs
    assert drawn.runs == [str(tmp_path / "cifar10" / "plain20-quick-s0")]
    assert [ln.get_label() for ln in drawn.figure.axes[0].lines] == ["plain-20"]


def test_a_seed_without_log_gives_way_to_the_next(tmp_path):
    d0 = run(tmp_path, "plain20", seed=0)
    d1 = run(tmp_path, "plain20", seed=1, err=9.0)
    (d0 / "metrics.jsonl").write_text("")
    drawn, msgs = caught_warnings(figures.draw, 1, tmp_path)
    assert drawn.runs == [str(d1)]
    assert any(m.startswith(f"{d0}: metrics.jsonl log: holds no events") for m in msgs), msgs


# ---------------------------------------------------------------------------- 4. caption counts
def test_runs_of_other_schedules_are_counted_per_net(tmp_path):
    for arch in ("resnet20", "plain20"):
        run(tmp_path, arch, schedule="quick")
        run(tmp_path, arch, schedule="smoke", err=50.0)
    t, _ = caught_warnings(get_table, 6, tmp_path)
    assert "1 resnet20 A run(s) at schedule smoke not mixed in" in t.caption
    assert "1 plain20 run(s) at schedule smoke not mixed in" in t.caption


# ---------------------------------------------------------------------------- 5. threads
def test_report_prefers_the_threads_the_summary_recorded(tmp_path):
    d = run(tmp_path / "results", "resnet20")
    conf = json.loads((d / "config.json").read_text())
    conf["config"]["threads"] = None
    (d / "config.json").write_text(json.dumps(conf))
    summ = json.loads((d / "summary.json").read_text())
    runs.write_summary(d, {**summ, "threads": 2})
    build_report(tmp_path / "results", tmp_path / "REPORT.md")
    row = next(line for line in (tmp_path / "REPORT.md").read_text().splitlines()
               if line.startswith("| `results/cifar10/resnet20-A-quick-s0` |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[12] == "2"


# ---------------------------------------------------------------------------- 6. errors out of range
@pytest.mark.parametrize("bad", [-5, 100.5, 1e9])
def test_errors_outside_0_100_are_warned_and_ignored(tmp_path, bad):
    d = run(tmp_path, "resnet20")
    summ = json.loads((d / "summary.json").read_text())
    runs.write_summary(d, {**summ, "final_test_error": bad})
    df, msgs = caught_warnings(runs.load_runs, tmp_path)
    assert df.iloc[0]["final_test_error"] is None
    assert any(f"{d}/summary.json: final_test_error is out of range" in m and "ignored" in m for m in msgs), msgs
    t, _ = caught_warnings(get_table, 6, tmp_path)
    assert str(bad) not in cell(t, "ResNet-20") and "damaged" in cell(t, "ResNet-20")


def test_errors_at_the_ends_of_the_range_are_kept(tmp_path):
    d = run(tmp_path, "resnet20")
    summ = json.loads((d / "summary.json").read_text())
    runs.write_summary(d, {**summ, "final_test_error": 0, "final_train_error": 100})
    evs = runs.read_metrics(d)  # the log says the same (else the run disagrees with itself: resnet_repro.runcheck)
    for ev in evs:
        if ev["iteration"] == 4000 and ev["event"] in ("train", "eval"):
            ev.update({"train_error": 100} if ev["event"] == "train" else {"train_error": 100, "test_error": 0})
    (d / "metrics.jsonl").write_text("".join(json.dumps(ev) + "\n" for ev in evs))
    df, msgs = caught_warnings(runs.load_runs, tmp_path)
    assert df.iloc[0]["final_test_error"] == 0 and df.iloc[0]["final_train_error"] == 100 and msgs == []


# ---------------------------------------------------------------------------- 7-8. Fig. 7
def add_responses(d, arch, n_layers, shortcut="A"):
    layers = [{"index": i + 1, "conv": f"c{i}", "bn": f"b{i}", "std": 1.0 + i} for i in range(n_layers)]
    (d / "responses.json").write_text(json.dumps({
        "format": 1, "arch": arch, "paper_name": arch, "shortcut": shortcut, "schedule": "quick",
        "iterations": 4000, "seed": 0, "split": "test", "images": 10000, "layers": layers}))


def test_fig7_hint_for_an_existing_run_is_the_responses_command(tmp_path):
    p20 = run(tmp_path, "plain20")
    add_responses(p20, "plain20", 19, None)
    r56 = run(tmp_path, "resnet56")
    (r56 / "responses.json").write_text('{"format": 1, "layers": "?"}')
    _, msgs = caught_warnings(collect_responses, [tmp_path])  # no final.pt (still training, or a clone)
    hint = next(m for m in msgs if "ResNet-56" in m and "Fig. 7 nets without responses" in m)
    assert "resnet-repro train --arch" in hint and "resnet-repro responses RUN_DIR" in hint
    (r56 / "checkpoints").mkdir()
    (r56 / "checkpoints" / "final.pt").write_bytes(b"weights")  # finished: only the measurement is missing
    _, msgs = caught_warnings(collect_responses, [tmp_path])
    hint = next(m for m in msgs if "ResNet-56" in m and "Fig. 7 nets without responses" in m)
    assert f"resnet-repro responses {r56}" in hint and "train" not in hint
    train_hint = next(m for m in msgs if "plain-56" in m and "Fig. 7 nets without responses" in m)
    assert "resnet-repro train --arch plain56" in train_hint and "ResNet-56" not in train_hint


@pytest.mark.parametrize("n_layers", [18, 5, 20])
def test_fig7_responses_with_another_number_of_layers_warn(tmp_path, n_layers):
    good = run(tmp_path, "plain20")
    add_responses(good, "plain20", 19, None)
    d = run(tmp_path, "resnet20")
    add_responses(d, "resnet20", n_layers)
    rs, msgs = caught_warnings(collect_responses, [tmp_path])
    assert [r["arch"] for r in rs] == ["plain20"]
    assert any(f"{d}/responses.json holds {n_layers} layers, but ResNet-20 has 19" in m
               and f"resnet-repro responses {d}" in m for m in msgs), msgs


def test_report_fig7_has_a_caption_and_its_runs(tmp_path):
    root = tmp_path / "results"
    for arch in ("plain20", "resnet20"):
        add_responses(run(root, arch), arch, 19, "A" if arch.startswith("resnet") else None)
    build_report(root, root / "REPORT.md")
    text = (root / "REPORT.md").read_text()
    sec = text.split("### Figure 7", 1)[1].split("\n## ", 1)[0]
    assert "![Fig. 7: std of the 3x3 layer responses" in sec and "(figures/figure7.png)" in sec
    assert "PDF: `figures/figure7.pdf`." in sec
    assert "Runs behind it (2): `cifar10/plain20-quick-s0`, `cifar10/resnet20-A-quick-s0`." in sec


# ---------------------------------------------------------------------------- the same run in two folders
def test_a_run_found_twice_is_counted_once(tmp_path):
    """`make quickstart` and `run --out runs` can hold the same recipe and seed in two
    folders: one sample, not n=2 (a std of 0 from one run)."""
    a = write_synthetic_run(tmp_path / "quickstart" / "resnet20-A-smoke-s0", "resnet20", 0, "smoke",
                            final_test_error=70.8)
    b = write_synthetic_run(tmp_path / "cifar10" / "resnet20-A-smoke-s0", "resnet20", 0, "smoke",
                            final_test_error=70.8)
    write_synthetic_run(tmp_path / "cifar10" / "resnet20-A-smoke-s1", "resnet20", 1, "smoke", final_test_error=72.0)
    df, msgs = caught_warnings(runs.load_runs, tmp_path)
    assert sorted(df["seed"]) == [0, 1]
    assert sum("(the same recipe and seed); counted once" in m for m in msgs) == 1
    assert any(str(a) in m and str(b) in m for m in msgs), msgs
    t, _ = caught_warnings(get_table, 6, tmp_path)
    assert cell(t, "ResNet-20").endswith("(n=2)")
    # an interrupted copy does not replace the complete one
    summ = json.loads((b / "summary.json").read_text())
    (b / "summary.json").write_text(json.dumps({**summ, "status": "interrupted"}))
    df, _ = caught_warnings(runs.load_runs, tmp_path)
    row = df[df["seed"] == 0].iloc[0]
    assert row["status"] == "complete" and row["run_dir"] == str(a)


@pytest.mark.parametrize("err, problem", [(8.0, None), (0.0, None), (100.0, None), (-5.0, "out of range"),
                                          (100.5, "out of range"), ("x", "not a number")])
def test_summary_problem_checks_error_range(err, problem):
    """The check `train --resume` uses on a complete run's summary range-checks errors too."""
    summ = {"status": "complete", "iterations_done": 10, "final_test_error": err, "wall_s": 1.0}
    why = runs.summary_problem(summ, 10)
    assert why is None if problem is None else problem in why and "final_test_error" in why
