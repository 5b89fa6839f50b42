"""End to end on the real (shared, JPEG re-encoded) CIFAR-10 copy: the CLI trains
ResNet-20 and plain-20 at the smoke schedule, the logs hold what the format promises,
and Table 6 reads them. Skipped, with the reason, when the shared copy is absent."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from resnet_repro import paper, runs
from resnet_repro.cli import app


def test_train_plain20_and_resnet20_smoke_then_table6(shared_cifar, tmp_path, monkeypatch):
    monkeypatch.delenv("RESNET_REPRO_CACHE")  # decode the shared copy once into the user's cache
    runner = CliRunner()
    for arch in ("resnet20", "plain20"):
        res = runner.invoke(app, ["train", "--arch", arch, "--schedule", "smoke", "--data-dir", str(shared_cifar),
                                  "--out", str(tmp_path), "--threads", "1"])
        assert res.exit_code == 0, res.output
        assert "complete" in res.output
    r20, p20 = tmp_path / "resnet20-A-smoke-s0", tmp_path / "plain20-smoke-s0"
    for d in (r20, p20):
        conf = json.loads((d / "config.json").read_text())
        assert conf["config"]["schedule"] == "smoke" and conf["config"]["iterations"] == 30
        assert conf["config"]["data_checksum"].startswith("6a63366aa9af7c81")
        assert conf["provenance"]["data_source_kind"] == "image-folder (jpg)"
        evs = runs.read_metrics(d)
        start = evs[0]
        assert start["event"] == "start" and (start["train_images"], start["val_images"], start["test_images"]) == (
            45000, 5000, 10000)
        trains = [e for e in evs if e["event"] == "train"]
        assert [e["iteration"] for e in trains] == [5, 10, 15, 20, 25, 30]
        evals = [e for e in evs if e["event"] == "eval"]
        assert [e["iteration"] for e in evals] == [15, 30]
        # 30 iterations already move the training loss below chance (ln 10 = 2.30).
        assert trains[-1]["train_loss"] < 2.3
        summary = json.loads((d / "summary.json").read_text())
        assert summary["status"] == "complete" and summary["final_test_error"] == evals[-1]["test_error"]
        assert summary["images_per_s"] > 0 and summary["wall_s"] > 0
    assert json.loads((r20 / "config.json").read_text())["config"]["shortcut"] == "A"
    assert json.loads((p20 / "config.json").read_text())["config"]["shortcut"] is None
    res = runner.invoke(app, ["table", "6", "--runs", str(tmp_path), "--format", "markdown"])
    assert res.exit_code == 0, res.output
    ours = json.loads((r20 / "summary.json").read_text())["final_test_error"]
    row20 = next(line for line in res.output.splitlines() if line.startswith("| ResNet-20 |"))
    cells = [c.strip() for c in row20.strip("|").split("|")]
    assert f"{ours:.2f}" in cells  # our one smoke run's test error
    assert f"{paper.cifar_table6()[20]['error']:.2f}" in cells  # the paper's beside it
    caption = next(line for line in res.output.splitlines() if line.startswith("_Ours"))  # the reference block follows
    assert "smoke" in caption and "30 iterations" in caption
    assert f"data: {shared_cifar.name} (image-folder (jpg))" in caption  # the data copy, named
