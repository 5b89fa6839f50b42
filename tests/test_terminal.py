"""What a newcomer sees in an 80-column terminal, a pipe or an empty folder: tables and
help that never break a word and show no type tags, an ImageNet net that picks ImageNet
by itself, tables that work without a results/ folder, and progress views that leave no
cut-off line outside a terminal."""

from __future__ import annotations

import io
import re
import textwrap
import warnings
from pathlib import Path

import pytest
from rich.console import Console
from rich.table import Table as RichTable

from conftest import ROOT, run_main

BOX = r"[\s│┃┏┓┗┛┡┩└┘┳┻╇╈━─┼├┤┬┴╋]+"
TYPE_TAG = re.compile(r"<(bool|str|int|float|path|Path|list\[[^\]]*\])>")


def _render(t, width: int = 80) -> list[str]:
    from resnet_repro.report.render import print_table

    buf = io.StringIO()
    print_table(Console(file=buf, width=width, color_system=None), t)
    return buf.getvalue().splitlines()


def _table_region(t, lines: list[str], width: int) -> list[str]:
    """The lines of the table itself: after the (wrapped) title, before the caption."""
    head = f"{t.label}. {t.title}" if t.number else t.title
    n_title = len(textwrap.wrap(head, width, break_long_words=False, break_on_hyphens=False))
    cap = textwrap.wrap(t.caption, width, break_long_words=False, break_on_hyphens=False)[0]
    return lines[n_title:lines.index(cap)]


def _words_of(t) -> set[str]:
    """Every word a cell or header of ``t`` can show (a "head: detail" cell shows "head [k]")."""
    words: set[str] = set()
    frame = t.shown()
    texts = [str(c) for c in frame.columns]
    for row in frame.itertuples(index=False):
        for v in row:
            s = "" if v is None or (isinstance(v, float) and v != v) else str(v)
            texts += [s, s.partition(": ")[0]]
    for s in texts:
        words.update(s.split())
    return words


def _assert_no_broken_word(t, width: int = 80) -> list[str]:
    lines = _render(t, width)
    long = [ln for ln in lines if len(ln) > width and not re.match(r"\[\d+\] resnet-repro ", ln)]
    assert not long, long  # only a note's command stays whole on one line, to be copied
    region = _table_region(t, lines, width)
    assert region, lines
    allowed = _words_of(t)
    tokens = [tok for ln in region for tok in re.split(BOX, ln) if tok]
    broken = [tok for tok in tokens if tok not in allowed and not re.fullmatch(r"\[\d+\]", tok)]
    assert not broken, (broken, "\n".join(lines))
    return lines


@pytest.mark.parametrize("key", ["3", "6", "1", "cifar-shortcuts"])
def test_tables_at_80_columns_break_no_word(key, tmp_path):
    """Tables 3 and 6 (and the widest, Table 1) from the stored runs and from none: every
    word of every cell stays whole on one line, and every line fits in 80 columns."""
    from resnet_repro.report.tables import get_table

    (tmp_path / "none").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for roots in ([ROOT / "results"], [tmp_path / "none"]):
            lines = _assert_no_broken_word(get_table(key, roots))
            assert not any(TYPE_TAG.search(ln) for ln in lines)


def test_table6_at_80_columns_shows_ours_and_the_papers(tmp_path):
    """The stored quick runs at 80 columns: the paper's and our numbers stay; a column
    left out (or folded into a line) is named below the table."""
    from resnet_repro.report.tables import get_table

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = get_table("6", [ROOT / "results"])
    text = "\n".join(_render(t))
    assert "19.49 ± 0.41" in text and "8.75" in text and "6.61 ± 0.16" in text and "57.25" in text
    shown = {c for c in t.shown().columns if c in text}
    missing = [c for c in t.shown().columns if c not in shown and not all(w in text for w in c.split())]
    for c in missing:  # whatever is not a column is named in a line below
        assert re.search(rf"(Not shown at 80 columns:.*|^){re.escape(c)}", text, re.M), (c, text)


def test_table_without_runs_drops_empty_columns_and_says_so(tmp_path):
    from resnet_repro.report.tables import get_table

    (tmp_path / "none").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = get_table("3", [tmp_path / "none"])
    lines = _render(t)
    header = " ".join(_table_region(t, lines, 80)[:3])
    assert "paper top-1 error (%)" in header and "our top-1 error (%)" in header
    assert "schedule" not in header and "our best" not in header
    tail = " ".join(lines)
    assert "Columns without values, not shown: our top-5 error (%), our best top-1 error (%), n, schedule." in tail


def test_fit_table_narrow_terminal_leaves_out_columns_whole():
    """A table far wider than the terminal: whole words, rightmost columns left out and
    named; the first column never goes."""
    from resnet_repro.report.render import fit_table

    rt = RichTable()
    for h in ("name", "alpha", "beta", "gamma", "delta"):
        rt.add_column(h)
    rt.add_row("ResNet-1202", "extraordinarily", "unbreakable", "words", "here")
    buf = io.StringIO()
    con = Console(file=buf, width=40, color_system=None)
    notes = fit_table(con, rt)
    con.print(rt)
    out = buf.getvalue()
    assert "ResNet-1202" in out and "extraordinarily" in out
    assert all(len(ln) <= 40 for ln in out.splitlines())
    assert notes and notes[-1].startswith("Not shown at 40 columns:") and "delta" in notes[-1]


# ------------------------------------------------------------------------------ help
def _help(argv: list[str], capsys, monkeypatch, columns: int) -> str:
    monkeypatch.setenv("COLUMNS", str(columns))
    code, out, err = run_main([*argv, "--help"], capsys)
    assert code == 0, err
    return out


@pytest.mark.parametrize("argv", [[], ["train"], ["table"], ["run"], ["figure"], ["report"], ["responses"],
                                  ["evaluate"], ["bench"], ["arch"], ["import-weights"]])
def test_help_reads_as_help_at_80_columns(argv, capsys, monkeypatch):
    """No type tags, no line over 80 columns, and the same words at 80 and at 50 columns
    (a word broken across lines, as ``--data-`` / ``dir``, would differ)."""
    wide = _help(argv, capsys, monkeypatch, 80)
    narrow = _help(argv, capsys, monkeypatch, 50)
    assert not TYPE_TAG.search(wide), TYPE_TAG.search(wide)
    assert all(len(ln) <= 80 for ln in wide.splitlines())
    assert "Usage:" in wide and ("Options:" in wide)

    def words(s: str) -> list[str]:
        return sorted(w for w in s.split() if w != "\\")

    assert words(wide) == words(narrow)


def test_top_level_and_train_help_content(capsys, monkeypatch):
    top = _help([], capsys, monkeypatch, 80)
    rows = re.findall(r"^  (\S+)\s{2,}\S", top.split("Commands:")[1], re.M)
    assert {"train", "table", "figure", "report", "run", "evaluate"} <= set(rows)
    train = _help(["train"], capsys, monkeypatch, 80)
    assert "-a, --arch ARCH" in train and "-d, --data-dir DATA_DIR" in train
    assert "--resume " in train and "--resume RESUME" not in train  # a flag shows no metavar
    assert "--channels-last / --no-channels-last" in train
    assert "[default: runs]" in train and "[default: 0.1]" in train  # defaults shown, never split over two lines
    assert "protocol; the default); all: train on 50k" in train  # --train-on: split unless a preset implies all
    assert re.search(r"^\s+resnet-repro train --arch resnet20 --schedule quick --data-dir \\$", train, re.M)


# ------------------------------------------------------------------------------ train: the net picks its data set
def test_imagenet_net_without_data_is_one_line_naming_the_layout(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(["train", "--arch", "plain34"], capsys)
    assert code == 2 and out == "" and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert "DIR/train/<wnid>/" in err and "DIR/val/<wnid>/" in err and "--data-dir" in err
    assert str(tmp_path / "data" / "imagenet") in err  # ImageNet's default, not data/cifar10
    assert list(tmp_path.iterdir()) == []  # no run directory left behind


@pytest.mark.parametrize("argv,needles", [
    (["--arch", "plain34", "--dataset", "cifar10"], ["plain34 is an ImageNet net", "drop --dataset cifar10"]),
    (["--arch", "resnet20", "--dataset", "imagenet"], ["resnet20 is a CIFAR-10 net", "drop --dataset imagenet"]),
])
def test_net_and_explicit_other_dataset_is_an_error_naming_the_fix(argv, needles, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(["train", *argv, "--data-dir", str(tmp_path)], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert all(n in err for n in needles), err


def test_resolve_dataset():
    from resnet_repro.errors import UserError
    from resnet_repro.train.config import resolve_dataset

    assert resolve_dataset("plain34", None) == "imagenet" and resolve_dataset("resnet152", None) == "imagenet"
    assert resolve_dataset("resnet20", None) == "cifar10" and resolve_dataset("plain1202", None) == "cifar10"
    assert resolve_dataset("resnet50", "imagenet") == "imagenet"
    with pytest.raises(UserError, match="unknown dataset 'mnist'"):
        resolve_dataset("resnet20", "mnist")


# ------------------------------------------------------------------------------ no results/ folder
@pytest.fixture
def console80(monkeypatch):
    from resnet_repro import cli

    con = Console(file=io.StringIO(), width=80, color_system=None)
    monkeypatch.setattr(cli, "console", con)
    return con


def test_table3_in_an_empty_folder_shows_the_paper(tmp_path, capsys, monkeypatch, console80):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(["table", "3"], capsys)
    out = console80.file.getvalue()
    assert code == 0, err
    assert "ResNet-34 A" in out and "25.03" in out and "7.76" in out and "21.43" in out  # the paper's values
    assert "not run yet [1]" in out and "[1] resnet-repro run imagenet-plain-vs-residual --profile quick" in out
    assert "Ours: not run yet (no runs found)" in out
    assert list(tmp_path.iterdir()) == []
    code, _, err = run_main(["table", "3", "--runs", "results"], capsys)  # an explicit --runs must exist
    assert code == 2 and "--runs results does not exist" in err


def test_figures_and_report_in_an_empty_folder(tmp_path, capsys, monkeypatch, console80):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(["figure", "7"], capsys)  # needs runs: one line
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no --runs given and no results/ folder" in err
    code, _, err = run_main(["report", "--out", str(tmp_path / "r" / "REPORT.md")], capsys)
    assert code == 0, err
    text = (tmp_path / "r" / "REPORT.md").read_text()
    assert "with no run logs (no `--runs` given and no `results/` folder)" in text
    assert "| ResNet-110 |" in text and "not drawn, no runs behind it yet" in text
    assert not (tmp_path / "r" / "figures").exists()  # no placeholder figures


# ------------------------------------------------------------------------------ progress outside a terminal
def test_progress_outside_a_terminal_leaves_no_cut_off_line(tiny_tree, tmp_path):
    from resnet_repro.report.progress import TrainProgress
    from resnet_repro.report.render import ExperimentProgress
    from resnet_repro.train.config import make_config

    cfg = make_config("resnet20", str(tiny_tree), schedule="smoke", precision="fp32", device="cpu", threads=1)
    buf = io.StringIO()
    con = Console(file=buf, width=80)  # a file: not a terminal
    start = {"event": "start", "iteration": 0, "precision": "fp32", "precision_reason": "set explicitly",
             "threads": 1, "device": "cpu", "train_images": 45000, "val_images": 5000, "test_images": 10000}
    with TrainProgress(con, cfg, tmp_path / "run") as prog:
        prog.on_event(start)
        prog.on_event({"event": "step", "iteration": 10, "lr": 0.1})
        prog.on_event({"event": "train", "iteration": 10, "train_loss": 2.0, "train_error": 80.0,
                       "images_per_s": 500.0})
        prog.on_event({"event": "eval", "iteration": 30, "train_error": 70.0, "val_error": 75.0,
                       "test_error": 76.0})
    text = buf.getvalue()
    assert "━" not in text and "…" not in text and "ETA" not in text, text
    assert "iteration     30: train err 70.00%" in text

    class P:  # the parts of a PlannedRun the view reads
        label, todo, config = "resnet20-A-smoke-s0", True, cfg

    buf2 = io.StringIO()
    con2 = Console(file=buf2, width=80)
    with ExperimentProgress(con2, [P()]) as view:
        view.on_event(P.label, {"event": "start", "iteration": 0, "threads": 1, "precision": "fp32"})
        view.on_event(P.label, {"event": "eval", "iteration": 30, "train_error": 70.0, "test_error": 76.0})
        view.on_event(P.label, {"event": "finished", "status": "complete"})
    lines = buf2.getvalue().splitlines()
    assert lines == ["resnet20-A-smoke-s0: started, 1 thread, fp32",
                     "resnet20-A-smoke-s0: iteration 30: train err 70.00%, test err 76.00%",
                     "resnet20-A-smoke-s0: complete"], lines


def test_generated_outputs_in_results_are_ignored_unless_committed():
    """`make report` / `make table-3` / `make figure-4` write into results/; those files
    are ignored by git, while the committed table and figures stay tracked."""
    import subprocess

    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    names = ["results/REPORT.md", "results/table3.md", "results/figures/figure4.png"]
    res = subprocess.run(["git", "-C", str(ROOT), "check-ignore", *names], capture_output=True, text=True)
    assert res.stdout.split() == names, res
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "results/table6.md", "results/figures"],
                             capture_output=True, text=True).stdout.split()
    assert "results/table6.md" in tracked and "results/figures/figure6.png" in tracked
    assert Path(ROOT / "results" / "table6.md").is_file()
