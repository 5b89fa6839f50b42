"""Tables rebuilt from hand-made run directories: exact cells (mean, std, n, best), runs
of other recipes kept apart, runs that differ from their spec reported, ImageNet
evaluations, the paper-only tables, formats and the CLI."""

from __future__ import annotations

import json
import math
import warnings

import pytest

from resnet_repro import paper, runs
from resnet_repro.cli import main
from resnet_repro.errors import UserError
from resnet_repro.report.bench_reports import write_synthetic_run
from resnet_repro.report.tables import TABLE_KEYS, get_table, protocol_name, to_text


def row(t, net):
    rows = t.frame[t.frame["net"] == net]
    assert len(rows) == 1, net
    return rows.iloc[0]


@pytest.fixture
def golden(tmp_path):
    """ResNet-110 x 5 seeds and ResNet-20 x 2 at the quick schedule, plus runs that must
    not count: a smoke run, an interrupted run, and a run whose lr differs from its spec."""
    root = tmp_path / "results"
    errs110 = [6.5, 6.7, 6.4, 6.9, 6.6]
    for seed, e in enumerate(errs110):
        write_synthetic_run(root / "cifar10" / f"resnet110-A-quick-s{seed}", "resnet110", seed, "quick",
                            final_test_error=e)
    write_synthetic_run(root / "cifar10" / "resnet20-A-quick-s0", "resnet20", 0, "quick", final_test_error=8.0)
    write_synthetic_run(root / "cifar10" / "resnet20-A-quick-s1", "resnet20", 1, "quick", final_test_error=9.0)
    write_synthetic_run(root / "cifar10" / "resnet20-A-smoke-s0", "resnet20", 0, "smoke", final_test_error=50.0)
    d = write_synthetic_run(root / "cifar10" / "resnet20-A-quick-s2", "resnet20", 2, "quick", final_test_error=1.0)
    summ = json.loads((d / "summary.json").read_text())
    runs.write_summary(d, {**summ, "status": "interrupted"})
    write_synthetic_run(root / "cifar10" / "resnet20-A-quick-s3", "resnet20", 3, "quick", final_test_error=2.0,
                        lr=0.05)
    return root


def test_table6_golden_cells(golden):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = get_table(6, golden)
    r110 = row(t, "ResNet-110")
    # mean of 6.5, 6.7, 6.4, 6.9, 6.6 = 6.62; squared deviations sum to 0.148; /4 = 0.037
    assert r110["n"] == 5
    assert r110["mean"] == pytest.approx(6.62, abs=1e-12)
    assert r110["std"] == pytest.approx(math.sqrt(0.037), abs=1e-12)
    assert r110["best"] == 6.4
    assert r110["our error (%)"] == "6.62 ± 0.19 (n=5)"
    assert r110["our best error (%)"] == "6.40"
    assert r110["schedule"] == "quick"
    p110 = paper.cifar_table6()[110]
    assert r110["paper best error (%)"] == f"{p110['best']:.2f}"
    assert r110["paper error (%)"] == f"{p110['mean']:.2f} ± {p110['std']:.2f} (n=5)"
    r20 = row(t, "ResNet-20")
    # only the two complete quick runs with the spec's recipe: 8.0 and 9.0
    assert (r20["n"], r20["mean"], r20["best"]) == (2, 8.5, 8.0)
    assert r20["std"] == pytest.approx(math.sqrt(0.5), abs=1e-12)
    assert r20["our error (%)"] == "8.50 ± 0.71 (n=2)"
    # the lr-0.05 run is reported, not mixed in
    msgs = [str(w.message) for w in caught]
    assert any("resnet20-A-quick-s3" in m and "lr: 0.05 there vs 0.1 in the spec" in m and "cifar10-depth" in m
               for m in msgs), msgs
    assert "1 run(s) left out" in t.caption
    assert "1 resnet20 A run(s) at schedule smoke not mixed in" in t.caption
    assert "quick (4,000 iterations)" in t.caption and "synthetic CPU" in t.caption
    assert len(t.runs) == 7 and all("quick" in r for r in t.runs)


def test_table6_cells_without_runs_name_the_command(tmp_path):
    t = get_table(6, tmp_path)
    r = row(t, "ResNet-56")
    # the command writes where the table reads (run's default is results/)
    assert r["our error (%)"] == f"not run yet: resnet-repro run cifar10-depth --profile quick --out {tmp_path}"
    assert row(t, "ResNet-1202")["our error (%)"] == \
        f"not run yet: resnet-repro run cifar10-1202 --profile quick --out {tmp_path}"
    assert row(t, "ResNet-110")["our error (%)"] == \
        f"not run yet: resnet-repro run cifar10-depth --profile quick --out {tmp_path}"
    assert r["n"] == 0 and math.isnan(r["mean"])
    assert r["paper error (%)"] == f"{paper.cifar_table6()[56]['error']:.2f}"
    assert "not run yet" in t.caption
    # the paper's other methods keep their rows
    assert row(t, "Maxout")["paper error (%)"] == "9.38"
    assert t.runs == []


def test_all_tables_build_from_nothing_in_every_format(tmp_path):
    for key in TABLE_KEYS:
        t = get_table(key, tmp_path)
        assert len(t.frame) > 0
        md, csv, tex = (to_text(t, f) for f in ("markdown", "csv", "latex"))
        assert t.title in md and t.caption in md
        assert csv.splitlines()[0].startswith(str(t.frame.columns[0]))
        assert "\\begin{tabular}" in tex and "\\bottomrule" in tex
        assert to_text(get_table(key, tmp_path), "markdown") == md  # deterministic
    for n, why in ((5, "ensembles"), (7, "detection"), (8, "detection")):
        t = get_table(n, tmp_path)
        assert all(why in v for v in t.frame["ours"])
    t8 = get_table(8, tmp_path)
    assert t8.frame.iloc[1].tolist()[:3] == ["ResNet-101", "48.40", "27.20"]


def test_table1_is_wired(tmp_path):
    t = get_table(1, tmp_path)
    assert list(t.frame["net"])[:2] == ["plain-18", "ResNet-18"]
    assert len(t.frame) == 10
    r50 = t.frame[t.frame["net"] == "ResNet-50"].iloc[0]
    assert r50["paper mult-adds (1e9)"] == "3.800"


def imagenet_run(root, arch, shortcut, seed=0, evals=None, status="complete", iterations=600000):
    d = root / "imagenet" / f"{arch}-{shortcut or 'plain'}-s{seed}"
    runs.write_config(d, {"arch": arch, "shortcut": shortcut, "dataset": "imagenet", "schedule": "paper",
                          "iterations": iterations, "seed": seed, "lr": 0.1, "batch_size": 256},
                      {"hardware": {"gpu": "test GPU"}, "data_source_kind": "imagenet-folder"})
    runs.write_summary(d, {"status": status, "iterations_done": iterations})
    runs.log_event(d, {"event": "start", "iteration": 0})  # a log the summary agrees with (resnet_repro.runcheck)
    runs.log_event(d, {"event": "end", "iteration": iterations, "status": status})
    for proto, (t1, t5) in (evals or {}).items():
        (d / f"eval-{proto}.json").write_text(json.dumps({"protocol": proto, "top1_error": t1, "top5_error": t5}))
    return d


def test_imagenet_tables_read_eval_files(tmp_path):
    imagenet_run(tmp_path, "resnet34", "A", 0, {"10crop": (25.5, 8.0)})
    imagenet_run(tmp_path, "resnet34", "A", 1, {"10crop": (24.5, 7.0)})
    imagenet_run(tmp_path, "resnet34", "B", 0, {"10crop": (24.0, 7.2), "multiscale": (22.0, 6.0)})
    imagenet_run(tmp_path, "plain34", None, 0, {})  # trained, not evaluated
    imagenet_run(tmp_path, "resnet50", "B", 0, {"10crop": (20.0, 5.0)}, status="interrupted")
    t2 = get_table(2, tmp_path)
    r = row(t2, "ResNet-34")
    assert (r["n"], r["mean"], r["best"]) == (2, 25.0, 24.5)
    assert r["our top-1 error (%)"] == "25.00 ± 0.71 (n=2)"
    assert r["paper top-1 error (%)"] == f"{paper.table(2)['rows']['ResNet-34']:.2f}"
    assert row(t2, "plain-34")["our top-1 error (%)"] == "trained (1), no 10-crop evaluation yet"
    assert row(t2, "plain-18")["our top-1 error (%)"].startswith("not run yet: resnet-repro run imagenet-plain-vs-residual")
    t3 = get_table(3, tmp_path)
    assert row(t3, "ResNet-34 B")["our top-5 error (%)"] == "7.20"
    assert row(t3, "ResNet-34 A")["top5_mean"] == 7.5
    assert row(t3, "VGG-16")["our top-1 error (%)"] == "— (not trained here)"
    assert row(t3, "GoogLeNet")["paper top-1 error (%)"] == "—"
    assert row(t3, "ResNet-50")["n"] == 0  # interrupted runs do not count
    t4 = get_table(4, tmp_path)
    assert (row(t4, "ResNet-34 B")["mean"], row(t4, "ResNet-34 B")["top5_mean"]) == (22.0, 6.0)
    assert row(t4, "ResNet-34 C")["our top-1 error (%)"].startswith("not run yet: resnet-repro run imagenet-shortcuts")
    assert "test GPU" in t4.caption


def test_protocol_names():
    assert [protocol_name(p) for p in ("10crop", "10-crop", "ten_crop", "multi-scale", "multiscale",
                                       "center", "center-crop", "1-crop")] == \
        ["10-crop", "10-crop", "10-crop", "multi-scale", "multi-scale", "center", "center", "center"]


def test_cifar_shortcuts_table(tmp_path):
    write_synthetic_run(tmp_path / "cifar10" / "r20b", "resnet20", 0, "quick", shortcut="B", final_test_error=8.25)
    t = get_table("cifar-shortcuts", tmp_path)
    assert len(t.frame) == 12
    b = row(t, "ResNet-20 B")
    assert (b["n"], b["best"], b["our error (%)"]) == (1, 8.25, "8.25")
    assert row(t, "ResNet-20 C")["our error (%)"] == \
        f"not run yet: resnet-repro run cifar10-shortcuts --profile quick --out {tmp_path}"
    assert row(t, "ResNet-20 A")["paper error (%)"] == f"{paper.cifar_table6()[20]['error']:.2f}"
    assert float(b["params (M)"]) > float(row(t, "ResNet-20 A")["params (M)"])


def test_unknown_table():
    with pytest.raises(UserError, match="Tables 1 to 8"):
        get_table(9, ".")


def test_cli_table_formats_and_out(golden, tmp_path, capsys):
    out = tmp_path / "t6.csv"
    with pytest.raises(SystemExit) as e:
        main(["table", "6", "--runs", str(golden), "--format", "csv", "--out", str(out)])
    assert e.value.code == 0
    text = out.read_text()
    assert "ResNet-110" in text and "6.62 ± 0.19 (n=5)" in text
    err = capsys.readouterr().err
    assert "warning:" in err and "resnet20-A-quick-s3" in err
    with pytest.raises(SystemExit) as e:
        main(["table", "9"])
    assert e.value.code == 2
    assert "Tables 1 to 8" in capsys.readouterr().err


@pytest.mark.parametrize("data_dir, kind, expect", [
    ("../shared/data/cifar10-jpeg.tar.gz", "image-folder (jpg)", "cifar10-jpeg.tar.gz (image-folder (jpg))"),
    ("data/cifar10/cifar-10-batches-py/", "cifar-10-batches-py", "cifar-10-batches-py (original CIFAR-10 batches)"),
    ("synthetic", "synthetic", "synthetic"),
    (None, "image-folder (png)", "image-folder (png)"),
    ("/data/c10", None, "c10"),
    (None, None, None),
    (3, ["x"], None),
])
def test_data_copy_names_the_file_and_kind(data_dir, kind, expect):
    from resnet_repro.runs import data_copy_name

    assert data_copy_name(data_dir, kind) == expect


def test_terminal_table_moves_long_hints_below_it(tmp_path):
    """In the terminal view a "not run yet: COMMAND" cell shows "not run yet [k]" and the
    command is printed whole below the table, once per distinct command; the Markdown
    output keeps the full cell."""
    import io

    from rich.console import Console

    from resnet_repro.report.render import print_table

    (tmp_path / "empty").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = get_table(6, tmp_path / "empty")
    buf = io.StringIO()
    print_table(Console(file=buf, width=80, color_system=None), t)
    lines = buf.getvalue().splitlines()
    assert f"[1] resnet-repro run cifar10-depth --profile quick --out {tmp_path / 'empty'}" in lines
    assert f"[2] resnet-repro run cifar10-1202 --profile quick --out {tmp_path / 'empty'}" in lines
    assert not any(ln.startswith("[3]") for ln in lines)
    body = "\n".join(ln for ln in lines if ln.startswith("│"))
    assert body.count("[1]") == 9 and body.count("[2]") == 1  # 5 ResNets and 4 plain nets of cifar10-depth
    assert "resnet-repro" not in body
    assert "not run yet: resnet-repro run cifar10-depth --profile quick" in to_text(t, "markdown")


def test_fill_command_follows_the_runs_it_reads(tmp_path, monkeypatch):
    """The "not run yet" command uses the profile of the runs already in the table and
    writes where the table reads: no --out for results/ (run's default), the folder
    otherwise, and the spec's quick profile when there are no runs."""
    monkeypatch.chdir(tmp_path)
    write_synthetic_run(tmp_path / "results" / "cifar10" / "plain20-quick-s0", "plain20", 0, "quick")
    t = get_table(6, "results")
    assert row(t, "ResNet-56")["our error (%)"] == "not run yet: resnet-repro run cifar10-depth --profile quick"
    smoke = tmp_path / "runs" / "quickstart"
    for arch in ("plain20", "resnet20"):
        write_synthetic_run(smoke / f"{arch}-smoke-s0", arch, 0, "smoke")
    t = get_table(6, smoke)
    assert row(t, "ResNet-56")["our error (%)"] == \
        f"not run yet: resnet-repro run cifar10-depth --profile smoke --out {smoke}"
    t = get_table(6, smoke / "plain20-smoke-s0")  # one run directory: no --out into it
    assert row(t, "ResNet-56")["our error (%)"] == "not run yet: resnet-repro run cifar10-depth --profile smoke"


def test_every_column_says_error_even_without_a_caption(capsys):
    """A CSV has no caption: each column that holds a top-1/top-5 number or a best/mean of
    ours says that it is an error; the numeric companions have names of their own."""
    from conftest import ROOT, run_main

    for key in TABLE_KEYS:
        code, out, _ = run_main(["table", key, "--format", "csv", "--runs", str(ROOT / "results")], capsys)
        assert code == 0
        header = out.splitlines()[0].split(",")
        assert len(header) == len(set(header)), (key, header)
        for col in header:
            if any(w in col for w in ("top-1", "top-5", "best", "mean", "std")):
                assert "error" in col, (key, col)
    code, out, _ = run_main(["table", "2", "--format", "csv"], capsys)
    assert out.splitlines()[0].startswith("net,paper top-1 error (%),our top-1 error (%),our best top-1 error (%)")
