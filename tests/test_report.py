"""The Markdown report and the report benchmark."""

from __future__ import annotations

import json

import pytest

from resnet_repro.cli import main
from resnet_repro.report.bench_reports import bench_reports, write_synthetic_run
from resnet_repro.report.report import build_report


@pytest.fixture(scope="module")
def some_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("rep") / "results"
    for arch in ("plain20", "resnet20"):
        name = f"{arch}-{'A-' if arch.startswith('resnet') else ''}quick-s0"
        write_synthetic_run(root / "cifar10" / name, arch, 0, "quick", final_test_error=9.5 if arch == "plain20" else 8.5)
    return root


def test_report_contents(some_runs):
    out = some_runs / "REPORT.md"
    res = build_report(some_runs, out)
    text = out.read_text()
    for heading in ("## How to rerun", "## Tables", "### Table 1.", "### Table 6.", "### Table 8.",
                    "## Figures", "### Figure 1", "### Figure 6", "### Figure 7", "## Runs"):
        assert heading in text, heading
    assert "| ResNet-20 | 0.27 |" in text and "| 8.50 | 8.50 | 1 | quick |" in text
    assert "`resnet-repro run cifar10-depth --profile quick`" in text
    assert "![Figure 6" in text and "(figures/figure6.png)" in text
    assert (some_runs / "figures" / "figure6.pdf").stat().st_size > 0
    assert "Runs behind it (2): `cifar10/plain20-quick-s0`, `cifar10/resnet20-A-quick-s0`." in text
    summ = json.loads((some_runs / "cifar10" / "resnet20-A-quick-s0" / "summary.json").read_text())
    row = next(line for line in text.splitlines() if line.startswith("| `cifar10/resnet20-A-quick-s0` |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:7] == ["`cifar10/resnet20-A-quick-s0`", "cifar10", "resnet20", "A", "0", "quick (4,000)", "complete"]
    assert cells[7:11] == [f"{summ['final_train_error']:.2f}", f"{summ['final_val_error']:.2f}", "8.50",
                           f"{summ['wall_s']:,.0f}"]
    assert cells[12:] == ["1", "synthetic", "synthetic CPU"]  # threads, data copy, hardware
    assert {p.name for p in res["figures"]} >= {"figure1.png", "figure1.pdf", "figure6.png"}
    # Figure 4 has no ImageNet runs behind it: a line that says so, and no placeholder files
    assert "figure4.png" not in {p.name for p in res["figures"]} and not (some_runs / "figures" / "figure4.png").exists()
    assert "not drawn, no runs behind it yet; `resnet-repro run imagenet-plain-vs-residual --profile quick`" in text
    # rebuilt from the same runs, the report has the same bytes
    first = out.read_bytes()
    build_report(some_runs, out)
    assert out.read_bytes() == first


def test_report_cli_on_empty_results(tmp_path, capsys):
    (tmp_path / "none").mkdir()  # an empty folder of runs (one that does not exist is an error)
    with pytest.raises(SystemExit) as e:
        main(["report", "--runs", str(tmp_path / "none"), "--out", str(tmp_path / "r" / "REPORT.md")])
    assert e.value.code == 0
    text = (tmp_path / "r" / "REPORT.md").read_text()
    assert "not run yet" in text and "Not run yet: no run directories found." in text
    assert "wrote" in capsys.readouterr().out


def test_bench_reports_small():
    r = bench_reports(n_runs=12)
    assert r["n_runs"] == 12 and r["table6_n"] == 12
    assert set(r["tables_s"]) == {"1", "2", "3", "4", "5", "6", "7", "8", "cifar-shortcuts"}
    assert {1, 4, 6} <= set(r["figures_s"])
    assert all(v >= 0 for v in r["tables_s"].values()) and r["total_s"] > 0


def test_synthetic_runs_are_valid_run_directories(tmp_path):
    from resnet_repro.runs import load_runs
    from resnet_repro.train.config import load_config

    d = write_synthetic_run(tmp_path / "r", "resnet32", 3, "smoke", final_test_error=7.0)
    cfg = load_config(d / "config.json")
    assert (cfg.arch, cfg.seed, cfg.iterations) == ("resnet32", 3, 30)
    df = load_runs(tmp_path)
    assert df.iloc[0]["final_test_error"] == 7.0 and df.iloc[0]["status"] == "complete"
