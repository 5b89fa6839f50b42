"""The paper's recipe guarded: a run whose data, split or schedule differs from what a
table's caption states is left out with a warning at every length (custom ones too)."""

from __future__ import annotations

import warnings

from resnet_repro import runcheck
from resnet_repro.report.bench_reports import write_synthetic_run
from resnet_repro.report.tables import get_table


def table6(root):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = get_table(6, root)
    return t, [str(w.message) for w in caught]


def test_a_custom_length_run_on_all_50k_images_is_left_out_like_a_quick_one(tmp_path):
    c = tmp_path / "cifar10"
    ok = write_synthetic_run(c / "resnet20-A-it800-s0", "resnet20", 0, iterations=800, final_test_error=11.0)
    all50k = write_synthetic_run(c / "resnet20-A-it800-all-s1", "resnet20", 1, iterations=800, train_on="all",
                                 final_test_error=9.0)
    quick50k = write_synthetic_run(c / "resnet32-A-quick-all-s0", "resnet32", 0, train_on="all", final_test_error=8.0)
    assert runcheck.check_files(ok) == runcheck.check_files(all50k) == []  # they agree with themselves
    t, msgs = table6(tmp_path)
    for d in (all50k, quick50k):
        assert any(m.startswith(f"{d}: differs from cifar10-depth") and "train_on: 'all' there vs 'split'" in m
                   for m in msgs), msgs
    r20 = t.frame[t.frame["net"] == "ResNet-20"].iloc[0]
    assert (r20["n"], r20["our error (%)"], r20["schedule"]) == (1, "11.00", "custom")
    assert t.frame[t.frame["net"] == "ResNet-32"].iloc[0]["n"] == 0
    assert "45k/5k split" in t.caption and "custom (800 iterations)" in t.caption
