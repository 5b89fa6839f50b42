"""Iteration schedules of paper Sec. 4.2 and their named short forms."""

from __future__ import annotations

import pytest

from resnet_repro.errors import UserError
from resnet_repro.train.schedule import get_schedule, lr_at


def test_paper_schedule_values():
    s = get_schedule("paper")
    assert (s.iterations, s.milestones) == (64000, (32000, 48000))
    assert lr_at(0, 0.1, s.milestones) == 0.1
    assert lr_at(31999, 0.1, s.milestones) == 0.1
    assert lr_at(32000, 0.1, s.milestones) == 0.01
    assert lr_at(47999, 0.1, s.milestones) == 0.01
    assert lr_at(48000, 0.1, s.milestones) == 0.001
    assert lr_at(63999, 0.1, s.milestones) == 0.001


def test_quick_is_one_sixteenth():
    q, p = get_schedule("quick"), get_schedule("paper")
    assert q.iterations * 16 == p.iterations
    assert q.milestones == (2000, 3000)
    assert p.eval_every % p.log_every == 0 and q.eval_every % q.log_every == 0


def test_smoke_and_custom_scaling():
    s = get_schedule("smoke")
    assert s.iterations == 30 and s.milestones == (15, 22) and s.eval_subset == 1000
    c = get_schedule("paper", iterations=8000)
    assert c.name == "custom" and c.milestones == (4000, 6000)
    assert c.eval_every % c.log_every == 0


def test_warmup_lr_and_cap():
    assert lr_at(10, 0.1, (100,), warmup_lr=0.01) == 0.01
    assert get_schedule("paper").warmup_max_iterations == 8000
    assert get_schedule("quick").warmup_max_iterations == 500


@pytest.mark.parametrize("name", ["fast", "", "PAPER"])
def test_unknown_schedule(name):
    with pytest.raises(UserError, match="unknown schedule"):
        get_schedule(name)


def test_too_few_iterations():
    with pytest.raises(UserError, match="at least 4"):
        get_schedule("quick", iterations=2)
