"""ImageNet schedules and settings (paper Sec. 3.4), counted in iterations.

The paper: "SGD with a mini-batch size of 256. The learning rate starts from 0.1 and is
divided by 10 when the error plateaus, and the models are trained for up to 60 x 10^4
iterations. We use a weight decay of 0.0001 and a momentum of 0.9. We do not use
dropout." All these numbers are read from :mod:`resnet_repro.paper`.

========  ============  ==========================================  ===================
name      iterations    learning rate                               use
========  ============  ==========================================  ===================
paper     600,000 max   0.1, divided by 10 when val error plateaus  the paper's rule
fixed     600,000       0.1, divided by 10 at 150k and 300k         fixed-step variant
smoke     8             drops at 2 and 4, batch 8, 64-px crops      tests and CI only
========  ============  ==========================================  ===================

``fixed`` puts its drops where the paper's Fig. 4 curves show them (read off the
figure, about 15 and 30 x 10^4). ``--iterations N`` scales the fixed shape (drops at 1/4
and 1/2 of N).

The plateau test (:class:`PlateauRule`): after every evaluation of the center-crop
validation top-1 error, an evaluation that does not beat the best so far by more than
``plateau_threshold`` points counts as "no improvement"; after ``plateau_patience``
such evaluations in a row the lr is divided by 10 and the count restarts. Every
evaluation logs the best error and the count, every drop an ``lr_drop`` event.

Image sizes scale with the crop: the paper's sizes (crop 224, training shorter side 256
to 480, test shorter side 256, multi-scale sides 224 ... 640) are multiplied by
``crop / 224`` for a smaller crop, so the smoke schedule runs the real protocol on 64-px
crops at CPU speed.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from resnet_repro import paper
from resnet_repro.errors import UserError

EVAL_EVERY = 5000  # about one ImageNet epoch (1.28M images / 256)
LOG_EVERY = 100
PLATEAU_PATIENCE = 5  # evaluations (about 5 epochs) without improvement
PLATEAU_THRESHOLD = 0.1  # points of top-1 error
MEAN_IMAGES = 10000  # training images sampled for the mean image and the PCA


def _recipe() -> dict:
    return paper.recipe("imagenet")


def paper_crop() -> int:
    """The paper's crop side (224)."""
    return int(_recipe()["crop"])


def paper_sizes(crop: int | None = None) -> dict:
    """The paper's image sizes scaled to ``crop`` (default the paper's 224):
    ``{"crop", "scale": (min, max) training shorter side, "test_short": shorter side
    for center and 10-crop testing (the smallest training scale, as AlexNet's 256),
    "multiscale": shorter sides of Table 4}``."""
    base = paper_crop()
    crop = crop or base
    f = crop / base
    lo, hi = _recipe()["scale_augmentation_shorter_side"]
    scales = paper.table(4)["test_scales_shorter_side"]
    return {"crop": crop, "scale": (round(lo * f), round(hi * f)), "test_short": round(lo * f),
            "multiscale": tuple(round(s * f) for s in scales)}


class ImageNetSettings(BaseModel):
    """The ImageNet part of a run config (paper Sec. 3.4).

    Attributes:
        crop: training and test crop side in pixels (224).
        scale: range of the random shorter side for training ((256, 480)).
        test_short: shorter side for center-crop and 10-crop testing (256).
        multiscale: shorter sides of multi-scale testing ((224, 256, 384, 480, 640)).
        lr_rule: ``"plateau"`` (the paper's) or ``"step"`` (``lr_milestones``).
        plateau_patience / plateau_threshold: see :class:`PlateauRule`.
        lighting_std: sigma of the PCA lighting coefficients (0.1, AlexNet).
        mean_images: training images sampled for the mean image and the PCA.
        sync_bn: normalise over the global batch under DDP (else per process).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    crop: int = Field(gt=0)
    scale: tuple[int, int]
    test_short: int = Field(gt=0)
    multiscale: tuple[int, ...]
    lr_rule: str = "step"
    plateau_patience: int = Field(PLATEAU_PATIENCE, gt=0)
    plateau_threshold: float = PLATEAU_THRESHOLD
    lighting_std: float = Field(0.1, ge=0)
    mean_images: int = Field(MEAN_IMAGES, gt=0)
    sync_bn: bool = False


@dataclass(frozen=True)
class ImageNetSchedule:
    """A named ImageNet schedule (iterations, lr rule, evaluation cadence, batch, crop)."""

    name: str
    iterations: int
    milestones: tuple[int, ...]
    lr_rule: str
    eval_every: int
    log_every: int
    batch_size: int
    crop: int
    eval_subset: int | None = None
    mean_images: int = MEAN_IMAGES


def _fixed_milestones(iterations: int) -> tuple[int, ...]:
    full = int(_recipe()["max_iterations"])
    drops = paper.figure(4)["lr_drops_read_off_approx_iter"]
    return tuple(round(iterations * d / full) for d in drops)


def get_imagenet_schedule(name: str | None = None, iterations: int | None = None) -> ImageNetSchedule:
    """Look up ``paper`` (the default), ``fixed`` or ``smoke``, or scale ``fixed`` to
    ``iterations``.

    Raises:
        UserError: for an unknown name or fewer than 4 iterations.
    """
    full = int(_recipe()["max_iterations"])
    batch = int(_recipe()["optimizer"]["batch"])
    crop = paper_crop()
    if iterations is not None:
        if iterations < 4:
            raise UserError(f"--iterations must be at least 4, got {iterations}")
        log_every = max(1, min(LOG_EVERY, iterations // 100))
        eval_every = max(log_every, min(EVAL_EVERY, (iterations // 20) // log_every * log_every))
        return ImageNetSchedule("custom", iterations, _fixed_milestones(iterations), "step", eval_every,
                                log_every, batch, crop)
    name = name or "paper"
    if name == "paper":
        return ImageNetSchedule("paper", full, (), "plateau", EVAL_EVERY, LOG_EVERY, batch, crop)
    if name == "fixed":
        return ImageNetSchedule("fixed", full, _fixed_milestones(full), "step", EVAL_EVERY, LOG_EVERY, batch, crop)
    if name == "smoke":
        return ImageNetSchedule("smoke", 8, _fixed_milestones(8), "step", 4, 2, 8, 64, eval_subset=200,
                                mean_images=256)
    raise UserError(f"unknown ImageNet schedule {name!r}; choose paper, fixed or smoke, or give --iterations N")


class PlateauRule:
    """The paper's "divide the lr by 10 when the error plateaus", made explicit.

    ``update(val_error)`` after each evaluation: an error below ``best - threshold``
    is an improvement (``best`` is updated, the count reset); otherwise ``best`` stays
    and the count of evaluations without improvement grows, and when it reaches ``patience`` the lr is
    divided (``drops`` grows, the count restarts; ``best`` is kept).
    """

    def __init__(self, patience: int, threshold: float, best: float | None = None, bad: int = 0,
                 drops: int = 0) -> None:
        self.patience, self.threshold = patience, threshold
        self.best, self.bad, self.drops = best, bad, drops

    def update(self, val_error: float) -> bool:
        """Record one evaluation; True if the lr is to be divided now."""
        if self.best is None or val_error < self.best - self.threshold:
            self.best, self.bad = val_error, 0
            return False
        self.bad += 1
        if self.bad >= self.patience:
            self.bad = 0
            self.drops += 1
            return True
        return False

    def state(self) -> dict:
        """``{"best": error (%) or None, "bad": evaluations without improvement, "drops":
        lr divisions so far}``: logged with each evaluation and saved in checkpoints."""
        return {"best": self.best, "bad": self.bad, "drops": self.drops}
