"""The CLI's contract: bad input gives one line on stderr and exit code 2, never a
traceback, and never touches existing runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import run_main


@pytest.mark.parametrize("argv,needle", [
    (["train", "--arch", "resnet21", "--data-dir", "x"], "not 6n+2"),
    (["train", "--arch", "vgg16", "--data-dir", "x"], "unknown architecture"),
    (["train", "--arch", "resnet20", "--shortcut", "D", "--data-dir", "x"], "choose one of A, B, C"),
    (["train", "--arch", "resnet20", "--schedule", "fast", "--data-dir", "x"], "unknown schedule"),
    (["train", "--arch", "resnet20", "--precision", "fp8", "--data-dir", "x"], "unknown precision"),
    (["train", "--arch", "resnet20", "--data-dir", "/nonexistent/cifar"], "no CIFAR-10 found at /nonexistent/cifar"),
    (["train", "--arch", "resnet20", "--data-dir", "x", "--name", "../escape"], "invalid run name"),
    (["train", "--data-dir", "x"], "missing --arch"),
    (["table", "9"], "Tables 1 to 8"),
    (["table", "6", "--format", "docx"], "unknown format"),
])
def test_bad_input_is_one_line_exit_2(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(argv, capsys)
    assert code == 2
    assert needle in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_unknown_option_is_exit_2(capsys):
    code, _, err = run_main(["train", "--no-such-option"], capsys)
    assert code == 2 and "Traceback" not in err


def test_table6_without_runs_shows_the_paper(tmp_path, capsys):
    code, out, _ = run_main(["table", "6", "--runs", str(tmp_path), "--format", "csv"], capsys)
    assert code == 0
    assert "ResNet-110" in out and "6.61 ± 0.16 (n=5)" in out and "6.43" in out
    row56 = next(line for line in out.splitlines() if line.startswith("ResNet-56,"))
    assert "6.97" in row56 and "not run" in row56


def test_console_script_entry_point():
    res = subprocess.run([sys.executable, "-m", "resnet_repro", "arch", "resnet20"], capture_output=True, text=True)
    assert res.returncode == 0
    assert "269,722" in res.stdout or "269722" in res.stdout
    res = subprocess.run([sys.executable, "-m", "resnet_repro", "train", "--arch", "resnet7", "--data-dir", "x"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr


def _one_line(code, out, err, needle=""):
    assert code == 2, (code, out, err)
    assert out == "", out  # no progress bar, table or plan before the error
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert needle in err


def test_table_out_is_checked_before_the_table_is_printed(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out in (tmp_path, blocker / "t.md"):
        _one_line(*run_main(["table", "6", "--runs", str(tmp_path), "--out", str(out)], capsys), "cannot write")
    assert blocker.read_text() == "x"
    code, out, _ = run_main(["table", "6", "--runs", str(tmp_path), "--out", str(tmp_path / "new" / "t.md")], capsys)
    assert code == 0 and "ResNet-110" in out and (tmp_path / "new" / "t.md").is_file()


def test_run_checks_out_and_launcher_before_any_output(tiny_tree, tmp_path, capsys, monkeypatch):
    import sys

    blocker = tmp_path / "file"
    blocker.write_text("x")
    base = ["run", "cifar10-depth", "--profile", "smoke", "--data-dir", str(tiny_tree), "--precision", "fp32",
            "--device", "cpu", "--threads", "1"]
    _one_line(*run_main([*base, "--out", str(blocker / "x")], capsys), "choose a writable --out")
    monkeypatch.setitem(sys.modules, "submitit", None)  # the slurm extra not installed
    _one_line(*run_main([*base, "--out", str(tmp_path / "res"), "--launcher", "slurm"], capsys), "submitit")
    assert not (tmp_path / "res").exists()


def test_failed_train_prints_one_line_and_leaves_no_directory(tiny_tree, tmp_path, capsys, monkeypatch):
    import sys

    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar archive")
    base = ["train", "--arch", "resnet8", "--schedule", "smoke", "--precision", "fp32", "--device", "cpu",
            "--threads", "1", "--out", str(tmp_path / "out")]
    _one_line(*run_main([*base, "--data-dir", str(tmp_path / "nonexistent")], capsys), "no CIFAR-10 found")
    _one_line(*run_main([*base, "--data-dir", str(junk)], capsys), "cannot read")
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # the extra not installed
    _one_line(*run_main([*base, "--data-dir", str(tiny_tree), "--tensorboard"], capsys), "'.[tensorboard]'")
    assert not (tmp_path / "out").exists()


def test_evaluate_bad_input_prints_one_line(tmp_path, capsys):
    _one_line(*run_main(["evaluate", "--weights", str(tmp_path / "none.pt"), "--arch", "resnet50",
                         "--data-dir", str(tmp_path), "--protocol", "center"], capsys),
              needle="none.pt' does not exist")


def test_train_help_text(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    code, out, _ = run_main(["train", "--help"], capsys)
    assert code == 0
    assert "pip install -e '.[tensorboard]'" in " ".join(out.split())  # help wraps at 78 columns
    assert "ImageNet" in out.split("Options")[0]
    assert "plain56 --shortcut" not in out


def test_start_line_states_threads_and_evaluated_images(tiny_tree):
    import io

    from rich.console import Console

    from resnet_repro.report.progress import TrainProgress
    from resnet_repro.train.config import make_config

    buf = io.StringIO()
    cfg = make_config("resnet20", str(tiny_tree), schedule="smoke", precision="fp32", device="cpu", threads=1)
    ev = {"event": "start", "iteration": 0, "precision": "fp32", "precision_reason": "set explicitly",
          "threads": 1, "device": "cpu", "train_images": 45000, "val_images": 5000, "test_images": 10000}
    with TrainProgress(Console(file=buf, width=400), cfg, tiny_tree) as prog:
        prog.on_event(ev)
    line = next(x for x in buf.getvalue().splitlines() if x.startswith("start"))
    assert "1 thread on cpu" in line and "1 threads" not in line
    assert "45000 train images; evaluation on 1000 of 5000 val, 1000 of 10000 test images" in line
