"""Untrusted files: checkpoints and weights from elsewhere, damaged checkpoints, and run
names or links that would put files outside the output folder."""

from __future__ import annotations

import ast
import hashlib
import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from resnet_repro import runs
from resnet_repro.cli import main
from resnet_repro.errors import UserError
from resnet_repro.train import checkpoint
from resnet_repro.train.config import make_config
from resnet_repro.train.loop import fit

SRC = Path(__file__).resolve().parents[1] / "src" / "resnet_repro"
TIMING = {"wall_s", "images_per_s", "train_s"}


def cfg_for(tree, **kw):
    base = dict(arch="resnet8", data_dir=str(tree), iterations=16, batch_size=16, precision="fp32", device="cpu")
    base.update(kw)
    return make_config(**base)


def comparable(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in ev.items() if k not in TIMING}
            for ev in runs.read_metrics(run_dir) if ev["event"] not in ("start", "resume")]


def cli(argv: list[str], capsys) -> tuple[int, str]:
    """Run the console entry point in process: (exit code, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    return exc.value.code, capsys.readouterr().err


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def straight(tiny_tree, tmp_path_factory):
    """An uninterrupted 16-iteration run."""
    d = tmp_path_factory.mktemp("straight") / "r"
    fit(cfg_for(tiny_tree), d)
    return d


class Payload:
    """Unpickling this creates ``path``: proof that code from a file ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def reindex(ckpt_dir: Path, name: str) -> None:
    """Record ``name``'s current bytes in the index, as its own writer would have."""
    idx = json.loads((ckpt_dir / "index.json").read_text())
    idx["sha256"][name] = hashlib.sha256((ckpt_dir / name).read_bytes()).hexdigest()
    (ckpt_dir / "index.json").write_text(json.dumps(idx))


# ----------------------------------------------------------------------------- torch.load
# The original CIFAR-10 "python version" batches are pickles; data/cifar.py reads them
# with a restricted Unpickler (numpy arrays only), never pickle.load(s).
KNOWN_PICKLE_LOADS: set[str] = set()


def test_every_torch_load_in_src_is_weights_only():
    calls, unpickles = [], []
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = ast.unparse(node.func.value)
                if node.func.attr == "load" and owner in ("torch", "torch.serialization"):
                    kw = {k.arg: k.value for k in node.keywords}
                    ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                    calls.append((f"{path.relative_to(SRC)}:{node.lineno}", ok))
                if owner in ("pickle", "cPickle", "dill") and node.func.attr in ("load", "loads"):
                    unpickles.append(str(path.relative_to(SRC)))
    assert len(calls) >= 2, calls  # checkpoint.py and models/convert.py at least
    assert [c for c, ok in calls if not ok] == []
    assert set(unpickles) <= KNOWN_PICKLE_LOADS, "new unrestricted pickle loads: " + ", ".join(unpickles)


def test_code_in_a_checkpoint_never_runs(tiny_tree, tmp_path):
    run = tmp_path / "r"
    fit(cfg_for(tiny_tree), run, stop_after=7)
    ck = run / "checkpoints"
    newest = checkpoint.read_index(ck)["latest"][-1]
    sentinel = tmp_path / "pwned"
    torch.save({"model": Payload(sentinel)}, ck / newest)
    reindex(ck, newest)  # a stranger's file with a matching checksum
    with pytest.warns(UserWarning, match="not a loadable checkpoint"):
        assert fit(cfg_for(tiny_tree), run, resume=True)["status"] == "complete"
    assert not sentinel.exists()


def test_code_in_imported_weights_never_runs(tmp_path, capsys):
    sentinel = tmp_path / "pwned"
    evil = tmp_path / "resnet18.pth"
    torch.save({"fc.weight": Payload(sentinel)}, evil)
    code, err = cli(["import-weights", evil, "--arch", "resnet18", "--out", tmp_path / "out.pt"], capsys)
    assert code == 2 and "weights_only=True" in one_error_line(err)
    assert not sentinel.exists() and not (tmp_path / "out.pt").exists()


# ----------------------------------------------------------------------------- another net's checkpoint
@pytest.mark.parametrize("other, message", [
    (dict(arch="resnet14"), "is for resnet14 with shortcut A and 10 classes, but this run is resnet8 with shortcut A"),
    (dict(shortcut="B"), "is for resnet8 with shortcut B and 10 classes, but this run is resnet8 with shortcut A"),
    ("classes", "is for resnet8 with shortcut A and 100 classes, but this run is resnet8 with shortcut A and 10"),
])
def test_checkpoint_of_another_net_is_refused(tiny_tree, tmp_path, other, message):
    mine = cfg_for(tiny_tree)
    fit(mine, tmp_path / "mine", stop_after=4)
    if other == "classes":
        ck = tmp_path / "mine" / "checkpoints"
        name = checkpoint.read_index(ck)["latest"][-1]
        state = checkpoint.load_verified(ck / name, None)
        checkpoint.save(ck, name, {**state, "num_classes": 100})
    else:
        fit(cfg_for(tiny_tree, **other), tmp_path / "other", stop_after=4)
        shutil.rmtree(tmp_path / "mine" / "checkpoints")
        shutil.copytree(tmp_path / "other" / "checkpoints", tmp_path / "mine" / "checkpoints")
    before = (tmp_path / "mine" / "metrics.jsonl").read_bytes()
    with pytest.raises(UserError, match=message):
        fit(mine, tmp_path / "mine", resume=True)
    assert (tmp_path / "mine" / "metrics.jsonl").read_bytes() == before


def test_check_compatible_names_both_nets():
    state = {"arch": "resnet56", "shortcut": "A", "num_classes": 10}
    checkpoint.check_compatible(state, "resnet56", "A", 10, "x.pt")
    with pytest.raises(UserError, match=r"x.pt is for resnet56 with shortcut A and 10 classes, but this run is "
                                        r"plain56 with shortcut - and 10 classes"):
        checkpoint.check_compatible(state, "plain56", None, 10, "x.pt")
    with pytest.raises(UserError, match="is for None with shortcut - and None classes"):
        checkpoint.check_compatible({}, "plain56", None, 10, "x.pt")


# ----------------------------------------------------------------------------- damaged checkpoints
@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "garbage"])
def test_damaged_newest_checkpoint_falls_back_to_the_previous(tiny_tree, tmp_path, straight, damage):
    run = tmp_path / "r"
    fit(cfg_for(tiny_tree), run, stop_after=7)
    ck = run / "checkpoints"
    older, newest = checkpoint.read_index(ck)["latest"]
    data = (ck / newest).read_bytes()
    bad = {"truncate": data[: len(data) // 2], "flip": data[:100] + bytes([data[100] ^ 1]) + data[101:],
           "empty": b"", "garbage": bytes(range(256)) * 40}[damage]
    (ck / newest).write_bytes(bad)
    with pytest.warns(UserWarning, match=f"{newest} unusable .*checksum mismatch.*previous"):
        assert fit(cfg_for(tiny_tree), run, resume=True)["status"] == "complete"
    resumes = [e for e in runs.read_metrics(run) if e["event"] == "resume"]
    assert [e["iteration"] for e in resumes] == [int(older[5:12])]
    assert comparable(run) == comparable(straight)


def test_no_intact_checkpoint_is_a_user_error(tiny_tree, tmp_path):
    run = tmp_path / "r"
    fit(cfg_for(tiny_tree), run, stop_after=7)
    ck = run / "checkpoints"
    for name in checkpoint.read_index(ck)["latest"]:
        (ck / name).write_bytes(b"PK\x03\x04 not a checkpoint")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(UserError, match="no intact checkpoint in .*checksum mismatch.*without --resume"), \
            pytest.warns(UserWarning):
        fit(cfg_for(tiny_tree), run, resume=True)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_checkpoint_with_foreign_fields_is_not_used(tiny_tree, tmp_path, straight):
    run = tmp_path / "r"
    fit(cfg_for(tiny_tree), run, stop_after=7)
    ck = run / "checkpoints"
    newest = checkpoint.read_index(ck)["latest"][-1]
    state = checkpoint.load_verified(ck / newest, None)
    checkpoint.save(ck, newest, {**state, "iteration": "7"})  # a valid checksum, a wrong type
    with pytest.warns(UserWarning, match="field 'iteration' is a str"):
        fit(cfg_for(tiny_tree), run, resume=True)
    assert comparable(run) == comparable(straight)


def test_damaged_index_stops_and_a_missing_one_restarts_from_zero(tiny_tree, tmp_path, straight):
    run = tmp_path / "r"
    fit(cfg_for(tiny_tree), run, stop_after=7)
    (run / "checkpoints" / "index.json").write_bytes(b"\x00\xff garbage")
    before = (run / "metrics.jsonl").read_bytes()
    with pytest.raises(UserError, match="index.json is damaged, so the checkpoints beside it cannot be verified"):
        fit(cfg_for(tiny_tree), run, resume=True)
    assert (run / "metrics.jsonl").read_bytes() == before
    # Without an index the files cannot be verified: they are ignored, the run starts over
    # (and, being deterministic, ends with the same numbers).
    (run / "checkpoints" / "index.json").unlink()
    with pytest.warns(UserWarning, match="holds iter-0000006.pt, iter-0000007.pt but no index to verify them"):
        fit(cfg_for(tiny_tree), run, resume=True)
    assert [e["event"] for e in runs.read_metrics(run)][:1] == ["start"]
    assert comparable(run) == comparable(straight)


def test_damaged_log_is_detected_on_resume(tiny_tree, tmp_path):
    run = tmp_path / "r"
    fit(cfg_for(tiny_tree), run, stop_after=7)
    log = run / "metrics.jsonl"
    raw = log.read_bytes()
    log.write_bytes(raw.replace(b'"train"', b'"trian"', 1))
    damaged = log.read_bytes()
    with pytest.raises(UserError, match="metrics.jsonl does not match the checkpoint at iteration 7"):
        fit(cfg_for(tiny_tree), run, resume=True)
    assert log.read_bytes() == damaged


def test_config_missing_beside_checkpoints_is_refused(tiny_tree, tmp_path):
    run = tmp_path / "r"
    fit(cfg_for(tiny_tree), run, stop_after=7)
    (run / "config.json").unlink()
    with pytest.raises(UserError, match="has checkpoints but no config.json"):
        fit(cfg_for(tiny_tree), run, resume=True)


def test_index_cannot_reach_files_outside_the_checkpoint_folder(tmp_path):
    ck = tmp_path / "run" / "checkpoints"
    ck.mkdir(parents=True)
    victim = tmp_path / "victim.pt"
    victim.write_bytes(b"precious")
    sha = hashlib.sha256(b"precious").hexdigest()
    (ck / "index.json").write_text(json.dumps({"latest": ["../../victim.pt", "/etc/passwd", "iter-0000001.pt"],
                                               "sha256": {"../../victim.pt": sha, "iter-0000001.pt": "zz"}}))
    assert checkpoint.read_index(ck) == {"latest": ["iter-0000001.pt"], "sha256": {}}
    for i in (2, 3, 4):  # saves drop older entries: never the victim
        checkpoint.save(ck, f"iter-{i:07d}.pt", {"iteration": i})
    assert victim.read_bytes() == b"precious"
    assert checkpoint.read_index(ck)["latest"] == ["iter-0000003.pt", "iter-0000004.pt"]
    with pytest.raises(ValueError, match="not iter-NNNNNNN.pt"):
        checkpoint.save(ck, "../escape.pt", {})


# ----------------------------------------------------------------------------- paths
@pytest.mark.parametrize("name", ["..", ".", "../x", "a/b", "/abs", ".hidden", "x\x00y", "a" * 300, "tab\there",
                                  "new\nline", "[/x]", "a\\b", "ü"])
def test_run_names_cannot_escape_the_output_folder(tiny_tree, tmp_path, capsys, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    code, err = cli(["train", "--arch", "resnet8", "--data-dir", tiny_tree, "--iterations", "8", "--out",
                     tmp_path / "out", "--name", name], capsys)
    assert code == 2 and "invalid run name" in one_error_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and list((tmp_path / "out").iterdir()) == []


def test_symlinked_run_dir_outside_out_is_refused(tiny_tree, tmp_path, capsys):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "r").symlink_to(elsewhere, target_is_directory=True)
    argv = ["train", "--arch", "resnet8", "--data-dir", tiny_tree, "--iterations", "8", "--batch-size", "16",
            "--precision", "fp32", "--device", "cpu", "--out", out]
    code, err = cli([*argv, "--name", "r"], capsys)
    assert code == 2 and "is a symbolic link to" in one_error_line(err) and "outside --out" in err
    assert list(elsewhere.iterdir()) == []
    # A link that stays inside --out is fine.
    (out / "real").mkdir()
    (out / "alias").symlink_to(out / "real", target_is_directory=True)
    code, err = cli([*argv, "--name", "alias"], capsys)
    assert code == 0, err
    assert json.loads((out / "real" / "summary.json").read_text())["status"] == "complete"


@pytest.mark.parametrize("name", ["metrics.jsonl", "summary.json", "checkpoints"])
def test_symlinked_files_inside_a_run_are_refused(tiny_tree, tmp_path, name):
    run = tmp_path / "r"
    fit(cfg_for(tiny_tree, iterations=8), run, stop_after=4)
    victim = tmp_path / "victim"
    if name == "checkpoints":
        shutil.move(run / name, victim)
    else:
        victim.write_bytes((run / name).read_bytes())
        (run / name).unlink()
    (run / name).symlink_to(victim)
    before = victim.read_bytes() if victim.is_file() else sorted(p.name for p in victim.iterdir())
    with pytest.raises(UserError, match=f"{name} is a symbolic link"):
        fit(cfg_for(tiny_tree, iterations=8), run, resume=True)
    after = victim.read_bytes() if victim.is_file() else sorted(p.name for p in victim.iterdir())
    assert after == before


def test_load_latest_warns_instead_of_failing_on_one_bad_file(tmp_path):
    ck = tmp_path / "checkpoints"
    good = {"model": {"w": torch.ones(2)}, "optimizer": {}, "iteration": 2, "warmup_active": False,
            "window": [0.0, 0, 0], "wall_s": 1.0, "train_s": 1.0, "metrics_bytes": 10, "arch": "resnet8",
            "shortcut": "A", "num_classes": 10, "last_eval": {}}
    checkpoint.save(ck, "iter-0000002.pt", good)
    checkpoint.save(ck, "iter-0000004.pt", {**good, "iteration": 4, "window": [1, 2]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = checkpoint.load_latest(ck)
    assert state["iteration"] == 2
    assert len(caught) == 1 and "malformed 'window'" in str(caught[0].message)
