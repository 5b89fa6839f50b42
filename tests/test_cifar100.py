"""CIFAR-100: the original cifar-100-python files (folder, tar.gz), an image-folder tree,
--download through torchvision, one-line errors for damaged data, and a smoke run
through the CLI that trains a 100-way net, passes `check`, evaluates, and shows up in
`table 6 --dataset cifar100` but never in the CIFAR-10 Table 6."""

from __future__ import annotations

import json
import pickletools
import tarfile
import warnings

import numpy as np
import pytest
import torch

from cifar100_fixture import (
    cifar100_arrays,
    py2_pickle,
    write_cifar100_python,
    write_cifar100_tar,
    write_cifar100_tree,
)
from conftest import run_main
from resnet_repro.data.cifar import CIFAR100_CLASSES, load_cifar100
from resnet_repro.errors import UserError


@pytest.fixture(scope="module")
def c100(tmp_path_factory):
    """The original folder (300 train / 100 test images) and its .tar.gz."""
    root = tmp_path_factory.mktemp("c100")
    folder = write_cifar100_python(root / "src")
    tgz = write_cifar100_tar(folder, root / "cifar-100-python.tar.gz")
    return root / "src", folder, tgz


def test_fixture_is_in_the_python2_pickle_format_of_the_original():
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(py2_pickle({"data": np.zeros((2, 3), np.uint8),
                                                                           "fine_labels": [0, 1]}))]
    names = {n for n, _ in ops}
    assert "BINUNICODE" not in names and "SHORT_BINSTRING" in names  # Python 2 str keys and bytes
    assert ("GLOBAL", "numpy.core.multiarray _reconstruct") in ops
    assert ("PROTO", 2) in ops


def test_folder_parent_folder_and_tarball_give_the_same_arrays(c100):
    parent, folder, tgz = c100
    want = cifar100_arrays()
    a = load_cifar100(parent)  # a folder holding cifar-100-python
    assert a.source_kind == "cifar-100-python"
    assert a.train_x.shape == (300, 3, 32, 32) and a.test_x.shape == (100, 3, 32, 32)
    assert a.train_x.dtype == np.uint8 and a.train_y.dtype == np.int64
    assert np.array_equal(a.train_x.reshape(300, -1), want["train_x"])  # R, G, B planes of 1024 values each
    assert np.array_equal(a.train_y, want["train_y"]) and np.array_equal(a.test_y, want["test_y"])
    assert a.classes == CIFAR100_CLASSES and len(a.classes) == 100 and a.classes[:2] == ("apple", "aquarium_fish")
    b = load_cifar100(folder)
    c = load_cifar100(tgz)
    for other in (b, c):
        assert np.array_equal(other.train_x, a.train_x) and np.array_equal(other.test_y, a.test_y)
    assert c.checksum != a.checksum  # the tar's bytes, the folder's files


def test_image_folder_tree_and_its_tar(tmp_path):
    tree = write_cifar100_tree(tmp_path / "tree", per_class_train=2, per_class_test=1)
    a = load_cifar100(tree)
    assert a.train_x.shape == (200, 3, 32, 32) and a.test_x.shape == (100, 3, 32, 32)
    assert a.classes == CIFAR100_CLASSES  # sorted folder names: the label order of the original
    assert sorted(set(a.train_y.tolist())) == list(range(100))
    assert a.source_kind == "image-folder (png)"
    tar = tmp_path / "tree.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(tree / "train", arcname="train")
        tf.add(tree / "test", arcname="test")
    b = load_cifar100(tar)
    assert np.array_equal(a.train_x, b.train_x) and np.array_equal(a.train_y, b.train_y)


def test_download_goes_through_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets

    calls = []

    class FakeCIFAR100:
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            write_cifar100_python(tmp_path / "dl", n_train=200, n_test=100)

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", FakeCIFAR100)
    a = load_cifar100(tmp_path / "dl", download=True)
    assert calls == [(str(tmp_path / "dl"), True, True)]
    assert a.train_x.shape == (200, 3, 32, 32)

    class Offline:
        def __init__(self, **kw):
            raise RuntimeError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", Offline)
    with pytest.raises(UserError, match="download of CIFAR-100 into .* failed .no network."):
        load_cifar100(tmp_path / "empty", download=True)


def _train_err(capsys, tmp_path, data, dataset="cifar100"):
    code, out, err = run_main(["train", "--dataset", dataset, "--arch", "resnet20", "--schedule", "smoke",
                               "--data-dir", str(data), "--out", str(tmp_path / "runs"), "--threads", "1"], capsys)
    assert code == 2, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err  # one line
    assert not (tmp_path / "runs").exists()  # nothing left behind
    return err


@pytest.mark.parametrize("bad, match", [
    ({"train": [0] * 299 + [100]}, r"label 100 of image 299 is outside 0\.\.99"),
    ({"test": [-1] + [0] * 99}, r"label -1 of image 0 is outside 0\.\.99"),
    ({"train": [0] * 10}, r"10 fine_labels for 300 images"),
])
def test_bad_labels_are_one_line_errors(capsys, tmp_path, bad, match):
    write_cifar100_python(tmp_path / "src", labels=bad)
    err = _train_err(capsys, tmp_path, tmp_path / "src")
    import re

    assert re.search(match, err), err
    assert "cifar-100-python/" in err and "fresh copy" in err


def test_missing_corrupt_and_wrong_files_are_one_line_errors(capsys, tmp_path):
    folder = write_cifar100_python(tmp_path / "src")
    (folder / "test").write_bytes(b"\x80\x02not a pickle at all")
    assert "cifar-100-python/test is corrupt or not in the original format" in _train_err(capsys, tmp_path, folder)
    (folder / "test").write_bytes(py2_pickle({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}))
    assert "needs 'data' and 'fine_labels'" in _train_err(capsys, tmp_path, folder)  # a CIFAR-10-style file
    (folder / "test").write_bytes(py2_pickle({"data": np.zeros((2, 100), np.uint8), "fine_labels": [0, 1]}))
    assert "rows of 3,072 values" in _train_err(capsys, tmp_path, folder)
    (folder / "test").unlink()
    # train without test: not an original folder, so nothing is found there
    assert "no CIFAR-100 found at" in _train_err(capsys, tmp_path, folder)
    tgz = tmp_path / "half.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(folder / "train", arcname="cifar-100-python/train")
    assert "incomplete cifar-100-python" in _train_err(capsys, tmp_path, tgz)
    truncated = tmp_path / "cut.tar.gz"
    truncated.write_bytes(write_cifar100_tar(write_cifar100_python(tmp_path / "ok"), tmp_path / "ok.tgz")
                          .read_bytes()[:500])
    assert "corrupt or truncated" in _train_err(capsys, tmp_path, truncated)
    assert "no CIFAR-100 found at" in _train_err(capsys, tmp_path, tmp_path / "nowhere")


def test_cifar10_and_cifar100_data_are_told_apart(capsys, tmp_path, tiny_tree):
    # a 10-class tree as CIFAR-100; a CIFAR-100 tree as CIFAR-10
    assert "has 10 class folders under train/, CIFAR-100 has 100" in _train_err(capsys, tmp_path, tiny_tree)
    tree = write_cifar100_tree(tmp_path / "tree", per_class_train=1, per_class_test=1)
    err = _train_err(capsys, tmp_path, tree, dataset="cifar10")
    assert "has label 99 (100 classes), but a cifar10 net has 10 outputs" in err
    folder = write_cifar100_python(tmp_path / "src")
    assert "holds cifar-100-python (CIFAR-100), not CIFAR-10; add --dataset cifar100" in _train_err(
        capsys, tmp_path, folder.parent, dataset="cifar10")


def test_train_cifar100_end_to_end_check_evaluate_and_its_own_table(capsys, tmp_path, c100):
    parent, _, _ = c100
    out = tmp_path / "runs"
    code, stdout, err = run_main(["train", "--dataset", "cifar100", "--arch", "resnet20", "--schedule", "smoke",
                                  "--data-dir", str(parent), "--out", str(out), "--threads", "1"], capsys)
    assert code == 0, err
    run = out / "resnet20-A-cifar100-smoke-s0"  # the name keeps it apart from resnet20-A-smoke-s0
    cfg = json.loads((run / "config.json").read_text())["config"]
    assert cfg["dataset"] == "cifar100" and cfg["schedule"] == "smoke" and cfg["train_on"] == "split"
    start = next(json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines())
    assert (start["train_images"], start["val_images"], start["test_images"]) == (270, 30, 100)  # 45k/5k's rule
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["data_source_kind"] == "cifar-100-python"
    final = torch.load(run / "checkpoints" / "final.pt", weights_only=True)
    assert final["num_classes"] == 100 and tuple(final["model"]["fc.weight"].shape) == (100, 64)

    code, stdout, _ = run_main(["check", str(out)], capsys)
    assert code == 0 and "ok" in stdout

    code, stdout, err = run_main(["train", "--dataset", "cifar100", "--arch", "resnet20", "--schedule", "smoke",
                                  "--data-dir", str(parent), "--out", str(out), "--threads", "1", "--resume"], capsys)
    assert code == 0, err  # already complete: accepted as is

    code, stdout, err = run_main(["evaluate", "--run-dir", str(run)], capsys)
    assert code == 0, err
    rec = json.loads((run / "eval-cifar100.json").read_text())
    assert rec["dataset"] == "cifar100" and rec["images"] == 100 and 0 <= rec["test_error"] <= 100
    code, _, err = run_main(["evaluate", "--run-dir", str(run), "--dataset", "cifar10"], capsys)
    assert code == 2 and "is a cifar100 run; evaluate it with --dataset cifar100" in err

    code, stdout, err = run_main(["table", "6", "--dataset", "cifar100", "--runs", str(out), "--format", "csv"],
                                 capsys)
    assert code == 0, err
    from resnet_repro.report.tables import get_table

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t100 = get_table(6, out, dataset="cifar100")
        t10 = get_table(6, out)
    r = t100.frame[t100.frame["net"] == "ResNet-20"].iloc[0]
    assert r["n"] == 1 and r["mean"] == summary["final_test_error"] and r["schedule"] == "smoke"
    assert r["paper error (%)"] == "— (not in the paper)"
    assert r["params (M)"] == "0.28"  # 269,722 for 10 classes + 90 x 65 for the wider fc
    assert "reports no CIFAR-100 results" in t100.caption and "CIFAR-100" in t100.title
    assert str(run) in t100.runs
    assert (t10.frame["n"] == 0).all() and str(run) not in t10.runs  # Table 6 counts CIFAR-10 runs only
    from resnet_repro.report.figures import figure_schedule
    from resnet_repro.report.tables import RunSet

    assert figure_schedule(RunSet.load(out), "cifar10", ["ResNet-20"]) is None  # nor do Figures 1/6

    code, _, err = run_main(["table", "3", "--dataset", "cifar100", "--runs", str(out)], capsys)
    assert code == 2 and "--dataset applies to Table 6 only" in err


def test_cifar100_runs_never_join_cifar10_cells(tmp_path):
    from resnet_repro.report.bench_reports import write_synthetic_run
    from resnet_repro.report.tables import get_table

    root = tmp_path / "results"
    write_synthetic_run(root / "cifar10" / "resnet20-A-quick-s0", "resnet20", 0, "quick", final_test_error=19.0)
    write_synthetic_run(root / "cifar100" / "resnet20-A-cifar100-quick-s0", "resnet20", 0, "quick",
                        final_test_error=45.0, dataset="cifar100")
    write_synthetic_run(root / "cifar100" / "resnet20-A-cifar100-quick-s1", "resnet20", 1, "quick",
                        final_test_error=47.0, dataset="cifar100")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t10, t100 = get_table(6, root), get_table(6, root, dataset="cifar100")
    r10 = t10.frame[t10.frame["net"] == "ResNet-20"].iloc[0]
    r100 = t100.frame[t100.frame["net"] == "ResNet-20"].iloc[0]
    assert (r10["n"], r10["mean"]) == (1, 19.0)
    assert (r100["n"], r100["mean"], r100["best"]) == (2, 46.0, 45.0)
    assert "train --dataset cifar100 --arch resnet32" in t100.frame[t100.frame["net"] == "ResNet-32"].iloc[0][
        "our error (%)"]
    from resnet_repro.report.report import build_report

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        text = build_report(root, tmp_path / "REPORT.md")["report"].read_text()
    assert "### CIFAR-100 test error of the nets of Table 6 (not in the paper)" in text
    assert "46.00 ± 1.41 (n=2)" in text
