"""The CIFAR-10 training loop of paper Sec. 4.2, resumable to the bit.

Everything random is a pure function of ``(seed, iteration)``: the mini-batch order is
one seeded permutation per pass over the data, and the crop/flip randomness of
iteration ``k`` comes from a generator seeded with ``(seed, k)``. A resumed run
therefore needs only the model, optimizer and a few counters from its checkpoint to
continue exactly as an uninterrupted run would.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from resnet_repro import runs
from resnet_repro.analysis.gradients import stage_grad_norms
from resnet_repro.data.augment import pad_crop_flip, to_float
from resnet_repro.data.cifar import load_cifar, split_digest, split_indices, store_split
from resnet_repro.errors import UserError
from resnet_repro.fsio import atomic_write_bytes
from resnet_repro.models import build, spec
from resnet_repro.train import checkpoint
from resnet_repro.train.config import RunConfig, provenance, resolve_precision
from resnet_repro.train.schedule import lr_at

EventFn = Callable[[dict], None]
_SEED_STRIDE = 1_000_003


@dataclass
class TrainData:
    """CIFAR-10 on the training device.

    Attributes:
        train_x / val_x / test_x: ``(N, 3, 32, 32)`` uint8 tensors (val is None with
            ``train_on="all"``).
        train_y / val_y / test_y: ``(N,)`` int64.
        mean: ``(3, 32, 32)`` float32 per-pixel mean of the training images, in [0, 1]
            (paper Sec. 4.2); with ``cfg.input_norm`` the ``(3, 1, 1)`` per-channel mean of
            that normalisation instead.
        std: None (the paper's mean subtraction only), or ``(3, 1, 1)`` with
            ``cfg.input_norm``.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor | None
    val_y: torch.Tensor | None
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: torch.Tensor
    source_kind: str
    checksum: str
    split_digest: str | None
    std: torch.Tensor | None = None


def prepare_data(cfg: RunConfig, download: bool = False) -> TrainData:
    """Load CIFAR-10 (or CIFAR-100, ``cfg.dataset``), split off 5k validation images
    (unless ``train_on="all"``), compute the per-pixel mean on the training images (or
    take ``cfg.input_norm``'s per-channel mean and std), and move all to ``cfg.device``.

    Raises:
        UserError: if the data set is missing or corrupt, or has labels beyond the net's
            ``cfg.num_classes`` outputs.
    """
    arrays = load_cifar(cfg.dataset, cfg.data_dir, download=download)
    top = max(int(arrays.train_y.max(initial=0)), int(arrays.test_y.max(initial=0)))
    if top >= cfg.num_classes:
        raise UserError(f"the data at {cfg.data_dir} has label {top} ({len(arrays.classes)} classes), but a "
                        f"{cfg.dataset} net has {cfg.num_classes} outputs; point --data-dir at {cfg.dataset} data "
                        "or choose its --dataset")
    dev = torch.device(cfg.device)
    tx, ty = arrays.train_x, arrays.train_y
    vx = vy = None
    digest = None
    if cfg.train_on == "split":
        tr, va = split_indices(len(tx), cfg.split_seed)
        store_split(arrays.checksum, cfg.split_seed, tr, va)
        digest = split_digest(va)
        vx, vy = tx[va], ty[va]
        tx, ty = tx[tr], ty[tr]
    # float64 accumulation without a float64 copy of the images (1.1 GB for 45k); the
    # integer sums are exact, so the mean is the same to the bit.
    mean = torch.from_numpy(tx.mean(axis=0, dtype=np.float64) / 255.0).float()
    std = None
    if cfg.input_norm is not None:
        mean = torch.tensor(cfg.input_norm.mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(cfg.input_norm.std, dtype=torch.float32).view(3, 1, 1).to(dev)

    def t(a):
        return None if a is None else torch.from_numpy(np.ascontiguousarray(a)).to(dev)

    return TrainData(t(tx), t(ty), t(vx), t(vy), t(arrays.test_x), t(arrays.test_y), mean.to(dev),
                     arrays.source_kind, arrays.checksum, digest, std)


class BatchOrder:
    """Mini-batch indices as a pure function of the iteration: the training set is
    visited in one seeded random permutation per pass; a batch that crosses the end of
    a pass continues into the next pass's permutation."""

    def __init__(self, n: int, batch: int, seed: int, device: torch.device) -> None:
        self.n, self.batch, self.seed, self.device = n, batch, seed, device
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * _SEED_STRIDE + epoch)
            self._perms = {k: v for k, v in self._perms.items() if k >= epoch - 1}
            self._perms[epoch] = torch.randperm(self.n, generator=g).to(self.device)
        return self._perms[epoch]

    def indices(self, iteration: int) -> torch.Tensor:
        """``(batch,)`` int64 indices for 0-based ``iteration``."""
        parts, need, pos = [], self.batch, iteration * self.batch
        while need:
            epoch, off = divmod(pos, self.n)
            take = min(need, self.n - off)
            parts.append(self._perm(epoch)[off: off + take])
            need -= take
            pos += take
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def aug_generator(seed: int, iteration: int, device: torch.device) -> torch.Generator:
    """The generator for the augmentation of one iteration."""
    return torch.Generator(device=device).manual_seed((seed * _SEED_STRIDE + iteration + 1) % (2**63))


def autocast(cfg: RunConfig):
    """bfloat16 autocast context for ``cfg.precision == "bf16"``, else a no-op."""
    if cfg.precision != "bf16":
        return nullcontext()
    return torch.autocast(device_type=torch.device(cfg.device).type, dtype=torch.bfloat16)


def tensorboard_writer_class():
    """``torch.utils.tensorboard.SummaryWriter`` for ``--tensorboard``.

    Raises:
        UserError: if the ``tensorboard`` package is not installed.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("--tensorboard needs the tensorboard package; install it with "
                        "pip install -e '.[tensorboard]', or drop --tensorboard") from None
    return SummaryWriter


def tensorboard_log(writer, ev: dict) -> None:
    """Write the numeric fields of one metrics.jsonl event as TensorBoard scalars
    ``<event>/<field>`` (e.g. ``eval/test_error``; a field holding a dict of numbers, as
    the ``grad_norms`` event's ``weight`` and ``input``, gives ``<event>/<field>/<key>``,
    e.g. ``grad_norms/input/layer2``) at step ``iteration``; ``resume`` and ``end`` events
    are bookkeeping, not curves, so a resumed run shows the points of an uninterrupted one."""
    if ev.get("event") in ("resume", "end"):
        return

    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    for k, v in ev.items():
        if k in ("event", "iteration"):
            continue
        if number(v):
            writer.add_scalar(f"{ev['event']}/{k}", v, ev["iteration"])
        elif isinstance(v, dict):
            for sub, w in v.items():
                if number(w):
                    writer.add_scalar(f"{ev['event']}/{k}/{sub}", w, ev["iteration"])


def build_model(cfg: RunConfig) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.nn.Module]:
    """The net of ``cfg`` with He initialisation seeded by ``cfg.seed``, on ``cfg.device``
    (channels_last and activation checkpointing as configured), its SGD optimizer
    (momentum, weight decay; paper Sec. 4.2) and the module the training step calls.

    The step module is the net itself, or with ``cfg.compile`` the ``torch.compile``d
    net; on CUDA a CIFAR net is compiled with ``mode="reduce-overhead"`` (CUDA graphs:
    the small CIFAR nets are bound by per-kernel launch cost on a GPU). CPU runs never
    take the CUDA-graph path.

    Returns:
        ``(model, optimizer, step_model)``; ``step_model`` shares ``model``'s parameters.

    Raises:
        UserError: activation checkpointing asked of a net that does not support it.
    """
    dev = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = build(cfg.arch, cfg.shortcut, num_classes=cfg.num_classes, stride_on=cfg.stride_on).to(dev)
    if cfg.checkpoint_activations:
        if not hasattr(model, "checkpoint_activations"):
            raise UserError(f"activation checkpointing is implemented for the CIFAR nets only, not {cfg.arch}; "
                            "drop --checkpoint-activations")
        model.checkpoint_activations = True
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    step_model = model
    if cfg.compile:
        if uses_cuda_graphs(cfg):
            step_model = torch.compile(model, mode="reduce-overhead")
        else:
            step_model = torch.compile(model)
    return model, opt, step_model


def uses_cuda_graphs(cfg: RunConfig) -> bool:
    """True where :func:`build_model` compiles with CUDA graphs: ``cfg.compile`` on a CUDA
    device for a CIFAR net (32x32 inputs, where kernel launches dominate)."""
    return cfg.compile and torch.device(cfg.device).type == "cuda" and spec(cfg.arch).family == "cifar"


def train_batch(data: TrainData, order: BatchOrder, cfg: RunConfig, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The augmented mini-batch of 0-based ``iteration`` (paper Sec. 4.2: 4-pixel padding,
    random crop, random horizontal flip, per-pixel mean subtracted), made on the training
    device from the uint8 images in ``data``.

    Returns:
        ``x`` ``(B, 3, H, W)`` float32 (channels_last memory if ``cfg.channels_last``) and
        ``y`` ``(B,)`` int64, with ``B = cfg.batch_size``.
    """
    dev = data.train_x.device
    idx = order.indices(iteration)
    x = pad_crop_flip(to_float(data.train_x[idx], data.mean, data.std), aug_generator(cfg.seed, iteration, dev))
    y = data.train_y[idx]
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def train_step(step_model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               cfg: RunConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD iteration on the batch ``x`` ``(B, 3, H, W)``, ``y`` ``(B,)``: forward under
    the configured autocast, softmax cross-entropy, backward, optimizer step (the lr is
    whatever ``opt``'s param groups hold).

    Returns:
        The detached mean loss (a 0-d tensor) and logits ``(B, classes)``, still on the
        device (no synchronisation).
    """
    if uses_cuda_graphs(cfg):
        torch.compiler.cudagraph_mark_step_begin()
    with autocast(cfg):
        out = step_model(x)
        loss = F.cross_entropy(out, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach(), out.detach()


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, mean: torch.Tensor, cfg: RunConfig,
             batch: int = 1000, std: torch.Tensor | None = None) -> float:
    """Top-1 error (%) of ``model`` in eval mode on uint8 images ``x`` ``(N, 3, 32, 32)``
    with labels ``y`` ``(N,)``: a single view of each original image (paper Sec. 4.2),
    normalised by :func:`resnet_repro.data.augment.to_float` with ``mean`` and ``std``."""
    was_training = model.training
    model.eval()
    wrong = torch.zeros((), dtype=torch.long, device=x.device)
    for i in range(0, len(x), batch):
        xb = to_float(x[i: i + batch], mean, std)
        if cfg.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(cfg):
            out = model(xb)
        wrong += (out.argmax(1) != y[i: i + batch]).sum()
    model.train(was_training)
    return 100.0 * wrong.item() / len(x)


def eval_subset(x: torch.Tensor, y: torch.Tensor, k: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` evenly spaced images of ``x``/``y`` (all of them for None or ``k >= N``),
    so that every class of a class-sorted test set (an image-folder copy such as the
    shared JPEG one lists ``test/airplane/`` first) is in a smoke run's evaluation; the
    first ``k`` would all be airplanes. The same indices as the ImageNet loop's."""
    n = len(x)
    if k is None or k >= n:
        return x, y
    idx = torch.arange(k, device=x.device) * n // k
    return x[idx], y[idx]


class StopFlag:
    """Set by SIGINT/SIGTERM (``signum`` records which); a training loop checks it after
    each iteration, checkpoints and stops with the run marked ``interrupted``. Shared by
    the CIFAR and ImageNet loops. ``install`` is a no-op off the main thread."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, object] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, self._handler)

    def _handler(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C aborts at once
        self.signum = signum

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def check_existing(run_dir: Path, cfg: RunConfig, resume: bool) -> dict | None:
    """Check what ``run_dir`` already holds before training ``cfg`` there (shared by the
    CIFAR and ImageNet loops).

    Returns:
        the stored summary if the run is complete and ``resume`` is set (nothing to do);
        None if the directory is empty/new or holds an unfinished run of the same config
        that ``resume`` allows to continue.

    Raises:
        UserError: unreadable or invalid config.json, checkpoints without a config, a
            different config (the fields named), a complete run without ``resume``, or
            an unfinished run without ``resume``.
    """
    old = runs.read_json(run_dir / "config.json")
    if old is None:
        if (run_dir / "config.json").exists():
            raise UserError(f"{run_dir}/config.json is unreadable; choose another --out or --name, or delete that run")
        if checkpoint.has_checkpoints(run_dir / "checkpoints"):
            raise UserError(f"{run_dir} has checkpoints but no config.json; restore config.json, or delete "
                            f"{run_dir / 'checkpoints'} to start over")
        return None
    try:
        old_cfg = RunConfig.model_validate(old.get("config"))
    except Exception:
        raise UserError(f"{run_dir} holds a run with an invalid config; choose another --out or --name") from None
    a, b = old_cfg.result_fields(), cfg.result_fields()
    b["data_checksum"] = a.get("data_checksum")  # compared separately once the data is loaded
    diff = sorted(k for k in a if a[k] != b.get(k))
    if diff:
        shown = ", ".join(f"{k}: {a[k]!r} there vs {b.get(k)!r} now" for k in diff[:4])
        raise UserError(f"{run_dir} holds a different config ({shown}); choose another --out or --name")
    summary = runs.read_json(run_dir / "summary.json") or {}
    if summary.get("status") == "complete" and runs.summary_problem(summary, cfg.iterations) is None:
        if resume:
            return summary
        raise UserError(f"{run_dir} is already complete; pass --resume to accept it as is, or choose another --name")
    if not resume:
        raise UserError(f"{run_dir} holds an unfinished run; add --resume to continue it, or choose another --name")
    if checkpoint.has_checkpoints(run_dir / "checkpoints"):
        check_same_threads(run_dir, runs.recorded_threads(run_dir, old.get("config")), cfg)
    return None


def check_same_threads(run_dir: Path, recorded: int | None, cfg: RunConfig) -> None:
    """Refuse to resume a CPU run with another thread count than it trained with: the
    count changes how a CPU run's sums are split, so its numbers would no longer be those
    of an uninterrupted run. ``recorded`` is the run's count
    (:func:`resnet_repro.runs.recorded_threads`; None: unknown, accepted); the resume's is
    ``cfg.threads``, or torch's current count where that is None (the default). Runs on
    a GPU compute there whatever the CPU thread count, and are not checked.

    Raises:
        UserError: naming both counts and the fix (pass the recorded ``--threads``, or
            start a new run).
    """
    if recorded is None or torch.device(cfg.device).type != "cpu":
        return
    now = cfg.threads or torch.get_num_threads()
    if now != recorded:
        how = "--threads" if cfg.threads else "the default thread count"
        raise UserError(f"{run_dir} holds a different config (threads: {recorded} there vs {now} now, from {how}; "
                        f"the CPU thread count changes the results); pass --threads {recorded} to resume it "
                        "exactly, or start a new run with another --out or --name")


def write_failed(summary: Callable[..., dict], iteration: int, exc: OSError) -> UserError:
    """The error for a log or checkpoint write that failed mid-run (a full disk): marks the
    run ``interrupted`` where the summary can still be written, and returns the one-line
    UserError to raise. Shared by the CIFAR and ImageNet loops."""
    msg = (f"a write failed at iteration {iteration} ({exc.strerror or exc}); free space, then continue "
           "with --resume")
    try:
        summary("interrupted", iteration, msg)
    except OSError:
        pass
    return UserError(msg)


def missing_dirs(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first (what
    creating ``path`` would create; see :func:`remove_empty_dirs`)."""
    out = []
    p = Path(path)
    while not p.exists() and not p.is_symlink() and p.parent != p:
        out.append(p)
        p = p.parent
    return out


def remove_empty_dirs(dirs: list[Path]) -> None:
    """Remove the directories of :func:`missing_dirs`, deepest first, as long as they are
    empty (a directory that holds anything, and so its parents, is left alone)."""
    for d in dirs:
        try:
            d.rmdir()
        except OSError:
            return


def ensure_writable(run_dir: Path) -> None:
    """Create ``run_dir`` (and its parents) and check that a file can be written there,
    before any lock or data is touched.

    Raises:
        UserError: the directory cannot be created or written (the OS reason named).
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to {run_dir} ({exc.strerror}); choose a writable --out") from None


def check_same_data(run_dir: Path, cfg: RunConfig, digest: str, what: str = "checksum") -> None:
    """Refuse to train on data other than the run's: ``digest`` (of the data found at
    ``cfg.data_dir``; ``what`` names the kind of digest in messages) must equal the one
    the config carries and the one stored in ``run_dir/config.json``, where either is set.

    Raises:
        UserError: naming both digests and the fix.
    """
    if cfg.data_checksum and cfg.data_checksum != digest:
        raise UserError(f"the data at {cfg.data_dir} differs from the run's ({what} {digest[:12]} vs "
                        f"{cfg.data_checksum[:12]}); point --data-dir at the copy the run used")
    old = runs.read_json(run_dir / "config.json")
    old_sum = (old or {}).get("config", {}).get("data_checksum") if isinstance((old or {}).get("config"), dict) else None
    if old_sum not in (None, digest):
        raise UserError(f"{run_dir} was trained on other data ({what} {str(old_sum)[:12]}); point --data-dir at "
                        "that copy or choose another --name")


def refuse_past_end(state: dict, cfg: RunConfig, ckpt_dir: Path) -> None:
    """Refuse a resume checkpoint at or past the run's last iteration (it belongs to
    another run: the final weights are not a resume checkpoint).

    Raises:
        UserError: naming both iteration counts.
    """
    if state["iteration"] >= cfg.iterations:
        raise UserError(f"the checkpoint in {ckpt_dir} is at iteration {state['iteration']}, past this run's "
                        f"{cfg.iterations}; it belongs to another run: start without --resume in a new directory")


def restore_training_state(model: torch.nn.Module, opt: torch.optim.Optimizer, state: dict, cfg: RunConfig,
                           ckpt_dir: Path) -> None:
    """Load a checkpoint's model and optimizer state for ``--resume`` (the checkpoint was
    already checked for arch, shortcut and class count by ``checkpoint.check_compatible``).

    Raises:
        UserError: the checkpoint is at or past the run's last iteration
            (:func:`refuse_past_end`), or its tensors do not fit the model (first line of
            the reason named).
    """
    refuse_past_end(state, cfg, ckpt_dir)
    try:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"the checkpoint in {ckpt_dir} does not fit {cfg.arch} (shortcut {cfg.shortcut or '-'}): "
                        f"{first}; start the run again without --resume in a new directory") from None


def summary_fields(status: str, it: int, cfg: RunConfig, last_eval: dict, wall_s: float, train_s: float,
                   device: str, data_source_kind: str) -> dict:
    """The summary keys both loops write (``summary.json``): status, iterations done of
    the run's total, the last evaluation's errors in percent (``final_*``; None before
    the first), wall and training seconds, training images/s, precision, threads,
    device and the kind of data source. The loops add their own keys to it."""
    return {
        "status": status, "iterations_done": it, "iterations": cfg.iterations,
        "final_train_error": last_eval.get("train_error"), "final_val_error": last_eval.get("val_error"),
        "final_test_error": last_eval.get("test_error"), "eval_iteration": last_eval.get("iteration"),
        "wall_s": round(wall_s, 2), "train_s": round(train_s, 2),
        "images_per_s": round(it * cfg.batch_size / train_s, 1) if train_s > 0 else None,
        "precision": cfg.precision, "threads": torch.get_num_threads(), "device": device,
        "data_source_kind": data_source_kind,
    }


def diverged_message(loss: float, it: int, cfg: RunConfig, lr: float, fix: str) -> str:
    """The message of a run whose logged training loss over the window ending at
    iteration ``it`` is not finite; ``fix`` names what to try."""
    return (f"training loss became {loss} between iterations {it - cfg.log_every + 1} and {it} "
            f"(lr {lr}); the run diverged, try {fix}")


def fit(
    cfg: RunConfig,
    run_dir: str | Path,
    resume: bool = False,
    on_event: EventFn | None = None,
    stop_after: int | None = None,
    download: bool = False,
) -> dict:
    """Train one run and write its run directory (see :mod:`resnet_repro.runs`).

    Paper Sec. 4.2: SGD with momentum 0.9 and weight decay 1e-4 on mini-batches of 128,
    lr 0.1 divided by 10 at the schedule's milestones, the 0.01 warm-up for 110+ layers,
    4-pixel pad / random crop / flip augmentation, per-pixel mean subtraction.

    Gradient norms (paper Sec. 4.1; ``cfg.grad_norms_every`` = N > 0): at every iteration
    k < ``cfg.iterations`` with k % N == 0, k = 0 (the initial weights) included, the loop
    logs ``{"event": "grad_norms", "iteration": k, "loss": ..., "weight": {...},
    "input": {...}}`` right after the k-th step, before that iteration's ``train`` and
    ``eval`` events and checkpoint: the per-stage norms of the gradient on the mini-batch
    of the (k+1)-th step at the weights after k steps
    (:func:`resnet_repro.analysis.gradients.stage_grad_norms`: a separate forward and
    backward pass of the uncompiled module in the run's precision, BN statistics put
    back). The step itself is untouched, so metrics and weights equal those of the same
    run without the events, bit for bit; the measurement's time counts in ``train_s``.
    The event is logged like the others: a checkpoint at k holds it in its log position,
    and a resume from an earlier one cuts it back with the log and logs it again.

    Args:
        cfg: the validated run config.
        run_dir: the run directory (created if missing).
        resume: continue an unfinished run from its newest intact checkpoint (a
            directory without a run starts fresh).
        on_event: called with every logged event and with ``{"event": "step",
            "iteration": k}`` after every iteration (for progress bars).
        stop_after: stop as if interrupted after this many iterations (tests).
        download: let torchvision download CIFAR-10 if ``cfg.data_dir`` has none.

    Returns:
        The run's summary dict (also written to ``summary.json``); ``status`` is
        ``complete``, ``interrupted`` or ``diverged``.

    Raises:
        UserError: bad data, a run directory with another config or in use by another
            process, an unwritable output directory.
    """
    run_dir = Path(run_dir)
    emit = on_event or (lambda ev: None)
    if cfg.tensorboard:
        tensorboard_writer_class()  # a missing extra fails before anything is created
    if resume and cfg.threads is None and (chosen := runs.chosen_threads(run_dir)):  # no --threads: the run's own
        cfg = cfg.model_copy(update={"threads": chosen})
    created = missing_dirs(run_dir)
    try:
        ensure_writable(run_dir)
        with runs.RunLock(run_dir):
            runs.prepare_run_dir(run_dir)  # refuses symlinked run files, removes temp files of killed writes
            done = check_existing(run_dir, cfg, resume)
            if done is not None:
                emit({"event": "already_complete", "iteration": done.get("iterations_done", cfg.iterations)})
                return done
            try:
                return _fit_locked(cfg, run_dir, resume, emit, stop_after, download)
            except OSError as exc:  # before the training loop (which handles its own): disk full, permissions
                where = f" ({exc.filename})" if exc.filename else ""
                raise UserError(f"a file operation failed before training started{where}: {exc.strerror or exc}; "
                                "free space or fix permissions, then run again with --resume") from None
    except BaseException:
        remove_empty_dirs(created)  # a run that failed before writing anything leaves no folder behind
        raise


def _fit_locked(cfg: RunConfig, run_dir: Path, resume: bool, emit: EventFn, stop_after: int | None,
                download: bool) -> dict:
    tb_cls = tensorboard_writer_class() if cfg.tensorboard else None  # fail before any work
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dev = torch.device(cfg.device)
    data = prepare_data(cfg, download=download)
    check_same_data(run_dir, cfg, data.checksum)
    cfg = cfg.model_copy(update={"data_checksum": data.checksum})
    auto, auto_why = resolve_precision("auto", cfg.device)
    why = f"auto: {auto_why}" if auto == cfg.precision else "set explicitly"

    model, opt, step_model = build_model(cfg)

    ckpt_dir = run_dir / "checkpoints"
    metrics_path = run_dir / "metrics.jsonl"
    state = checkpoint.load_latest(ckpt_dir, map_location=dev) if resume else None
    if state is None and cfg.init_weights:  # fine-tuning: a resume takes its weights from the checkpoint
        from resnet_repro.train.init import load_init_weights

        load_init_weights(model, cfg)
    norm_rec = None if cfg.input_norm is None else {"mean": list(cfg.input_norm.mean),
                                                     "std": list(cfg.input_norm.std), "name": cfg.input_norm.name}
    start, wall_prev, train_s, warmup_active = 0, 0.0, 0.0, cfg.warmup
    win = [0.0, 0.0, 0]  # loss sum, wrong count, images in the current logging window
    last_eval: dict = {}
    if state is not None:
        checkpoint.check_compatible(state, cfg.arch, cfg.shortcut, cfg.num_classes, ckpt_dir)
        restore_training_state(model, opt, state, cfg, ckpt_dir)
        start, wall_prev, train_s = int(state["iteration"]), float(state["wall_s"]), float(state["train_s"])
        warmup_active = bool(state["warmup_active"])
        win = [float(state["window"][0]), float(state["window"][1]), int(state["window"][2])]
        last_eval = dict(state.get("last_eval") or {})
        atomic_write_bytes(metrics_path, checkpoint.log_prefix(metrics_path, state))  # checked against its digest
        kind = "resume"
    else:
        if metrics_path.exists():
            atomic_write_bytes(metrics_path, b"")
        runs.write_config(run_dir, cfg.model_dump(), {**provenance(cfg, data.source_kind),
                                                      "split_digest": data.split_digest})
        kind = "start"
    # TensorBoard drops the points at steps >= purge_step that a killed process wrote after
    # its checkpoint; those at the checkpoint's own iteration (logged before it was saved,
    # and kept in metrics.jsonl) stay, so the curves show what the log holds.
    tb = tb_cls(str(run_dir), purge_step=start + 1 if start else None) if tb_cls is not None else None
    t0 = time.perf_counter()

    def wall() -> float:
        return wall_prev + time.perf_counter() - t0

    def log(ev: dict) -> None:
        runs.log_event(run_dir, ev)
        if tb is not None:
            tensorboard_log(tb, ev)
        emit(ev)

    log({"event": kind, "iteration": start, "wall_s": round(wall(), 3), "precision": cfg.precision,
         "precision_reason": why, "threads": torch.get_num_threads(), "device": cfg.device,
         "train_images": len(data.train_x), "val_images": 0 if data.val_x is None else len(data.val_x),
         "test_images": len(data.test_x), "warmup_active": warmup_active,
         **({"init_weights": cfg.init_weights, "init_weights_sha256": cfg.init_weights_sha256} if cfg.init_weights
            else {})})

    def summary(status: str, it: int, message: str | None = None) -> dict:
        s = summary_fields(status, it, cfg, last_eval, wall(), train_s, cfg.device, data.source_kind)
        if message:
            s["message"] = message
        runs.write_summary(run_dir, s)
        return s

    def save_ckpt(it: int, window: list) -> None:
        checkpoint.save(ckpt_dir, f"iter-{it:07d}.pt", {
            "model": model.state_dict(), "optimizer": opt.state_dict(), "iteration": it,
            "warmup_active": warmup_active, "window": list(window), "wall_s": wall(), "train_s": train_s,
            **checkpoint.log_position(metrics_path), "last_eval": last_eval,
            "arch": cfg.arch, "shortcut": cfg.shortcut, "num_classes": cfg.num_classes, "input_norm": norm_rec,
        })

    order = BatchOrder(len(data.train_x), cfg.batch_size, cfg.seed, dev)
    sub = cfg.eval_subset
    stop = StopFlag()
    stop.install()
    win_loss = torch.zeros((), device=dev)
    win_wrong = torch.zeros((), device=dev, dtype=torch.long)
    win_loss += win[0]
    win_wrong += int(win[1])
    win_n = win[2]
    def grad_norms(at: int) -> None:
        """The grad_norms event of iteration ``at`` where the cadence asks for one: the
        weights after ``at`` steps, on the mini-batch of the next step (made again by the
        next iteration: a pure function of seed and iteration)."""
        if cfg.grad_norms_every and at % cfg.grad_norms_every == 0 and at < cfg.iterations:
            xb, yb = train_batch(data, order, cfg, at)
            log({"event": "grad_norms", "iteration": at, **stage_grad_norms(model, xb, yb, cfg.precision)})

    step_t0 = time.perf_counter()
    it = start
    try:
        model.train()
        if start == 0:  # (a resume finds the event of its start in the log)
            grad_norms(0)
        while it < cfg.iterations:
            lr = lr_at(it, cfg.lr, cfg.lr_milestones, cfg.lr_gamma, cfg.warmup_lr if warmup_active else None)
            for g in opt.param_groups:
                g["lr"] = lr
            x, y = train_batch(data, order, cfg, it)
            loss, out = train_step(step_model, opt, x, y, cfg)
            win_loss += loss.float() * len(y)
            win_wrong += (out.argmax(1) != y).sum()
            win_n += len(y)
            it += 1
            emit({"event": "step", "iteration": it, "lr": lr})
            grad_norms(it)

            if it % cfg.log_every == 0 or it == cfg.iterations:
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                now = time.perf_counter()
                train_s += now - step_t0
                w_loss, w_err = win_loss.item() / win_n, 100.0 * win_wrong.item() / win_n
                log({"event": "train", "iteration": it, "lr": lr, "train_loss": w_loss, "train_error": w_err,
                     "images_per_s": round(it * cfg.batch_size / train_s, 1) if train_s else None,
                     "wall_s": round(wall(), 3)})
                win_loss.zero_()
                win_wrong.zero_()
                win_n = 0
                if not math.isfinite(w_loss):
                    msg = diverged_message(w_loss, it, cfg, lr, "a lower --lr or --warmup on")
                    log({"event": "end", "iteration": it, "status": "diverged", "message": msg})
                    return summary("diverged", it, msg)
                if warmup_active and (w_err < cfg.warmup_until_train_error or it >= cfg.warmup_max_iterations):
                    warmup_active = False
                    reason = "train_error_below_threshold" if w_err < cfg.warmup_until_train_error else "cap_reached"
                    log({"event": "warmup_end", "iteration": it, "train_error": w_err, "reason": reason})
                if it % cfg.eval_every == 0 or it == cfg.iterations:
                    ev = {"event": "eval", "iteration": it, "train_error": w_err, "train_loss": w_loss}
                    if data.val_x is not None:
                        ev["val_error"] = evaluate(step_model, *eval_subset(data.val_x, data.val_y, sub), data.mean,
                                                   cfg, std=data.std)
                    ev["test_error"] = evaluate(step_model, *eval_subset(data.test_x, data.test_y, sub), data.mean,
                                                cfg, std=data.std)
                    ev["wall_s"] = round(wall(), 3)
                    log(ev)
                    last_eval = {k: ev.get(k) for k in ("iteration", "train_error", "val_error", "test_error")}
                    if it < cfg.iterations:
                        save_ckpt(it, [0.0, 0, 0])
                        summary("running", it)
                step_t0 = time.perf_counter()
            # A signal during the last iteration lets the run complete: a checkpoint at the last
            # iteration is no resume point (refuse_past_end), and final.pt is one save away.
            if it < cfg.iterations and (stop.signum is not None or (stop_after is not None and it >= stop_after)):
                train_s += time.perf_counter() - step_t0
                why_stop = "signal" if stop.signum is not None else "stop_after"
                save_ckpt(it, [win_loss.item(), win_wrong.item(), win_n])  # before the end event:
                log({"event": "end", "iteration": it, "status": "interrupted", "reason": why_stop})  # resume drops it
                return summary("interrupted", it, f"stopped at iteration {it}; continue with --resume")
        checkpoint.save(ckpt_dir, "final.pt", {"model": model.state_dict(), "iteration": it, "arch": cfg.arch,
                                                "shortcut": cfg.shortcut, "num_classes": cfg.num_classes,
                                                "input_norm": norm_rec},
                        latest=False)
        log({"event": "end", "iteration": it, "status": "complete", "wall_s": round(wall(), 3)})
        return summary("complete", it)
    except OSError as exc:
        raise write_failed(summary, it, exc) from None
    finally:
        stop.restore()
        if tb is not None:
            tb.close()
