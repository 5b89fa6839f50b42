"""The validated configuration of one run: everything needed to rerun it.

A :class:`RunConfig` is written as ``config.json`` in the run directory (beside
provenance: package and torch versions, git commit, hardware, data checksum). Loading
that file alone reproduces the run: ``resnet-repro train --config RUN/config.json``.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from resnet_repro import __version__
from resnet_repro.errors import UserError
from resnet_repro.models.registry import resolve_shortcut, spec
from resnet_repro.train.imagenet_schedule import ImageNetSettings
from resnet_repro.train.schedule import get_schedule

# Fields that may change between a run and its resume without changing its results.
# Activation checkpointing recomputes the same values (models.checkpointing): memory only.
# threads is compared on its own (train.loop.check_same_threads): the count a CPU run
# actually used matters, and a recorded null means the torch default of that machine.
RESUME_MUTABLE = frozenset({"data_dir", "threads", "tensorboard", "checkpoint_activations"})
# The path of --init-weights may move (its sha256, init_weights_sha256, is what is compared);
# a resume takes the weights from its checkpoint and does not read the file.
RESUME_MUTABLE = RESUME_MUTABLE | {"init_weights"}
# DataLoader workers (ImageNet): each image's augmentation is seeded by itself, so speed only.
RESUME_MUTABLE = RESUME_MUTABLE | {"workers"}
# Gradient-norm logging (train.loop, analysis.gradients) measures in a separate pass that
# leaves the model as it was: the run's numbers are the same at any cadence, 0 included.
RESUME_MUTABLE = RESUME_MUTABLE | {"grad_norms_every"}


class InputNorm(BaseModel):
    """A per-channel input normalisation ``(x / 255 - mean) / std`` (RGB, 0-1 scale), used
    instead of the paper's per-pixel mean subtraction where a run starts from weights
    that were trained with it (``train --init-weights`` of akamaster's nets: ImageNet
    mean/std). ``name`` says where it came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    name: str = ""


class RunConfig(BaseModel):
    """One training run (paper Sec. 4.2 defaults for CIFAR-10).

    Units: learning rates are absolute; iterations count SGD steps of ``batch_size``
    images; errors elsewhere are percentages.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: str
    shortcut: str | None
    stride_on: str | None = None
    dataset: Literal["cifar10", "cifar100", "imagenet"] = "cifar10"
    data_dir: str
    data_checksum: str | None = None
    schedule: str
    iterations: int = Field(gt=0)
    lr_milestones: list[int]
    lr: float = Field(0.1, gt=0)
    lr_gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = Field(128, gt=0)
    warmup: bool = False
    warmup_lr: float = 0.01
    warmup_until_train_error: float = 80.0
    warmup_max_iterations: int = 0
    seed: int = 0
    train_on: Literal["split", "all"] = "split"
    split_seed: int = 0
    precision: Literal["fp32", "bf16"] = "fp32"
    channels_last: bool = False
    compile: bool = False
    checkpoint_activations: bool = False
    eval_every: int = Field(gt=0)
    log_every: int = Field(gt=0)
    eval_subset: int | None = None
    threads: int | None = None
    device: str = "cpu"
    tensorboard: bool = False
    # CIFAR-10: log per-stage gradient norms every N iterations (0: never; a config.json
    # without the field comes from before the option and logged none).
    grad_norms_every: int = Field(0, ge=0)
    # ImageNet runs (paper Sec. 3.4): sizes, lr rule, augmentation, SyncBN; None for CIFAR-10.
    imagenet: ImageNetSettings | None = None
    workers: int | None = None
    # Fine-tuning (CIFAR-10): start from these weights instead of He initialisation; the
    # file's sha256 is part of the recipe. input_norm None: the paper's per-pixel mean
    # subtraction; else the per-channel normalisation the initial weights were trained with.
    init_weights: str | None = None
    init_weights_sha256: str | None = None
    input_norm: InputNorm | None = None

    @property
    def num_classes(self) -> int:
        """Width of the net's last fc layer: the classes of ``dataset`` (10, 100, 1000)."""
        return DATASET_CLASSES[self.dataset]

    @property
    def run_name(self) -> str:
        """Default directory name, e.g. ``resnet20-A-quick-s0`` or ``plain20-quick-s0``;
        a CIFAR-100 run says so (``resnet20-A-cifar100-quick-s0``), so that it never
        shares a directory name with a CIFAR-10 run."""
        parts = [self.arch]
        if self.shortcut:
            parts.append(self.shortcut)
        if self.dataset == "cifar100":
            parts.append("cifar100")
        if self.stride_on and self.stride_on != "1x1":
            parts.append(f"stride{self.stride_on}")
        parts.append(self.schedule if self.schedule != "custom" else f"it{self.iterations}")
        if self.train_on == "all":
            parts.append("all")
        if self.init_weights_sha256:
            parts.append(f"ft{self.init_weights_sha256[:8]}")
        parts.append(f"s{self.seed}")
        return "-".join(parts)

    def result_fields(self) -> dict:
        """The fields that determine a run's numbers (all but :data:`RESUME_MUTABLE`)."""
        return {k: v for k, v in self.model_dump().items() if k not in RESUME_MUTABLE}


def cpu_has_native_bf16() -> bool:
    """True where the CPU runs bfloat16 matrix work natively (AMX or AVX512-BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(requested: str, device: str) -> tuple[str, str]:
    """``auto`` -> bf16 autocast where the hardware runs it natively, else fp32.

    Returns ``(precision, reason)``.

    Raises:
        UserError: for a value other than auto, fp32, bf16.
    """
    if requested not in ("auto", "fp32", "bf16"):
        raise UserError(f"unknown precision {requested!r}; choose auto, fp32 or bf16")
    if requested != "auto":
        return requested, "requested"
    if device.startswith("cuda"):
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return ("bf16", "CUDA GPU with bf16 support") if ok else ("fp32", "GPU without bf16")
    if cpu_has_native_bf16():
        return "bf16", "CPU with AMX or AVX512-BF16"
    return "fp32", "CPU without native bf16"


def resolve_device(requested: str) -> str:
    """``auto`` -> ``cuda`` if available, else ``cpu``.

    Raises:
        UserError: for CUDA asked on a machine without it.
    """
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda asked but no CUDA GPU is visible; use --device cpu or auto")
    if requested != "cpu" and not requested.startswith("cuda"):
        raise UserError(f"unknown device {requested!r}; choose auto, cpu or cuda[:N]")
    return requested


IMAGENET_NETS = "plain/resnet 18, 34, 50, 101, 152 (e.g. resnet34)"
# Classes of each data set a run may train on (the fc width of its net).
DATASET_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}
CIFAR_DATASETS = ("cifar10", "cifar100")


def resolve_dataset(arch: str, dataset: str | None) -> str:
    """The data set a run of ``arch`` trains on: ``dataset`` when given, else the net's
    own: ``"cifar10"`` for the 6n+2-layer nets of Sec. 4.2, ``"imagenet"`` for the nets
    of Table 1 (18 to 152 layers). The CIFAR nets also train on ``"cifar100"`` (the same
    nets with a 100-way fc; not in the paper).

    Raises:
        UserError: an unknown architecture or data set, or a net given the other data
            set (the message names the fix).
    """
    s = spec(arch)
    own = "cifar10" if s.family == "cifar" else "imagenet"
    if dataset is None:
        return own
    if dataset not in (*CIFAR_DATASETS, "imagenet"):
        raise UserError(f"unknown dataset {dataset!r}; choose cifar10, cifar100 or imagenet (default: the net's own)")
    if dataset in CIFAR_DATASETS and own == "imagenet":
        raise UserError(f"{s.name} is an ImageNet net (paper Table 1); drop --dataset {dataset} to train it on ImageNet, "
                        "or train a CIFAR net: 6n+2 depths such as resnet20, plain56")
    if dataset == "imagenet" and own == "cifar10":
        raise UserError(f"{s.name} is a CIFAR-10 net; drop --dataset imagenet to train it on CIFAR-10, or train "
                        f"an ImageNet net of Table 1: {IMAGENET_NETS}")
    return dataset


PAPER_LR = 0.1  # both data sets (Sec. 3.4, 4.2)


def reference_batch(dataset: str, schedule: str | None) -> int:
    """The batch the paper's lr 0.1 belongs to: 128 for CIFAR-10 (Sec. 4.2), 256 for
    ImageNet (Sec. 3.4); 8 for the ImageNet ``smoke`` schedule, whose lr is set for its
    own batch of 8."""
    from resnet_repro import paper

    if dataset == "imagenet":
        return 8 if schedule == "smoke" else int(paper.recipe("imagenet")["optimizer"]["batch"])
    return int(paper.recipe("cifar10")["optimizer"]["batch"])


def scaled_lr(lr: float, batch_size: int, dataset: str, schedule: str | None) -> float:
    """The linear-scaling rule (Goyal et al. 2017, not the paper's): ``lr`` times
    ``batch_size`` / the reference batch (:func:`reference_batch`), rounded to 12 digits."""
    return float(f"{lr * batch_size / reference_batch(dataset, schedule):.12g}")


def recipe_warnings(cfg: RunConfig) -> list[str]:
    """One line for each way ``cfg`` leaves the paper's recipe that would otherwise go
    unnoticed until a log shows it: a preset of another reproduction (``--schedule
    akamaster`` / ``fb``: not the paper's protocol), a net of 110 layers or more without
    the warm-up (Sec. 4.2), and the paper's lr 0.1 with another batch size than the one
    it belongs to (:func:`reference_batch`; Sec. 3.4, 4.2). Explicit choices (``--lr``
    other than 0.1, ``--scale-lr``) are not warned about; the start line states them."""
    from resnet_repro.train.schedule import PRESETS

    out = []
    if cfg.schedule in PRESETS:
        out.append(preset_line(cfg.schedule))
    if cfg.dataset in CIFAR_DATASETS and spec(cfg.arch).depth >= 110 and not cfg.warmup:
        out.append(f"{cfg.arch} trains without the paper's warm-up (--warmup off): lr {cfg.lr:g} from the first "
                   f"iteration, where the paper uses {cfg.warmup_lr:g} until the training error is below "
                   f"{cfg.warmup_until_train_error:g}% for 110 layers and more (Sec. 4.2); such nets have been "
                   "reported to diverge without it (1202 layers)")
    ref = reference_batch(cfg.dataset, cfg.schedule)
    if cfg.batch_size != ref and abs(cfg.lr - PAPER_LR) <= 1e-12:
        out.append(f"--batch-size {cfg.batch_size} trains at lr {PAPER_LR:g}, the paper's lr for batch {ref}; "
                   f"the linear-scaling rule gives {scaled_lr(PAPER_LR, cfg.batch_size, cfg.dataset, cfg.schedule):g} "
                   "for this batch: pass that as --lr, or --scale-lr")
    return out


def preset_line(name: str) -> str:
    """What ``--schedule NAME`` (a preset, :data:`resnet_repro.train.schedule.PRESETS`)
    trains, in one line that says it is not the paper's protocol."""
    from resnet_repro import published
    from resnet_repro.train.schedule import PRESETS

    r, sch = published.recipe(name), PRESETS[name]
    drops = ", ".join(f"{m:,}" for m in sch.milestones)
    warm = (f"; lr {r['warmup']['lr']:g} for the first {sch.warmup_iterations:,} iterations of 110+ layers"
            if r.get("warmup") else "")
    nesterov = "; plain momentum where theirs is Nesterov's" if r.get("nesterov") else ""
    return (f"--schedule {name} is the recipe of {r['name']}, not the paper's protocol: all "
            f"{int(r['train_images']):,} training images (no validation split), {int(r['epochs'])} epochs of "
            f"{sch.epoch_iterations} iterations ({sch.iterations:,}), lr /10 at {drops}{warm}, the test set "
            f"evaluated every epoch and the best test epoch reported (chosen on the test set){nesterov}; "
            "tables keep it in rows of its own")


def make_config(
    arch: str | None,
    data_dir: str,
    shortcut: str | None = None,
    schedule: str | None = "quick",
    iterations: int | None = None,
    seed: int = 0,
    train_on: str | None = None,
    precision: str = "auto",
    device: str = "auto",
    channels_last: bool | None = None,
    compile: bool = False,
    threads: int | None = None,
    stride_on: str | None = None,
    batch_size: int | None = None,
    lr: float = 0.1,
    warmup: str = "auto",
    tensorboard: bool = False,
    checkpoint_activations: bool = False,
    dataset: str | None = "cifar10",
    workers: int | None = None,
    sync_bn: bool = False,
    init_weights: str | None = None,
    scale_lr: bool = False,
    grad_norms_every: int | None = None,
) -> RunConfig:
    """Build a validated :class:`RunConfig` from CLI-level choices, resolving the
    paper's defaults: shortcut A for CIFAR nets, the warm-up for 110 layers and deeper
    (Sec. 4.2), bf16 autocast where native. ``dataset=None`` takes the net's own data
    set (:func:`resolve_dataset`).

    ``init_weights`` (CIFAR-10 only) starts the run from a file of ``resnet-repro
    import-weights`` or a CIFAR run's checkpoint (:func:`resnet_repro.train.init.read_init_weights`):
    its sha256 is recorded, and the run normalises its inputs as the weights were trained
    (an imported akamaster net: ImageNet mean/std; our own runs: the per-pixel mean).
    ``scale_lr`` applies the linear-scaling rule (:func:`scaled_lr`) to ``lr`` and the
    warm-up lr: off by default, as in the paper; the config stores the lr used.
    ``grad_norms_every`` (CIFAR-10 only) is the cadence of the ``grad_norms`` events
    (:func:`resnet_repro.train.loop.fit`; 0: none); None takes the schedule's
    ``eval_every``: one measurement per evaluation (1,000 iterations on the paper's
    schedule, 250 on the quick one).

    ``train_on`` None means ``split`` (the paper's 45k/5k), or ``all`` for a preset
    (``schedule`` ``akamaster`` or ``fb``, :data:`resnet_repro.train.schedule.PRESETS`),
    which trains on all 50k as its recipe does; a preset refuses ``split``, another
    length (``iterations``), batch size or lr, and CIFAR-100. ``warmup="auto"`` is the
    schedule's own rule: the paper's for 110 layers and more, akamaster's one epoch at
    0.01 for 110+ layers, none for fb.

    Raises:
        UserError: for any invalid choice (unknown arch, schedule, precision, a net
            given the other data set, ...).
    """
    if workers is not None and workers < 0:
        raise UserError(f"--workers must be >= 0, got {workers}")
    if grad_norms_every is not None and grad_norms_every < 0:
        raise UserError(f"--grad-norms-every must be >= 0 (0: off), got {grad_norms_every}")
    init = None
    if init_weights is not None and arch is None:  # the net comes from the file
        from resnet_repro.train.init import read_init_weights

        init = read_init_weights(init_weights)
        arch = init.arch
    if arch is None:
        raise UserError("missing --arch; e.g. --arch resnet20 (see `resnet-repro train --help`)")
    dataset = resolve_dataset(arch, dataset)
    if dataset == "imagenet":  # paper Sec. 3.4; see train.imagenet_loop
        from resnet_repro.train.imagenet_loop import make_imagenet_config

        if tensorboard or checkpoint_activations or train_on not in (None, "split") or warmup == "on" or init_weights:
            raise UserError("--tensorboard, --checkpoint-activations, --train-on, --warmup and --init-weights are "
                            "options of CIFAR-10 training; drop them for --dataset imagenet")
        if grad_norms_every:
            raise UserError("--grad-norms-every is an option of CIFAR-10 training (the per-stage gradient norms of "
                            "the CIFAR nets); drop it for --dataset imagenet")

        return make_imagenet_config(
            arch, data_dir, shortcut=shortcut, schedule=schedule, iterations=iterations, seed=seed,
            precision=precision, device=device, channels_last=channels_last, compile=compile, threads=threads,
            stride_on=stride_on, batch_size=batch_size, lr=lr, workers=workers, sync_bn=sync_bn, scale_lr=scale_lr)
    if workers is not None or sync_bn:  # ignored here, they would only show in config.json
        raise UserError("--workers and --sync-bn are options of ImageNet training (CIFAR-10 batches are made on the "
                        "training device, in one process); drop them, or add --dataset imagenet")
    from resnet_repro.train.schedule import PRESETS

    if schedule in PRESETS and iterations is None:
        train_on = _check_preset(schedule, dataset, train_on, batch_size, lr, scale_lr)
    if batch_size is None:
        batch_size = 128
    if train_on is None:
        train_on = "split"
    if init_weights is not None and dataset != "cifar10":
        raise UserError(f"--init-weights starts from CIFAR-10 weights (10 classes); drop it for --dataset {dataset}, "
                        "or train on cifar10")
    if init_weights is not None:
        from resnet_repro.train.init import read_init_weights

        init = init or read_init_weights(init_weights)
        if spec(arch).name != init.arch:
            raise UserError(f"--init-weights {init_weights} holds {init.arch}, not {spec(arch).name}; "
                            f"pass --arch {init.arch} (or drop --arch)")
        if shortcut is None:
            shortcut = init.shortcut
        elif resolve_shortcut(spec(arch), shortcut) != init.shortcut:
            raise UserError(f"--init-weights {init_weights} holds shortcut option {init.shortcut}, not "
                            f"{shortcut.upper()}; drop --shortcut")
    if arch is None:
        raise UserError("missing --arch; e.g. --arch resnet20 (see `resnet-repro train --help`)")
    s = spec(arch)
    if train_on not in ("split", "all"):
        raise UserError(f"unknown --train-on {train_on!r}; choose split (45k/5k, the paper's) or all (50k)")
    if warmup not in ("auto", "on", "off"):
        raise UserError(f"unknown --warmup {warmup!r}; choose auto, on or off")
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    sch = get_schedule(schedule or "quick", iterations)
    dev = resolve_device(device)
    prec, _ = resolve_precision(precision, dev)
    if warmup == "auto":
        use_warmup = sch.warmup_min_depth is not None and s.depth >= sch.warmup_min_depth
    else:
        use_warmup = warmup == "on"
    warmup_lr = RunConfig.model_fields["warmup_lr"].default
    if scale_lr:
        lr, warmup_lr = (scaled_lr(v, batch_size, "cifar10", sch.name) for v in (lr, warmup_lr))
    if iterations is not None and schedule in PRESETS:
        raise UserError(f"--iterations replaces the schedule; drop it to train the {schedule} preset's "
                        f"{sch.iterations:,} iterations, or drop --schedule {schedule}")
    try:
        return RunConfig(
            arch=s.name,
            shortcut=resolve_shortcut(s, shortcut),
            stride_on=stride_on,
            dataset=dataset,
            data_dir=str(data_dir),
            schedule=sch.name,
            iterations=sch.iterations,
            lr_milestones=list(sch.milestones),
            lr=lr,
            batch_size=batch_size,
            warmup=use_warmup,
            warmup_lr=warmup_lr,
            warmup_until_train_error=sch.warmup_until_train_error,
            warmup_max_iterations=sch.warmup_max_iterations if use_warmup else 0,
            seed=seed,
            train_on=train_on,
            precision=prec,
            channels_last=True if channels_last is None else bool(channels_last),
            compile=compile,
            checkpoint_activations=checkpoint_activations,
            eval_every=sch.eval_every,
            log_every=sch.log_every,
            eval_subset=sch.eval_subset,
            threads=threads,
            device=dev,
            tensorboard=tensorboard,
            grad_norms_every=sch.eval_every if grad_norms_every is None else grad_norms_every,
            init_weights=None if init is None else str(init_weights),
            init_weights_sha256=None if init is None else init.sha256,
            input_norm=None if init is None else init.input_norm,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UserError(f"invalid value for {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def _check_preset(name: str, dataset: str, train_on: str | None, batch_size: int | None, lr: float,
                  scale_lr: bool) -> str:
    """``train_on`` for preset ``name`` (``all``: its recipe's), after refusing what would
    make it another recipe under its name.

    Raises:
        UserError: ``--train-on split``, a batch size or lr other than the recipe's,
            ``--scale-lr``, or CIFAR-100 (the presets are CIFAR-10 recipes).
    """
    from resnet_repro import published

    r = published.recipe(name)
    if dataset != "cifar10":
        raise UserError(f"--schedule {name} is {r['name']}'s CIFAR-10 recipe; for --dataset {dataset} choose "
                        "paper, quick or smoke, or --iterations N")
    if train_on == "split":
        raise UserError(f"--schedule {name} trains on all {int(r['train_images']):,} training images, as "
                        f"{r['name']} does; drop --train-on split (or use --train-on all), or choose --schedule "
                        "paper for the paper's 45k/5k split")
    if train_on not in (None, "all"):
        raise UserError(f"unknown --train-on {train_on!r}; choose split (45k/5k, the paper's) or all (50k)")
    if (batch_size is not None and batch_size != int(r["batch"])) or abs(lr - float(r["lr"])) > 1e-12 or scale_lr:
        raise UserError(f"--schedule {name} is {r['name']}'s recipe at batch {int(r['batch'])} and lr "
                        f"{float(r['lr']):g}; drop --batch-size, --lr and --scale-lr, or train another length "
                        "with --iterations N")
    return "all"


def load_config(path: str | os.PathLike) -> RunConfig:
    """Read a run's ``config.json`` (its ``config`` section).

    Raises:
        UserError: if the file is missing, not JSON, or not a valid config.
    """
    import json

    p = Path(path)
    try:
        obj = json.loads(p.read_text())
        return RunConfig.model_validate(obj["config"])
    except FileNotFoundError:
        raise UserError(f"no config at {p}; give a run directory's config.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, RecursionError):
        raise UserError(f"{p} is not a run config (expected JSON with a 'config' object)") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UserError(f"{p}: invalid {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def git_commit() -> str | None:
    """The git commit of the package source, or None outside a checkout."""
    try:
        root = Path(__file__).resolve().parents[3]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def hardware(device: str) -> dict:
    """A description of the machine a run used: CPU model and cores, GPU name."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_cores": os.cpu_count(), "platform": platform.platform(),
            "torch_threads": torch.get_num_threads()}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def provenance(cfg: RunConfig, source_kind: str | None) -> dict:
    """Everything about where a run came from that is not a choice: versions, commit,
    hardware, data copy."""
    return {
        "package_version": __version__,
        "git_commit": git_commit(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "hardware": hardware(cfg.device),
        "data_source_kind": source_kind,
    }
