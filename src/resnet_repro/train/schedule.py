"""Learning-rate schedules counted in iterations (paper Sec. 4.2 for CIFAR-10).

The paper's CIFAR-10 schedule: batch 128, lr 0.1, divided by 10 at 32k and 48k
iterations, stop at 64k. Each named schedule keeps that shape (drops at 1/2 and 3/4 of
the run) at another length so real runs fit in less time:

========  ============  ===============  =========================================
name      iterations    lr drops at      use
========  ============  ===============  =========================================
paper     64,000        32,000, 48,000   the paper's protocol (hours on a CPU)
quick     4,000         2,000, 3,000     1/16 of the paper's; minutes on a CPU
smoke     30            15, 22           a few seconds; tests and CI only
========  ============  ===============  =========================================

``--iterations N`` scales the same shape to any length (a ``custom`` schedule).

The warm-up for 110 layers and deeper (paper Sec. 4.2): lr 0.01 until the training
error falls below 80% (about 400 iterations in the paper), then the schedule's lr. Here
it is an explicit phase: checked at every logging point on the training error of the
last logging window, and ended unconditionally at ``warmup_max_iterations`` (1/8 of the
run), so it always ends.
"""

from __future__ import annotations

from dataclasses import dataclass

from resnet_repro import paper
from resnet_repro.errors import UserError


@dataclass(frozen=True)
class Schedule:
    """A named iteration schedule.

    Attributes:
        name: ``paper``, ``quick``, ``smoke`` or ``custom``.
        iterations: total SGD iterations.
        milestones: iterations at which the lr is divided by 10.
        eval_every: iterations between evaluations (val and test error, checkpoint).
        log_every: iterations between training-loss/error log lines.
        eval_subset: evaluate on only N evenly spaced val/test images (smoke only); None = all.
    """

    name: str
    iterations: int
    milestones: tuple[int, ...]
    eval_every: int
    log_every: int
    eval_subset: int | None = None

    @property
    def warmup_max_iterations(self) -> int:
        """Hard end of the warm-up phase: 1/8 of the run, rounded to a logging point."""
        return max(self.log_every, (self.iterations // 8) // self.log_every * self.log_every)


_PAPER_LR = paper.recipe("cifar10")["lr"]  # Sec. 4.2: stop at 64k, divide by 10 at 32k and 48k
PAPER_ITERATIONS = int(_PAPER_LR["stop_iter"])
_DROP_FRACTIONS = tuple(m / PAPER_ITERATIONS for m in _PAPER_LR["divide_by_10_at_iter"])  # (0.5, 0.75)


def _shape(name: str, iterations: int, eval_every: int, log_every: int, subset: int | None = None) -> Schedule:
    ms = tuple(round(iterations * f) for f in _DROP_FRACTIONS)
    return Schedule(name, iterations, ms, eval_every, log_every, subset)


SCHEDULES = {
    "paper": _shape("paper", PAPER_ITERATIONS, 1000, 100),
    "quick": _shape("quick", PAPER_ITERATIONS // 16, 250, 25),
    "smoke": _shape("smoke", 30, 15, 5, subset=1000),
}


def get_schedule(name: str = "quick", iterations: int | None = None) -> Schedule:
    """Look up a named schedule, or scale the paper's shape to ``iterations``.

    Raises:
        UserError: for an unknown name or a non-positive iteration count.
    """
    if iterations is not None:
        if iterations < 4:
            raise UserError(f"--iterations must be at least 4, got {iterations}")
        log_every = max(1, min(100, iterations // 100))
        eval_every = max(log_every, (iterations // 16) // log_every * log_every)
        return _shape("custom", iterations, eval_every, log_every)
    if name not in SCHEDULES:
        raise UserError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)} or give --iterations N")
    return SCHEDULES[name]


def lr_at(iteration: int, base_lr: float, milestones: tuple[int, ...] | list[int], gamma: float = 0.1,
          warmup_lr: float | None = None) -> float:
    """Learning rate for the (0-based) ``iteration``: ``base_lr * gamma**k`` where k
    counts the milestones already passed; ``warmup_lr`` instead while the warm-up phase
    is active (the caller decides that)."""
    if warmup_lr is not None:
        return warmup_lr
    k = sum(1 for m in milestones if iteration >= m)
    return float(f"{base_lr * gamma**k:.12g}")  # 0.1 * 0.1 -> 0.01, not 0.010000000000000002
