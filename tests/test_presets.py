"""The akamaster and fb presets (other reproductions' CIFAR-10 recipes, not the paper's):
epochs of 391 iterations, their lr drops in iterations, one evaluation per epoch, all 50k
training images, `check` holding their runs to that, and tables that give them labelled
rows of their own (best test epoch) and never average them with paper-protocol runs."""

from __future__ import annotations

import bisect
import json
import math
import warnings

import pytest

from conftest import run_main
from resnet_repro import published
from resnet_repro.errors import UserError
from resnet_repro.report.bench_reports import write_synthetic_run
from resnet_repro.runcheck import check_files
from resnet_repro.train.config import make_config, recipe_warnings
from resnet_repro.train.schedule import PRESETS, get_schedule, lr_at


def test_iterations_per_epoch_keep_the_partial_batch():
    for name in ("akamaster", "fb"):
        r = published.recipe(name)
        assert (r["train_images"], r["batch"], r["drop_last"]) == (50000, 128, False)
        # 390 full batches of 128 and one of 80: 391 iterations an epoch
        assert 390 * 128 + 80 == 50000 and math.ceil(50000 / 128) == 391
        assert PRESETS[name].epoch_iterations == 391


def test_totals_and_drop_points():
    ak, fb = get_schedule("akamaster"), get_schedule("fb")
    assert (ak.iterations, ak.milestones) == (78_200, (39_100, 58_650))  # 200 epochs; after epochs 100, 150
    # fb.resnet.torch's train.lua: decay = epoch >= 122 and 2 or epoch >= 81 and 1 or 0, epochs counted
    # from 1 (main.lua): the lr changes after 80 and 121 complete epochs, at 80 x 391 and 121 x 391
    assert (fb.iterations, fb.milestones) == (64_124, (31_280, 47_311))
    assert (80 * 391, 121 * 391, 164 * 391) == (31_280, 47_311, 64_124)


@pytest.mark.parametrize("name, before_after", [
    ("akamaster", [(39_099, 0.1), (39_100, 0.01), (58_649, 0.01), (58_650, 0.001), (78_199, 0.001)]),
    ("fb", [(31_279, 0.1), (31_280, 0.01), (47_310, 0.01), (47_311, 0.001), (64_123, 0.001)]),
])
def test_lr_just_before_and_after_each_drop(name, before_after):
    s = get_schedule(name)
    assert lr_at(0, 0.1, s.milestones) == 0.1
    for it, lr in before_after:  # 0-based iteration: the SGD step that uses this lr
        assert lr_at(it, 0.1, s.milestones) == lr, it


def test_lr_follows_each_recipes_own_epoch_rule_at_every_iteration():
    ak, fb = get_schedule("akamaster"), get_schedule("fb")
    for i in range(ak.iterations):  # MultiStepLR([100, 150]) stepped after each 0-based epoch
        e = i // 391
        assert lr_at(i, 0.1, ak.milestones) == pytest.approx(0.1 * 0.1 ** bisect.bisect_right([100, 150], e),
                                                              rel=1e-12)
    for i in range(fb.iterations):  # train.lua's learningRate(epoch), epochs from 1
        epoch = i // 391 + 1
        decay = 2 if epoch >= 122 else 1 if epoch >= 81 else 0
        assert lr_at(i, 0.1, fb.milestones) == pytest.approx(0.1 * 0.1 ** decay, rel=1e-12)


def test_config_of_a_preset():
    cfg = make_config("resnet20", "data", schedule="akamaster", precision="fp32", device="cpu")
    assert (cfg.schedule, cfg.iterations, cfg.lr_milestones) == ("akamaster", 78_200, [39_100, 58_650])
    assert (cfg.eval_every, cfg.eval_subset, cfg.train_on) == (391, None, "all")  # every epoch, all test images
    assert 391 % cfg.log_every == 0 and cfg.log_every == 23
    assert (cfg.batch_size, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.warmup) == (128, 0.1, 0.9, 1e-4, False)
    assert cfg.run_name == "resnet20-A-akamaster-all-s0"
    assert any("not the paper's protocol" in w and "78,200" in w for w in recipe_warnings(cfg))
    fb = make_config("resnet56", "data", schedule="fb", precision="fp32", device="cpu", train_on="all")
    assert (fb.iterations, fb.lr_milestones, fb.eval_every, fb.train_on) == (64_124, [31_280, 47_311], 391, "all")
    assert any("Nesterov" in w for w in recipe_warnings(fb))


def test_warmup_of_each_preset():
    # akamaster: lr 0.01 for the first epoch of resnet110 / resnet1202, then 0.1
    ak = make_config("resnet110", "data", schedule="akamaster", precision="fp32", device="cpu")
    assert (ak.warmup, ak.warmup_lr, ak.warmup_max_iterations, ak.warmup_until_train_error) == (True, 0.01, 391, 0.0)
    # fb.resnet.torch has no warm-up: auto leaves it off (and says the paper would use one)
    fb = make_config("resnet110", "data", schedule="fb", precision="fp32", device="cpu")
    assert fb.warmup is False
    assert any("without the paper's warm-up" in w for w in recipe_warnings(fb))
    paper = make_config("resnet110", "data", schedule="paper", precision="fp32", device="cpu")
    assert (paper.warmup_until_train_error, paper.warmup_max_iterations) == (80.0, 8000)


@pytest.mark.parametrize("kw, match", [
    ({"train_on": "split"}, "trains on all 50,000 training images"),
    ({"batch_size": 64}, "at batch 128 and lr 0.1"),
    ({"lr": 0.05}, "at batch 128 and lr 0.1"),
    ({"scale_lr": True}, "at batch 128 and lr 0.1"),
    ({"iterations": 1000}, "--iterations replaces the schedule"),
    ({"dataset": "cifar100"}, "CIFAR-10 recipe"),
])
def test_what_a_preset_refuses(kw, match):
    with pytest.raises(UserError, match=match):
        make_config("resnet20", "data", schedule="akamaster", precision="fp32", device="cpu", **kw)


def test_preset_runs_pass_check_and_a_changed_one_does_not(tmp_path):
    run = write_synthetic_run(tmp_path / "resnet110-A-akamaster-all-s0", "resnet110", 0, "akamaster")
    assert check_files(run) == []
    evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["iteration"] for e in evals if e["event"] == "eval"] == list(range(391, 78_201, 391))
    assert [e["iteration"] for e in evals if e["event"] == "warmup_end"] == [391]
    lrs = {e["iteration"]: e["lr"] for e in evals if e["event"] == "train"}
    assert (lrs[391], lrs[414], lrs[39_100], lrs[39_123]) == (0.01, 0.1, 0.1, 0.01)
    conf = json.loads((run / "config.json").read_text())
    conf["config"]["train_on"] = "split"
    (run / "config.json").write_text(json.dumps(conf))
    assert [p.field for p in check_files(run)] == ["train_on"]
    conf["config"].update(train_on="all", eval_every=782)
    (run / "config.json").write_text(json.dumps(conf))
    assert "eval_every" in [p.field for p in check_files(run)]


def _lower_one_eval(run, iteration: int, test_error: float) -> None:
    """A mid-run epoch with a lower test error than the last (as real runs have): the
    summary stays the last evaluation's, so the run still agrees with itself."""
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for e in lines:
        if e["event"] == "eval" and e["iteration"] == iteration:
            e["test_error"] = test_error
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(e, sort_keys=True) for e in lines) + "\n")


@pytest.fixture
def mixed(tmp_path):
    root = tmp_path / "results"
    c = root / "cifar10"
    write_synthetic_run(c / "resnet20-A-paper-s0", "resnet20", 0, "paper", final_test_error=9.0)
    write_synthetic_run(c / "resnet20-A-quick-s0", "resnet20", 0, "quick", final_test_error=19.0)
    a0 = write_synthetic_run(c / "resnet20-A-akamaster-all-s0", "resnet20", 0, "akamaster", final_test_error=8.6)
    _lower_one_eval(a0, 391 * 180, 8.1)
    write_synthetic_run(c / "resnet20-A-akamaster-all-s1", "resnet20", 1, "akamaster", final_test_error=8.3)
    write_synthetic_run(c / "resnet20-A-fb-all-s0", "resnet20", 0, "fb", final_test_error=8.9)
    write_synthetic_run(c / "resnet32-A-akamaster-all-s0", "resnet32", 0, "akamaster", final_test_error=7.4)
    return root


def _table(key, root, **kw):
    from resnet_repro.report.tables import get_table

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = get_table(key, root, **kw)
    return t, [str(w.message) for w in caught]


def test_table6_gives_presets_labelled_rows_of_their_own(mixed):
    t, _ = _table(6, mixed)
    r20 = t.frame[t.frame["net"] == "ResNet-20"]
    assert list(r20["schedule"]) == ["paper", "quick", "akamaster (their recipe, not the paper's; best test epoch)",
                                     "fb (their recipe, not the paper's; best test epoch)"]
    paper_row, quick_row, ak_row, fb_row = (r20.iloc[i] for i in range(4))
    assert (paper_row["n"], paper_row["mean"]) == (1, 9.0)  # the paper's protocol alone
    assert (quick_row["n"], quick_row["mean"]) == (1, 19.0)
    # best test epoch of each akamaster run (8.1 at epoch 180; 8.3 at the last), never the final 8.6
    assert ak_row["n"] == 2 and ak_row["mean"] == pytest.approx((8.1 + 8.3) / 2) and ak_row["best"] == 8.1
    assert (fb_row["n"], fb_row["mean"]) == (1, 8.9)
    means = set(t.frame["mean"].dropna())
    for mixed_mean in ((9.0 + 8.1 + 8.3) / 3, (9.0 + 8.6 + 8.3) / 3, (9.0 + 8.9) / 2, (19.0 + 8.9) / 2):
        assert not any(math.isclose(m, mixed_mean) for m in means)
    r32 = t.frame[t.frame["net"] == "ResNet-32"]  # only preset runs: one preset row, no other row takes them
    assert list(r32["schedule"]) == ["akamaster (their recipe, not the paper's; best test epoch)"]
    assert "not the paper's protocol" in t.caption and "best test error over its per-epoch evaluations" in t.caption


def test_no_cell_chosen_by_most_iterations_takes_a_preset_run(mixed):
    t, _ = _table("cifar-shortcuts", mixed)
    a = t.frame[t.frame["net"] == "ResNet-20 A"].iloc[0]
    assert (a["n"], a["mean"], a["schedule"]) == (1, 9.0, "paper")  # 64,000 iterations, not akamaster's 78,200
    assert "2 resnet20 A run(s) of the akamaster preset (not the paper's protocol) not mixed in" in t.caption
    from resnet_repro.report.figures import figure_schedule
    from resnet_repro.report.tables import RunSet

    assert figure_schedule(RunSet.load(mixed), "cifar10", ["ResNet-20", "ResNet-32"]) == "paper"


def test_cli_train_akamaster_records_its_recipe(capsys, tmp_path, tiny_tree, monkeypatch):
    from resnet_repro.train import loop

    real_fit = loop.fit

    def short_fit(cfg, run_dir, **kw):  # 23 iterations (one logging point), then stop as if interrupted
        return real_fit(cfg, run_dir, stop_after=23, **kw)

    monkeypatch.setattr(loop, "fit", short_fit)
    out = tmp_path / "runs"
    code, stdout, err = run_main(["train", "--arch", "resnet20", "--schedule", "akamaster", "--data-dir",
                                  str(tiny_tree), "--out", str(out), "--threads", "1"], capsys)
    assert code == 130, err  # interrupted by stop_after
    assert "not the paper's protocol" in err
    run = out / "resnet20-A-akamaster-all-s0"
    cfg = json.loads((run / "config.json").read_text())["config"]
    assert (cfg["schedule"], cfg["iterations"], cfg["lr_milestones"]) == ("akamaster", 78_200, [39_100, 58_650])
    assert (cfg["eval_every"], cfg["log_every"], cfg["train_on"], cfg["batch_size"]) == (391, 23, "all", 128)
    events = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert events[0]["val_images"] == 0 and events[0]["train_images"] == 120  # every training image
    assert [(e["iteration"], e["lr"]) for e in events if e["event"] == "train"] == [(23, 0.1)]
    code, stdout, _ = run_main(["check", str(out)], capsys)
    assert code == 0 and "interrupted, 23 of 78,200 iterations" in stdout
    code, _, err = run_main(["train", "--arch", "resnet20", "--schedule", "fb", "--train-on", "split",
                             "--data-dir", str(tiny_tree), "--out", str(out)], capsys)
    assert code == 2 and "drop --train-on split" in err and err.count("\n") == 1
