"""Figures rebuilt from hand-made run directories: files, the paper's form (panels, line
styles, the compressed axis of Fig. 6), curves equal to the logged eval events, titles
naming a shorter schedule, byte-for-byte rebuilds, corrupt log lines, Fig. 7 dispatch."""

from __future__ import annotations

import sys
import types
import warnings

import numpy as np
import pytest

from resnet_repro import runs
from resnet_repro.errors import UserError
from resnet_repro.report import figures
from resnet_repro.report.bench_reports import write_synthetic_run


@pytest.fixture(scope="module")
def cifar_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("figs") / "results"
    for arch in ("plain20", "plain56", "resnet20", "resnet56", "resnet110"):
        for seed in (0, 1):
            name = f"{arch}-{'A-' if arch.startswith('resnet') else ''}quick-s{seed}"
            write_synthetic_run(root / "cifar10" / name, arch, seed, "quick", final_test_error=8 + seed)
    return root


def test_figure1_files_and_curves(cifar_runs, tmp_path):
    paths = figures.figure(1, cifar_runs, tmp_path / "fig1")
    assert [p.name for p in paths] == ["fig1.png", "fig1.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[0].stat().st_size > 10_000
    assert paths[1].read_bytes()[:5] == b"%PDF-" and paths[1].stat().st_size > 5_000
    d = figures.draw(1, cifar_runs)
    left, right = d.figure.axes
    assert [ln.get_label() for ln in left.lines] == ["plain-20", "plain-56"]
    # the curve is the seed-0 run's eval events: x in units of 1e4 iterations
    ev = [e for e in runs.read_metrics(cifar_runs / "cifar10" / "plain20-quick-s0") if e["event"] == "eval"]
    np.testing.assert_allclose(left.lines[0].get_xdata(), [e["iteration"] / 1e4 for e in ev])
    np.testing.assert_allclose(left.lines[0].get_ydata(), [e["train_error"] for e in ev])
    np.testing.assert_allclose(right.lines[0].get_ydata(), [e["test_error"] for e in ev])
    assert right.lines[0].get_ydata()[-1] == 8.0  # seed 0, not the mean with seed 1
    assert left.get_ylabel() == "training error (%)" and right.get_ylabel() == "test error (%)"
    # The paper's 0-20% axis, grown in steps of 10 to show curves that lie above it.
    top = max(max(ln.get_ydata()) for ln in left.lines)
    assert left.get_ylim() == (0.0, 20.0 if top <= 20 else float(np.ceil(top / 10) * 10))
    assert "quick schedule, 4,000 iterations (paper: 64,000); data: synthetic" in d.title
    assert d.runs == [str(cifar_runs / "cifar10" / n) for n in ("plain20-quick-s0", "plain56-quick-s0")]


def test_figure6_form(cifar_runs, tmp_path):
    d = figures.draw(6, cifar_runs)
    assert figures.yticklabels(d.figure) == [["0", "5", "10", "20"], ["0", "5", "10", "20"],
                                             ["0", "1", "5", "10", "20"]]
    left, middle, right = d.figure.axes
    # dashed training error and bold (solid, wider) test error for each net
    styles = [(ln.get_linestyle(), ln.get_linewidth()) for ln in middle.lines]
    assert styles == [("--", 0.9), ("-", 2.0)] * 3  # ResNet-20, 56, 110 (32, 44 not run)
    assert [ln.get_label() for ln in middle.lines if ln.get_linestyle() == "-"] == ["ResNet-20", "ResNet-56",
                                                                                    "ResNet-110"]
    assert len(left.lines) == 4 and len(right.lines) == 2  # plain-20/56; ResNet-110 only
    assert "not run yet" not in " ".join(t.get_text() for t in right.texts)
    # the compressed axis: ticks 0, 5, 10, 20 equally spaced
    pos = left.transData.transform([(0, v) for v in (0, 5, 10, 20)])[:, 1]
    np.testing.assert_allclose(np.diff(pos), np.diff(pos)[0], rtol=1e-6)
    paths = figures.figure(6, cifar_runs, tmp_path)
    assert {p.name for p in paths} == {"figure6.png", "figure6.pdf"} and all(p.stat().st_size > 0 for p in paths)


def test_figure6_grows_its_axis_for_curves_that_end_above_20(tmp_path):
    root = tmp_path / "results"
    write_synthetic_run(root / "cifar10" / "plain56-quick-s0", "plain56", 0, "quick", final_test_error=45.0)
    write_synthetic_run(root / "cifar10" / "resnet20-A-quick-s0", "resnet20", 0, "quick", final_test_error=12.0)
    d = figures.draw(6, root)
    # left: plain-56 ends at 45% -> 0, 5, 10, 20 and 50, equally spaced; middle keeps the paper's axis
    assert figures.yticklabels(d.figure)[:2] == [["0", "5", "10", "20", "50"], ["0", "5", "10", "20"]]
    left = d.figure.axes[0]
    pos = left.transData.transform([(0, v) for v in (0, 5, 10, 20, 50)])[:, 1]
    np.testing.assert_allclose(np.diff(pos), np.diff(pos)[0], rtol=1e-6)
    assert any("paper's axis ends at 20%" in t.get_text() for t in left.texts)
    assert left.lines[-1].get_ydata()[-1] == 45.0


def test_compressed_axis_round_trip():
    ax = figures.CompressedAxis([0, 5, 10, 20])
    y = np.array([-1.0, 0, 2.5, 5, 7, 10, 15, 20, 40])
    np.testing.assert_allclose(ax.forward(y), [-0.2, 0, 0.5, 1, 1.4, 2, 2.5, 3, 5])
    np.testing.assert_allclose(ax.inverse(ax.forward(y)), y)


def test_figures_rebuild_byte_for_byte(cifar_runs, tmp_path):
    a = figures.figure(6, cifar_runs, tmp_path / "a")
    b = figures.figure(6, cifar_runs, tmp_path / "b")
    for x, y in zip(a, b, strict=True):
        assert x.read_bytes() == y.read_bytes()
    assert b"CreationDate" not in a[1].read_bytes()


def test_empty_results_say_not_run_yet(tmp_path):
    for n in (1, 4, 6):
        d = figures.draw(n, tmp_path)
        texts = [t.get_text() for ax in d.figure.axes for t in ax.texts]
        assert texts and all(t.startswith("not run yet:") for t in texts)
        assert d.runs == []
    d = figures.draw(4, tmp_path)
    assert "resnet-repro run imagenet-plain-vs-residual --profile quick" in d.figure.axes[0].texts[0].get_text()


def test_figure4_from_imagenet_runs(tmp_path):
    d = tmp_path / "imagenet" / "resnet18"
    runs.write_config(d, {"arch": "resnet18", "shortcut": "A", "dataset": "imagenet", "schedule": "paper",
                          "iterations": 600000, "seed": 0}, {})
    runs.write_summary(d, {"status": "complete", "iterations_done": 600000, "final_train_error": 25.0,
                           "final_val_error": 30.5})
    runs.log_event(d, {"event": "start", "iteration": 0})
    for it, tr, va in ((100000, 50.0, 45.0), (600000, 25.0, 30.5)):
        runs.log_event(d, {"event": "eval", "iteration": it, "train_error": tr, "val_error": va})
    runs.log_event(d, {"event": "end", "iteration": 600000, "status": "complete"})
    fig = figures.draw(4, tmp_path)
    right = fig.figure.axes[1]
    assert [(ln.get_linewidth(), list(ln.get_ydata())) for ln in right.lines] == [(0.8, [50.0, 25.0]),
                                                                                   (2.2, [45.0, 30.5])]
    np.testing.assert_allclose(right.lines[1].get_xdata(), [10.0, 60.0])
    assert "ours: paper schedule, 600,000 iterations" in fig.title and "(paper:" not in fig.title


def test_corrupt_metrics_line_is_skipped_with_a_warning(tmp_path):
    d = write_synthetic_run(tmp_path / "cifar10" / "plain20-quick-s0", "plain20", 0, "quick", final_test_error=9.0)
    lines = (d / "metrics.jsonl").read_text().splitlines()
    lines.insert(3, '{"event": "eval", "iter')
    (d / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig = figures.draw(1, tmp_path)
    assert any(f"{d / 'metrics.jsonl'}:4" in str(w.message) for w in caught)
    assert fig.figure.axes[1].lines[0].get_ydata()[-1] == 9.0


def test_figure7_dispatch(tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType("resnet_repro.report.figure7")
    fake.figure7 = lambda runs_dirs, out_base: calls.append((runs_dirs, out_base)) or [out_base.with_suffix(".png")]
    with monkeypatch.context() as mp:
        mp.setitem(sys.modules, "resnet_repro.report.figure7", fake)
        out = figures.figure(7, tmp_path, tmp_path / "f7")
    assert calls == [([tmp_path], tmp_path / "f7")] and out == [tmp_path / "f7.png"]
    with pytest.raises(UserError, match="no run with responses.json under"):  # the real module, no runs
        figures.figure(7, tmp_path, tmp_path / "f7")


def test_unknown_figure(tmp_path):
    with pytest.raises(UserError, match="1, 4, 6, 7"):
        figures.figure(2, tmp_path)
