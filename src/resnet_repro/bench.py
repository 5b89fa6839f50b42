"""Speed of our training path against the usual PyTorch pipeline, side by side.

**Ours** is the real training step of :mod:`resnet_repro.train.loop`
(:func:`~resnet_repro.train.loop.build_model`, :class:`~resnet_repro.train.loop.BatchOrder`,
:func:`~resnet_repro.train.loop.train_batch`, :func:`~resnet_repro.train.loop.train_step`,
:func:`~resnet_repro.train.loop.evaluate`): the data set held as one uint8 tensor on
the training device, the paper's pad/crop/flip augmentation (Sec. 4.2) done for the
whole batch at once, bfloat16 autocast where the hardware runs it natively, channels_last
memory.

**The baseline** trains the same net the way most CIFAR-10 scripts do: a
``torch.utils.data.Dataset`` that turns each uint8 image into a PIL image (as
``torchvision.datasets.CIFAR10`` does), torchvision transforms ``RandomCrop(padding=4)``,
``RandomHorizontalFlip``, ``ToTensor``, ``Normalize`` (per-channel mean/std of the
training images), a ``DataLoader`` with worker processes (``num_workers`` = the CPU
count, at most 8), fp32, NCHW, the same SGD.

Measurements (one process, the two paths in alternation so machine noise hits both):

* training throughput, images/s end to end (augmentation and transfer included), for
  ResNet-20/56/110 on CIFAR-10 (batch 128) and ResNet-50 on 224x224 inputs (a small batch);
* evaluation throughput (images/s);
* achieved FLOP/s from the multiply-adds of :func:`resnet_repro.analysis.complexity.analyse`
  (training counted as 3 forward passes: 6 FLOPs per multiply-add; evaluation 2);
* peak resident memory of a fresh process per configuration (``ru_maxrss``), including
  ResNet-1202 at batch 128 with activation checkpointing;
* the fast paths one by one on ResNet-20 (precision, memory format, ``torch.compile``);
* a projection of the wall time of the paper's 64k-iteration schedule from the measured
  throughputs (a projection, not a measurement);
* with ``check``: test errors after the same ``smoke`` schedule and seed, for our loop
  with and without its fast paths and for the baseline (see :func:`consistency_check`).

Each timed window runs one untimed iteration first, then at least ``iters`` iterations
and ``seconds`` seconds. The baseline's workers prefetch while the other path runs, so
the first batches of its window come ready-made: a small bias in the baseline's favour.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from resnet_repro.errors import UserError

Progress = Callable[[str], None]

CIFAR_BATCH = 128
IMAGENET_BATCH = 8
IMAGENET_EVAL_BATCH = 32
CIFAR_EVAL_BATCH = 1000
TRAIN_FLOPS_PER_MAC = 6  # forward 2 FLOPs per multiply-add, backward about twice the forward
EVAL_FLOPS_PER_MAC = 2
PAPER_VAL_TEST_IMAGES = 5000 + 10000  # evaluated at every eval point of the paper schedule


@dataclass
class BenchOptions:
    """What to measure.

    Attributes:
        models: nets for the throughput comparison (CIFAR names train at batch 128 on
            32x32; ImageNet names at ``imagenet_batch`` on 224x224 synthetic images).
        eval_models: the nets of ``models`` whose evaluation throughput is measured too
            (None: all).
        eval_batch: evaluation batch of the CIFAR nets (1000, as the training loop's).
        warm: untimed iterations of each path before the first window.
        memory: ``(arch, path, checkpoint_activations)`` triples for the peak-memory probes,
            ``path`` being ``"ours"`` or ``"baseline"``.
        data_dir: CIFAR-10 source; None with ``synthetic``.
        synthetic: random uint8 images and labels instead of CIFAR-10.
        device: ``cpu``, ``cuda``, ``cuda:N`` (resolved).
        threads: torch CPU threads of the benchmark process (and of each probe).
        workers: DataLoader workers of the baseline.
        rounds: alternations (ours, baseline) per measurement.
        iters / seconds: minimum timed iterations and seconds per window.
        memory_steps: training iterations of each memory probe.
        ablation: measure the fast paths one by one on ResNet-20.
        compile_variant: include ``torch.compile`` in the ablation (slow to compile).
        check: train both paths on the ``smoke`` schedule and compare test errors.
        check_seeds: seeds of the check.
        synthetic_train: random training images with ``synthetic`` (45k as CIFAR-10's
            training split; test images: a fifth of that, between 200 and 10k).
    """

    models: list[str] = field(default_factory=lambda: ["resnet20", "resnet56", "resnet110", "resnet50"])
    eval_models: list[str] | None = None
    eval_batch: int = CIFAR_EVAL_BATCH
    warm: int = 2
    memory: list[tuple[str, str, bool]] = field(default_factory=list)
    data_dir: str | None = None
    synthetic: bool = False
    device: str = "cpu"
    threads: int = 1
    workers: int = 2
    rounds: int = 3
    iters: int = 4
    seconds: float = 3.0
    imagenet_batch: int = IMAGENET_BATCH
    memory_steps: int = 3
    ablation: bool = True
    ablation_model: str = "resnet20"
    compile_variant: bool = False
    check: bool = False
    check_seeds: list[int] = field(default_factory=lambda: [0])
    synthetic_train: int = 45000


def default_options(quick: bool, device: str, threads: int, workers: int) -> BenchOptions:
    """The full benchmark, or ``quick`` (about two minutes on a 2-core CPU): fewer and
    shorter windows, evaluation timed on ResNet-20/56 only (batch 500), and peak memory
    for ResNet-110 (ours) only."""
    o = BenchOptions(device=device, threads=threads, workers=workers)
    if quick:
        o.rounds, o.iters, o.seconds, o.memory_steps, o.warm = 2, 1, 0.5, 2, 1
        o.eval_models, o.eval_batch = ["resnet20", "resnet56"], 500
        o.memory = [("resnet110", "ours", False)]
    else:
        o.memory = [(m, p, False) for m in ("resnet20", "resnet56", "resnet110", "resnet50")
                    for p in ("ours", "baseline")]
        o.memory.append(("resnet1202", "ours", True))
    return o


# ---------------------------------------------------------------------------- configs and data
def _is_cifar(arch: str) -> bool:
    from resnet_repro.models import spec

    return spec(arch).family == "cifar"


def run_config(arch: str, opts: BenchOptions, fast: bool = True, **update):
    """The :class:`~resnet_repro.train.config.RunConfig` of our path for ``arch``: the
    defaults of ``resnet-repro train`` (precision auto, channels_last) with ``fast``, or
    fp32 NCHW without. ImageNet nets get ``dataset="imagenet"`` and ``imagenet_batch``."""
    from resnet_repro.models import spec
    from resnet_repro.train.config import make_config

    s = spec(arch)
    base = "resnet20" if s.family == "imagenet" else arch
    cfg = make_config(base, opts.data_dir or "synthetic", schedule="smoke", device=opts.device,
                      precision="auto" if fast else "fp32", channels_last=fast, threads=opts.threads)
    if s.family == "imagenet":
        cfg = cfg.model_copy(update={"arch": s.name, "shortcut": s.default_shortcut, "dataset": "imagenet",
                                     "batch_size": opts.imagenet_batch})
    return cfg.model_copy(update=update) if update else cfg


def synthetic_data(n_train: int, n_test: int, size: int, classes: int, device: str, seed: int = 0):
    """Random uint8 images ``(N, 3, size, size)`` and labels in ``0..classes-1`` as a
    :class:`~resnet_repro.train.loop.TrainData` (no validation split)."""
    from resnet_repro.train.loop import TrainData

    rng = np.random.default_rng(seed)
    tx = torch.from_numpy(rng.integers(0, 256, (n_train, 3, size, size), dtype=np.uint8))
    ty = torch.from_numpy(rng.integers(0, classes, n_train, dtype=np.int64))
    vx = torch.from_numpy(rng.integers(0, 256, (n_test, 3, size, size), dtype=np.uint8))
    vy = torch.from_numpy(rng.integers(0, classes, n_test, dtype=np.int64))
    mean = tx[: min(n_train, 2000)].double().mean(0).div(255.0).float()
    dev = torch.device(device)
    return TrainData(tx.to(dev), ty.to(dev), None, None, vx.to(dev), vy.to(dev), mean.to(dev),
                     "synthetic", "synthetic", None)


def load_data(arch: str, opts: BenchOptions):
    """The data of ``arch``'s benchmark on the training device: CIFAR-10 (45k/5k split, as
    ``train``) or synthetic images; ImageNet nets always get 512 synthetic 224x224 images.

    Raises:
        UserError: CIFAR-10 missing (with the fix: ``--data-dir`` or ``--synthetic``).
    """
    from resnet_repro.train.loop import prepare_data

    if not _is_cifar(arch):
        return synthetic_data(512, 128, 224, 1000, opts.device)
    if opts.synthetic:
        n_test = min(10000, max(200, opts.synthetic_train // 5))
        return synthetic_data(opts.synthetic_train, n_test, 32, 10, opts.device)
    try:
        return prepare_data(run_config(arch, opts))
    except UserError as exc:
        raise UserError(f"{exc} (or run the benchmark on random images with --synthetic)") from None


def channel_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation in [0, 1] of uint8 images ``(N, H, W, 3)``
    (what ``transforms.Normalize`` is usually given), exact, from per-channel histograms."""
    levels = np.arange(256) / 255.0
    mean, std = [], []
    for c in range(3):
        h = np.bincount(x[..., c].ravel(), minlength=256).astype(np.float64)
        p = h / h.sum()
        m = float((p * levels).sum())
        mean.append(m)
        std.append(float(np.sqrt(max((p * (levels - m) ** 2).sum(), 0.0))))
    return mean, std


# ---------------------------------------------------------------------------- the two paths
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class OursTrain:
    """Our training path: exactly the per-iteration work of ``train.loop.fit`` (lr from
    the schedule, :func:`train_batch`, :func:`train_step`, the on-device loss/error
    window), without the logging."""

    def __init__(self, cfg, data) -> None:
        from resnet_repro.train.loop import BatchOrder, build_model

        self.cfg, self.data = cfg, data
        self.device = torch.device(cfg.device)
        self.model, self.opt, self.step_model = build_model(cfg)
        self.model.train()
        self.order = BatchOrder(len(data.train_x), cfg.batch_size, cfg.seed, self.device)
        self.it = 0
        self.batch = cfg.batch_size
        self.win_loss = torch.zeros((), device=self.device)
        self.win_wrong = torch.zeros((), device=self.device, dtype=torch.long)

    def step(self) -> None:
        from resnet_repro.train.loop import train_batch, train_step
        from resnet_repro.train.schedule import lr_at

        lr = lr_at(self.it, self.cfg.lr, self.cfg.lr_milestones, self.cfg.lr_gamma)
        for g in self.opt.param_groups:
            g["lr"] = lr
        x, y = train_batch(self.data, self.order, self.cfg, self.it)
        loss, out = train_step(self.step_model, self.opt, x, y, self.cfg)
        self.win_loss += loss.float() * len(y)
        self.win_wrong += (out.argmax(1) != y).sum()
        self.it += 1

    def sync(self) -> None:
        _sync(self.device)

    def close(self) -> None:
        pass


class OursEval:
    """Our evaluation path: :func:`~resnet_repro.train.loop.evaluate`, one batch per step."""

    def __init__(self, train: OursTrain, batch: int) -> None:
        self.t, self.batch, self.pos = train, batch, 0
        self.device = train.device

    def step(self) -> None:
        from resnet_repro.train.loop import evaluate

        d = self.t.data
        n = len(d.test_x)
        i = self.pos if self.pos + self.batch <= n else 0
        evaluate(self.t.step_model, d.test_x[i: i + self.batch], d.test_y[i: i + self.batch], d.mean,
                 self.t.cfg, batch=self.batch)
        self.pos = i + self.batch

    def sync(self) -> None:
        pass  # evaluate() returns a Python float: already synchronised

    def close(self) -> None:
        self.t.model.train()


class UInt8PILDataset(torch.utils.data.Dataset):
    """Images ``(N, H, W, 3)`` uint8 turned into PIL images one at a time, as
    ``torchvision.datasets.CIFAR10`` does, then passed through ``transform``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


class Baseline:
    """The usual pipeline: torchvision transforms on PIL images, a DataLoader with
    ``workers`` processes, fp32, NCHW, the same net, init and SGD as ours.

    Inputs: uint8 ``train_hwc`` ``(N, H, W, 3)``, ``train_y`` ``(N,)`` (and the test set
    for evaluation). ``unit_std`` normalises with std 1 (mean subtraction only)."""

    def __init__(self, cfg, train_hwc: np.ndarray, train_y: np.ndarray, test_hwc: np.ndarray,
                 test_y: np.ndarray, workers: int, eval_batch: int, unit_std: bool = False) -> None:
        from torchvision import transforms as T

        from resnet_repro.models import build

        self.cfg = cfg
        self.device = torch.device(cfg.device)
        self.batch = cfg.batch_size
        size = train_hwc.shape[1]
        mean, std = channel_stats(train_hwc)
        if unit_std:  # mean subtraction only (the paper's input scale), for the check
            std = [1.0, 1.0, 1.0]
        self.mean, self.std = mean, std
        train_tf = T.Compose([T.RandomCrop(size, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                              T.Normalize(mean, std)])
        test_tf = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
        if len(train_hwc) < self.batch:
            raise UserError(f"{len(train_hwc)} training images are fewer than one batch of {self.batch}; "
                            "give the full CIFAR-10 or more --synthetic-images")
        pin = self.device.type == "cuda"
        kw = dict(num_workers=workers, pin_memory=pin, persistent_workers=workers > 0)
        g = torch.Generator().manual_seed(cfg.seed)
        self.loader = torch.utils.data.DataLoader(UInt8PILDataset(train_hwc, train_y, train_tf), batch_size=self.batch,
                                                  shuffle=True, drop_last=True, generator=g, **kw)
        self.test_loader = torch.utils.data.DataLoader(UInt8PILDataset(test_hwc, test_y, test_tf),
                                                       batch_size=eval_batch, shuffle=False, **kw)
        torch.manual_seed(cfg.seed)
        self.model = build(cfg.arch, cfg.shortcut, stride_on=cfg.stride_on).to(self.device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay)
        self._it = None
        self._test_it = None

    def _next(self):
        while True:
            if self._it is None:
                self._it = iter(self.loader)
            try:
                return next(self._it)
            except StopIteration:
                self._it = None

    def step(self, lr: float | None = None) -> None:
        """One SGD iteration on the next batch from the DataLoader."""
        x, y = self._next()
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        if lr is not None:
            for g in self.opt.param_groups:
                g["lr"] = lr
        self.model.train()
        out = self.model(x)
        loss = F.cross_entropy(out, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def sync(self) -> None:
        _sync(self.device)

    def eval_step(self) -> int:
        """Classify the next test batch; returns the number of wrong predictions."""
        while True:
            if self._test_it is None:
                self._test_it = iter(self.test_loader)
            try:
                x, y = next(self._test_it)
                break
            except StopIteration:
                self._test_it = None
        self.model.eval()
        with torch.no_grad():
            out = self.model(x.to(self.device, non_blocking=True))
            wrong = int((out.argmax(1).cpu() != y).sum())
        return wrong

    @torch.no_grad()
    def test_error(self, n: int | None = None) -> float:
        """Top-1 error (%) on all test images, or on the ``n`` evenly spaced ones that our
        loop's smoke evaluation uses (:func:`resnet_repro.train.loop.eval_subset`)."""
        from resnet_repro.train.loop import eval_subset

        self.model.eval()
        wrong = []
        for x, y in self.test_loader:
            out = self.model(x.to(self.device))
            wrong.append(out.argmax(1).cpu() != y)
        flags = torch.cat(wrong)
        flags, _ = eval_subset(flags, flags, n)
        return 100.0 * int(flags.sum()) / len(flags)

    def close(self) -> None:
        for it in (self._it, self._test_it):
            if it is not None and hasattr(it, "_shutdown_workers"):
                it._shutdown_workers()
        self._it = self._test_it = None


class _EvalView:
    """The baseline's evaluation as a runner for :func:`alternate` (one test batch per step)."""

    def __init__(self, b: Baseline) -> None:
        self.b, self.batch = b, b.test_loader.batch_size

    def step(self) -> None:
        self.b.eval_step()

    def sync(self) -> None:
        pass

    def close(self) -> None:
        pass


def baseline_arrays(data) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The training and test images of ``data`` as HWC uint8 numpy arrays on the CPU (what
    a PIL pipeline starts from) with their labels."""
    def hwc(x):
        return np.ascontiguousarray(x.cpu().permute(0, 2, 3, 1).numpy())

    return hwc(data.train_x), data.train_y.cpu().numpy(), hwc(data.test_x), data.test_y.cpu().numpy()


# ---------------------------------------------------------------------------- timing
def alternate(runners: dict[str, object], rounds: int, iters: int, seconds: float) -> dict[str, dict]:
    """Time ``runners`` (objects with ``step``, ``sync``, ``batch``) in alternation:
    ``rounds`` rounds, each giving every runner one window (one untimed step, then at
    least ``iters`` steps and ``seconds`` seconds); the order reverses every round.

    Returns:
        ``{name: {"images_per_s": total images / total seconds, "windows": [images/s of
        each window], "images": int, "seconds": float}}``.
    """
    names = list(runners)
    acc = {n: {"images": 0, "seconds": 0.0, "windows": []} for n in names}
    for r in range(rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            run = runners[n]
            run.step()
            run.sync()
            k = 0
            t0 = time.perf_counter()
            while k < iters or time.perf_counter() - t0 < seconds:
                run.step()
                k += 1
            run.sync()
            dt = time.perf_counter() - t0
            imgs = k * run.batch
            acc[n]["images"] += imgs
            acc[n]["seconds"] += dt
            acc[n]["windows"].append(round(imgs / dt, 2))
    for a in acc.values():
        a["images_per_s"] = round(a["images"] / a["seconds"], 2)
        a["seconds"] = round(a["seconds"], 3)
    return acc


# ---------------------------------------------------------------------------- memory probes
def _rss_now_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _hwm_mb() -> float | None:
    """Peak resident set of this process's address space (Linux ``VmHWM``). Unlike
    ``ru_maxrss`` it starts afresh at ``exec``: a child's ``ru_maxrss`` inherits the
    peak of the process that spawned it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux: ``clear_refs`` 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def probe(spec: dict) -> dict:
    """Run in a fresh process: load the data, build one path for ``spec["arch"]`` and
    train ``spec["steps"]`` iterations; report resident memory in MiB.

    Returns:
        ``{"peak_rss_mb"`` (the whole life of the process, data loading included:
        ``VmHWM``, or ``ru_maxrss`` where /proc is missing), ``"train_peak_rss_mb"``
        (peak while training, after a reset of the peak mark; None where the kernel does
        not allow that), ``"rss_before_train_mb"``, ``"cuda_peak_mb"`` (CUDA only),
        ``"seconds_per_step"}``.
    """
    opts = BenchOptions(**{k: v for k, v in spec["opts"].items() if k != "memory"})
    torch.set_num_threads(opts.threads)
    arch, path = spec["arch"], spec["path"]
    data = load_data(arch, opts)
    update = {"checkpoint_activations": bool(spec.get("checkpoint"))}
    if spec.get("batch"):
        update["batch_size"] = int(spec["batch"])
    cfg = run_config(arch, opts, fast=path == "ours", **update)
    if path == "ours":
        runner = OursTrain(cfg, data)
    else:
        arrays = baseline_arrays(data)
        del data
        runner = Baseline(cfg, *arrays, workers=opts.workers, eval_batch=CIFAR_EVAL_BATCH)
    before = _rss_now_mb()
    life_peak = _hwm_mb()
    reset = _reset_hwm()
    dev = torch.device(cfg.device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    for _ in range(spec["steps"]):
        runner.step()
    runner.sync()
    dt = (time.perf_counter() - t0) / spec["steps"]
    train_peak = _hwm_mb()
    if life_peak is None or train_peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    else:
        peak = max(life_peak, train_peak)
    out = {
        "peak_rss_mb": round(peak, 1),
        "train_peak_rss_mb": round(train_peak, 1) if reset and train_peak is not None else None,
        "rss_before_train_mb": None if before is None else round(before, 1),
        "seconds_per_step": round(dt, 3),
    }
    if dev.type == "cuda":
        out["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    runner.close()
    return out


def _probe_main() -> None:  # entry of the probe subprocess
    spec = json.loads(sys.argv[1])
    print("PROBE " + json.dumps(probe(spec)), flush=True)


def run_probe(arch: str, path: str, checkpoint: bool, opts: BenchOptions, timeout: float = 1800,
              batch: int | None = None) -> dict:
    """:func:`probe` in a fresh Python process (so every figure is that configuration's
    own peak), at the benchmark's batch size or ``batch``.

    Raises:
        RuntimeError: if the probe fails (its stderr tail in the message).
    """
    from dataclasses import asdict

    spec = {"arch": arch, "path": path, "checkpoint": checkpoint, "steps": opts.memory_steps, "batch": batch,
            "opts": {k: v for k, v in asdict(opts).items() if k != "memory"}}
    env = dict(os.environ, OMP_NUM_THREADS=str(opts.threads))
    code = "from resnet_repro.bench import _probe_main; _probe_main()"
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True,
                          env=env, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("PROBE "):
            return json.loads(line[6:])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    raise RuntimeError(f"memory probe {arch}/{path} failed (exit {proc.returncode}): {' | '.join(tail)}")


# ---------------------------------------------------------------------------- the benchmark
def _flops(arch: str) -> int:
    from resnet_repro.analysis.complexity import analyse

    return analyse(arch, None, None).mult_adds


def _pretty(arch: str) -> str:
    from resnet_repro.models import spec

    return spec(arch).paper_name


def _row(section: str, model: str, unit: str, ours: float | None, baseline: float | None, **extra) -> dict:
    ratio = round(ours / baseline, 3) if ours and baseline else None
    return {"section": section, "model": model, "unit": unit, "ours": ours, "baseline": baseline,
            "ratio": ratio, **extra}


def measure_model(arch: str, opts: BenchOptions, progress: Progress, data=None) -> tuple[list[dict], dict]:
    """Training (and, for ``opts.eval_models``, evaluation) throughput of ours and the
    baseline for one net, in alternation. Returns the table rows and the raw window
    figures."""
    data = data if data is not None else load_data(arch, opts)
    cfg = run_config(arch, opts)
    base_cfg = run_config(arch, opts, fast=False)
    cifar = _is_cifar(arch)
    do_eval = opts.eval_models is None or arch in opts.eval_models
    eval_batch = opts.eval_batch if cifar else IMAGENET_EVAL_BATCH
    eval_batch = min(eval_batch, len(data.test_x))
    ours = OursTrain(cfg, data)
    base = Baseline(base_cfg, *baseline_arrays(data), workers=opts.workers, eval_batch=eval_batch)
    name = _pretty(arch)
    inp = data.train_x.shape[-1]
    try:
        progress(f"{name}: warming up")
        for _ in range(opts.warm):
            ours.step()
            base.step()
        ours.sync()
        base.sync()
        progress(f"{name}: training throughput, {opts.rounds} rounds in alternation")
        tr = alternate({"ours": ours, "baseline": base}, opts.rounds, opts.iters, opts.seconds)
        ev = None
        if do_eval:
            progress(f"{name}: evaluation throughput")
            ev = alternate({"ours": OursEval(ours, eval_batch), "baseline": _EvalView(base)}, opts.rounds,
                           max(1, opts.iters // 2), opts.seconds / 2)
    finally:
        base.close()
    mac = _flops(arch)
    common = {"arch": arch, "batch": cfg.batch_size, "input": inp, "mult_adds": mac}
    rows = [
        _row("train", name, "images/s", tr["ours"]["images_per_s"], tr["baseline"]["images_per_s"], **common),
        _row("train FLOP/s", name, "GFLOP/s", round(tr["ours"]["images_per_s"] * mac * TRAIN_FLOPS_PER_MAC / 1e9, 2),
             round(tr["baseline"]["images_per_s"] * mac * TRAIN_FLOPS_PER_MAC / 1e9, 2), **common),
    ]
    if ev is not None:
        rows += [
            _row("eval", name, "images/s", ev["ours"]["images_per_s"], ev["baseline"]["images_per_s"],
                 **{**common, "batch": eval_batch}),
            _row("eval FLOP/s", name, "GFLOP/s",
                 round(ev["ours"]["images_per_s"] * mac * EVAL_FLOPS_PER_MAC / 1e9, 2),
                 round(ev["baseline"]["images_per_s"] * mac * EVAL_FLOPS_PER_MAC / 1e9, 2),
                 **{**common, "batch": eval_batch}),
        ]
    raw = {"arch": arch, "precision": cfg.precision, "channels_last": cfg.channels_last, "train": tr, "eval": ev}
    return rows, raw


def measure_fast_paths(opts: BenchOptions, progress: Progress, data=None) -> list[dict]:
    """Our path with each fast path switched off in turn (and ``torch.compile`` switched
    on, if asked), in alternation on ``opts.ablation_model``."""
    arch = opts.ablation_model
    data = data if data is not None else load_data(arch, opts)
    dev = torch.device(opts.device)
    default = run_config(arch, opts)
    variants = {
        f"default ({default.precision}, channels_last)": default,
        f"{default.precision}, NCHW": default.model_copy(update={"channels_last": False}),
        "fp32, channels_last": default.model_copy(update={"precision": "fp32"}),
        "fp32, NCHW (batched augmentation only)": default.model_copy(update={"precision": "fp32",
                                                                              "channels_last": False}),
    }
    if opts.compile_variant or dev.type == "cuda":
        label = "torch.compile (reduce-overhead: CUDA graphs)" if dev.type == "cuda" else "torch.compile"
        variants[f"default + {label}"] = default.model_copy(update={"compile": True})
    # Duplicates (e.g. fp32 already the default on a CPU without bf16) measured once.
    seen, uniq = set(), {}
    for k, c in variants.items():
        key = (c.precision, c.channels_last, c.compile)
        if key not in seen:
            seen.add(key)
            uniq[k] = c
    runners = {}
    for k, c in uniq.items():
        progress(f"fast paths: building and warming up '{k}'")
        r = OursTrain(c, data)
        for _ in range(opts.warm + 1 if c.compile else opts.warm):
            r.step()
        r.sync()
        runners[k] = r
    progress(f"fast paths on {_pretty(arch)}: {len(runners)} variants in alternation")
    res = alternate(runners, opts.rounds, opts.iters, opts.seconds)
    first = next(iter(res.values()))["images_per_s"]
    out = []
    for k, c in uniq.items():
        ips = res[k]["images_per_s"]
        out.append({"variant": k, "arch": arch, "precision": c.precision, "channels_last": c.channels_last,
                    "compile": c.compile, "images_per_s": ips, "vs_default": round(ips / first, 3),
                    "windows": res[k]["windows"]})
    return out


def projection(rows: list[dict]) -> list[dict]:
    """Wall time of the paper's CIFAR-10 schedule (Sec. 4.2: 64k iterations of 128 images,
    evaluated on 5k val + 10k test images every ``eval_every`` iterations) projected from
    the measured training and evaluation throughputs of each path. A projection, not a
    measurement: warm-up, checkpoints and logging are not included."""
    from resnet_repro.train.schedule import get_schedule

    sch = get_schedule("paper")
    n_evals = sch.iterations // sch.eval_every
    out = []
    by = {(r["section"], r["arch"]): r for r in rows}
    for (section, arch), r in by.items():
        if section != "train" or not _is_cifar(arch) or ("eval", arch) not in by:
            continue
        e = by[("eval", arch)]
        item = {"model": r["model"], "arch": arch, "iterations": sch.iterations, "batch": CIFAR_BATCH,
                "evaluations": n_evals}
        for path in ("ours", "baseline"):
            if r[path] and e[path]:
                train_h = sch.iterations * CIFAR_BATCH / r[path] / 3600
                eval_h = n_evals * PAPER_VAL_TEST_IMAGES / e[path] / 3600
                item[f"{path}_hours"] = round(train_h + eval_h, 2)
                item[f"{path}_eval_hours"] = round(eval_h, 3)
        out.append(item)
    return out


def consistency_check(opts: BenchOptions, progress: Progress) -> dict:
    """Do the fast paths change the results? Train ResNet-20 on the ``smoke`` schedule,
    each seed four ways, and compare test errors on the full test set:

    * ``fast``: our loop (:func:`~resnet_repro.train.loop.fit`) with its defaults (bf16
      where native, channels_last);
    * ``fp32``: the same loop in fp32, NCHW (same batches, same augmentation: isolates
      what precision and memory format do);
    * ``baseline``: the usual pipeline (torchvision transforms, DataLoader, fp32, NCHW),
      same net, init and lr schedule;
    * ``baseline_unit_std``: the same with ``Normalize(mean, std=1)``: mean subtraction
      only, the input scale of the paper's preprocessing (Sec. 4.2) that our loop uses.

    Raises:
        UserError: with ``synthetic`` data (random labels teach nothing).
    """
    from resnet_repro.train import checkpoint
    from resnet_repro.train.loop import evaluate, fit, prepare_data
    from resnet_repro.train.schedule import lr_at

    if opts.synthetic:
        raise UserError("--check needs CIFAR-10 (random labels teach nothing); drop --synthetic or give --data-dir")
    per_seed = []
    d = None
    for seed in opts.check_seeds:
        row: dict = {"seed": seed}
        for name, fast in (("fast", True), ("fp32", False)):
            cfg = run_config("resnet20", opts, fast=fast, seed=seed)
            progress(f"check: seed {seed}, our loop ({cfg.precision}), {cfg.iterations} iterations")
            with tempfile.TemporaryDirectory() as tmp:
                s = fit(cfg, Path(tmp) / "run")
                state = checkpoint.load_verified(Path(tmp) / "run" / "checkpoints" / "final.pt", None)
            ours = OursTrain(cfg, d if d is not None else prepare_data(cfg))
            d = ours.data
            ours.model.load_state_dict(state["model"])
            row[f"{name}_test_error"] = round(evaluate(ours.model, d.test_x, d.test_y, d.mean, cfg), 2)
            row[f"{name}_test_error_subset"] = s["final_test_error"]
            row[f"{name}_precision"] = cfg.precision
        for name, unit in (("baseline", False), ("baseline_unit_std", True)):
            progress(f"check: seed {seed}, the usual pipeline{' (std 1)' if unit else ''}")
            bcfg = run_config("resnet20", opts, fast=False, seed=seed)
            base = Baseline(bcfg, *baseline_arrays(d), workers=opts.workers, eval_batch=CIFAR_EVAL_BATCH,
                            unit_std=unit)
            try:
                for it in range(bcfg.iterations):
                    base.step(lr=lr_at(it, bcfg.lr, bcfg.lr_milestones, bcfg.lr_gamma))
                row[f"{name}_test_error"] = round(base.test_error(), 2)
                row[f"{name}_test_error_subset"] = round(base.test_error(bcfg.eval_subset), 2)
            finally:
                base.close()
        row["fast_minus_fp32"] = round(row["fast_test_error"] - row["fp32_test_error"], 2)
        row["fast_minus_baseline"] = round(row["fast_test_error"] - row["baseline_test_error"], 2)
        row["fast_minus_baseline_unit_std"] = round(row["fast_test_error"] - row["baseline_unit_std_test_error"], 2)
        per_seed.append(row)

    def mean(k: str) -> float:
        return round(float(np.mean([p[k] for p in per_seed])), 2)

    out = {"schedule": "smoke", "arch": "resnet20", "iterations": cfg.iterations, "test_images": int(len(d.test_x)),
           "subset_images": cfg.eval_subset, "seeds": per_seed}
    for k in ("fast_test_error", "fp32_test_error", "baseline_test_error", "baseline_unit_std_test_error",
              "fast_minus_fp32", "fast_minus_baseline", "fast_minus_baseline_unit_std"):
        out[f"mean_{k}"] = mean(k)
    out["fast_within_1_point_of_fp32"] = abs(out["mean_fast_minus_fp32"]) <= 1.0
    out["fast_within_1_point_of_baseline"] = abs(out["mean_fast_minus_baseline"]) <= 1.0
    return out


def machine_info(opts: BenchOptions) -> dict:
    """Where and how the benchmark ran."""
    from resnet_repro import __version__
    from resnet_repro.train.config import hardware

    info = {"package_version": __version__, "torch_version": torch.__version__,
            "python_version": platform.python_version(), "device": opts.device,
            "hardware": hardware(opts.device), "threads": opts.threads,
            "baseline_workers": opts.workers, "load_average": list(os.getloadavg()),
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "data": "synthetic" if opts.synthetic else opts.data_dir,
            "rounds": opts.rounds, "window_min_iters": opts.iters, "window_min_seconds": opts.seconds,
            "flops_convention": "multiply-adds from analysis.complexity; train 6 FLOPs per multiply-add "
                                "(forward + backward ~ 3 forward passes), eval 2"}
    return info


def run_bench(opts: BenchOptions, progress: Progress | None = None) -> dict:
    """Run the whole benchmark. Returns the result (JSON-ready): ``meta``, ``rows`` (one
    per section and model: ``ours``, ``baseline``, ``ratio`` = ours / baseline, ``unit``),
    ``fast_paths``, ``projection``, ``memory`` and ``check`` (None unless asked).

    Raises:
        UserError: missing data (use ``--synthetic``), an unknown model name.
    """
    from resnet_repro.models import spec

    say = progress or (lambda m: None)
    for m in opts.models + [m for m, _, _ in opts.memory]:
        spec(m)
    torch.set_num_threads(opts.threads)
    t_start = time.perf_counter()
    result: dict = {"meta": machine_info(opts), "rows": [], "fast_paths": [], "projection": [], "memory": [],
                    "raw": [], "check": None}
    ours_cfg = run_config(opts.models[0] if opts.models else "resnet20", opts)
    result["meta"]["ours_precision"] = ours_cfg.precision
    cifar_data = None  # loaded once, shared by the CIFAR nets

    def data_for(arch: str):
        nonlocal cifar_data
        if not _is_cifar(arch):
            return load_data(arch, opts)
        if cifar_data is None:
            say("loading data")
            cifar_data = load_data(arch, opts)
        return cifar_data

    for arch in opts.models:
        rows, raw = measure_model(arch, opts, say, data_for(arch))
        result["rows"].extend(rows)
        result["raw"].append(raw)
    if opts.ablation:
        result["fast_paths"] = measure_fast_paths(opts, say, data_for(opts.ablation_model))
    cifar_data = None
    for arch, path, ck in opts.memory:
        say(f"peak memory: {_pretty(arch)}, {path}{' + activation checkpointing' if ck else ''} (fresh process)")
        p = run_probe(arch, path, ck, opts)
        batch = CIFAR_BATCH if _is_cifar(arch) else opts.imagenet_batch
        result["memory"].append({"arch": arch, "model": _pretty(arch), "path": path, "batch": batch,
                                 "checkpoint_activations": ck, **p})
    for arch in dict.fromkeys(m["arch"] for m in result["memory"]):  # in the order probed
        got = {m["path"]: m for m in result["memory"] if m["arch"] == arch and not m["checkpoint_activations"]}
        if "ours" in got or "baseline" in got:
            o, b = got.get("ours", {}).get("peak_rss_mb"), got.get("baseline", {}).get("peak_rss_mb")
            batch = CIFAR_BATCH if _is_cifar(arch) else opts.imagenet_batch
            result["rows"].append(_row("peak RSS", _pretty(arch), "MiB", o, b, arch=arch, batch=batch))
    for m in result["memory"]:
        if m["checkpoint_activations"]:
            result["rows"].append(_row("peak RSS, checkpointed", m["model"], "MiB", m["peak_rss_mb"], None,
                                       arch=m["arch"], batch=m["batch"]))
    result["projection"] = projection(result["rows"])
    if opts.check:
        result["check"] = consistency_check(opts, say)
    result["meta"]["bench_seconds"] = round(time.perf_counter() - t_start, 1)
    return result


# ---------------------------------------------------------------------------- output
SECTION_ORDER = ("train", "train FLOP/s", "eval", "eval FLOP/s", "peak RSS", "peak RSS, checkpointed")


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.1f}"
    return str(v)


def tables(result: dict) -> list:
    """The result as rich tables: ours vs baseline with the ratio; the fast paths; the
    projection; the check."""
    from rich.table import Table

    m = result["meta"]
    main = Table(title=f"Speed: ours vs the usual pipeline ({m['device']}, {m['threads']} threads, "
                       f"baseline DataLoader with {m['baseline_workers']} workers)",
                 caption="ours: data as a uint8 tensor on the device, batched crop/flip, "
                         f"{m.get('ours_precision', '?')} autocast, channels_last (train.loop's step). "
                         "baseline: PIL + torchvision transforms, DataLoader, fp32, NCHW. "
                         "ratio = ours / baseline (for memory, lower is better).",
                 caption_justify="left", header_style="bold")
    for c in ("measure", "model", "batch", "ours", "baseline", "ratio", "unit"):
        main.add_column(c, justify="right" if c in ("batch", "ours", "baseline", "ratio") else "left")
    rows = sorted(result["rows"], key=lambda r: (SECTION_ORDER.index(r["section"])
                                                 if r["section"] in SECTION_ORDER else 99))
    for r in rows:
        main.add_row(r["section"], r["model"], str(r.get("batch", "")), _fmt(r["ours"]), _fmt(r["baseline"]),
                     f"{r['ratio']:.2f}x" if r["ratio"] else "-", r["unit"])
    out = [main] if rows else []
    if result["fast_paths"]:
        fp = Table(title=f"Fast paths on {_pretty(result['fast_paths'][0]['arch'])} (our loop, in alternation)",
                   header_style="bold")
        for c in ("variant", "images/s", "vs default"):
            fp.add_column(c, justify="left" if c == "variant" else "right")
        for v in result["fast_paths"]:
            fp.add_row(v["variant"], _fmt(v["images_per_s"]), f"{v['vs_default']:.2f}x")
        out.append(fp)
    if result["projection"]:
        pj = Table(title="Projection (not a measurement): wall time of the paper's 64k-iteration schedule",
                   caption="64,000 x 128 / training images/s + 64 evaluations of 15k images / eval images/s",
                   caption_justify="left", header_style="bold")
        for c in ("model", "ours (h)", "baseline (h)"):
            pj.add_column(c, justify="left" if c == "model" else "right")
        for p in result["projection"]:
            pj.add_row(p["model"], _fmt(p.get("ours_hours")), _fmt(p.get("baseline_hours")))
        out.append(pj)
    if result.get("check"):
        c = result["check"]
        ck = Table(title=f"Check: test error (%) of ResNet-20 after the {c['schedule']} schedule "
                         f"({c['iterations']} iterations), {c['test_images']} test images",
                   caption="fast: our loop (bf16 where native, channels_last); fp32: our loop in fp32 NCHW; "
                           "baseline: torchvision pipeline, Normalize(mean, std); std 1: Normalize(mean, 1), "
                           "the input scale of the paper's mean subtraction",
                   caption_justify="left", header_style="bold")
        for col in ("seed", "fast", "fp32", "baseline", "baseline std 1", "fast - fp32", "fast - baseline"):
            ck.add_column(col, justify="right")
        for r in c["seeds"] + [{"seed": "mean", **{k[5:]: v for k, v in c.items() if k.startswith("mean_")}}]:
            ck.add_row(str(r["seed"]), f"{r['fast_test_error']:.2f}", f"{r['fp32_test_error']:.2f}",
                       f"{r['baseline_test_error']:.2f}", f"{r['baseline_unit_std_test_error']:.2f}",
                       f"{r['fast_minus_fp32']:+.2f}", f"{r['fast_minus_baseline']:+.2f}")
        out.append(ck)
    return out


def write_result(path: str | os.PathLike, result: dict) -> None:
    """Write the result as JSON, atomically.

    Raises:
        UserError: if ``path`` cannot be written.
    """
    from resnet_repro.fsio import atomic_write_json

    try:
        atomic_write_json(path, result)
    except OSError as exc:
        raise UserError(f"cannot write {path} ({exc.strerror or exc}); choose a writable --out") from None
