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

**Presets of other public reproductions** (not the paper's protocol): ``akamaster``
(akamaster/pytorch_resnet_cifar10) and ``fb`` (fb.resnet.torch, CIFAR-10), built from
``refdata/recipes-cifar10.json`` (:func:`resnet_repro.published.recipe`, which names the
file of each fact). Both train on all 50,000 training images (``--train-on all`` is
implied; ``--train-on split`` is refused), count epochs of ceil(50,000 / 128) = 391
iterations (their loaders keep the last, partial batch) and report the best test error
over epochs, so a preset evaluates on the test set every 391 iterations:

=========  ======  ==========  ==========================  ============================
preset     epochs  iterations  lr 0.1 divided by 10 at      warm-up (auto)
=========  ======  ==========  ==========================  ============================
akamaster  200     78,200      39,100 and 58,650           110+ layers: lr 0.01 for the
                               (after epochs 100, 150)     first epoch (391 iterations)
fb         164     64,124      31,280 and 47,311           none
                               (after epochs 80, 121)
=========  ======  ==========  ==========================  ============================

fb.resnet.torch counts epochs from 1 and divides the lr from epoch 81 and from epoch 122
on (``train.lua``): after 80 and 121 complete epochs, not 81 and 122.

What is the same as theirs: iterations per epoch and in all, the iterations where the lr
changes, batch 128, momentum 0.9, weight decay 1e-4 on every parameter, one test
evaluation per 391 iterations, 50,000 training images, and on average the images per
epoch. What differs: :class:`resnet_repro.train.loop.BatchOrder` makes every batch 128
images and lets a batch that crosses the end of a pass over the data continue into the
next pass's permutation, so our 391 iterations hold 50,048 images (theirs 50,000: 390
batches of 128 and one of 80, whose batch-norm statistics and mean loss are over 80), and
our epoch boundaries drift from the passes by 48 images per epoch (9,600 images, 0.19 of
a pass, after 200 epochs); 10,009,600 training images in all for akamaster (theirs
10,000,000) and 8,207,872 for fb (8,200,000). The input normalisation stays the paper's
per-pixel mean (theirs: per-channel mean/std), momentum stays plain (fb.resnet.torch uses
Nesterov momentum), and the augmentation draws come from our own generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from resnet_repro import paper, published
from resnet_repro.errors import UserError


@dataclass(frozen=True)
class Schedule:
    """A named iteration schedule.

    Attributes:
        name: ``paper``, ``quick``, ``smoke``, ``custom``, or a preset (``akamaster``, ``fb``).
        iterations: total SGD iterations.
        milestones: iterations at which the lr is divided by 10.
        eval_every: iterations between evaluations (val and test error, checkpoint).
        log_every: iterations between training-loss/error log lines.
        eval_subset: evaluate on only N evenly spaced val/test images (smoke only); None = all.
        epoch_iterations: presets only: iterations per epoch of their recipe (391); None
            for the paper-shaped schedules.
        warmup_iterations: presets with a warm-up of fixed length (akamaster: one
            epoch); None: the paper's rule (train error below 80%, capped at 1/8 of the run).
        warmup_min_depth: the depth from which ``--warmup auto`` turns the warm-up on
            (110, the paper's); None: never (fb.resnet.torch has none).
    """

    name: str
    iterations: int
    milestones: tuple[int, ...]
    eval_every: int
    log_every: int
    eval_subset: int | None = None
    epoch_iterations: int | None = None
    warmup_iterations: int | None = None
    warmup_min_depth: int | None = 110

    @property
    def preset(self) -> bool:
        """True for a preset of another reproduction (not the paper's protocol)."""
        return self.epoch_iterations is not None

    @property
    def warmup_max_iterations(self) -> int:
        """Hard end of the warm-up phase: 1/8 of the run, rounded to a logging point (a
        preset's fixed warm-up: its length)."""
        if self.warmup_iterations is not None:
            return self.warmup_iterations
        return max(self.log_every, (self.iterations // 8) // self.log_every * self.log_every)

    @property
    def warmup_until_train_error(self) -> float:
        """The training error (%) below which the warm-up ends: the paper's 80, or 0 for a
        fixed-length warm-up (never below: it ends at :attr:`warmup_max_iterations`)."""
        return 0.0 if self.warmup_iterations is not None else 80.0


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


def _preset(name: str) -> Schedule:
    """The schedule of a public recipe (see the module docstring): epochs of
    ceil(train images / batch) iterations, lr drops after the recipe's epochs, one
    evaluation per epoch, training logged 17 times an epoch (every 23 of 391 iterations:
    the log points must divide the epoch)."""
    r = published.recipe(name)
    per_epoch = math.ceil(int(r["train_images"]) / int(r["batch"]))
    log_every = next(d for d in range(min(per_epoch, 25), 0, -1) if per_epoch % d == 0)
    warm = r.get("warmup")
    return Schedule(name, int(r["epochs"]) * per_epoch, tuple(int(e) * per_epoch for e in r["drop_after_epochs"]),
                    per_epoch, log_every, None, per_epoch,
                    int(warm["epochs"]) * per_epoch if warm else None, 110 if warm else None)


# Recipes of other public reproductions, not the paper's protocol (module docstring).
PRESETS = {n: _preset(n) for n in ("akamaster", "fb")}


def named_schedule(name: object) -> Schedule | None:
    """The schedule of :data:`SCHEDULES` or :data:`PRESETS` called ``name``, else None."""
    if not isinstance(name, str):
        return None
    return SCHEDULES.get(name) or PRESETS.get(name)


def get_schedule(name: str = "quick", iterations: int | None = None) -> Schedule:
    """Look up a named schedule or preset, or scale the paper's shape to ``iterations``.

    Raises:
        UserError: for an unknown name or a non-positive iteration count.
    """
    if iterations is not None:
        if iterations < 4:
            raise UserError(f"--iterations must be at least 4, got {iterations}")
        log_every = max(1, min(100, iterations // 100))
        eval_every = max(log_every, (iterations // 16) // log_every * log_every)
        return _shape("custom", iterations, eval_every, log_every)
    sch = named_schedule(name)
    if sch is None:
        raise UserError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)} (the paper's shape), "
                        f"{', '.join(PRESETS)} (other reproductions' recipes), or give --iterations N")
    return sch


def lr_at(iteration: int, base_lr: float, milestones: tuple[int, ...] | list[int], gamma: float = 0.1,
          warmup_lr: float | None = None) -> float:
    """Learning rate for the (0-based) ``iteration``: ``base_lr * gamma**k`` where k
    counts the milestones already passed; ``warmup_lr`` instead while the warm-up phase
    is active (the caller decides that)."""
    if warmup_lr is not None:
        return warmup_lr
    k = sum(1 for m in milestones if iteration >= m)
    return float(f"{base_lr * gamma**k:.12g}")  # 0.1 * 0.1 -> 0.01, not 0.010000000000000002
