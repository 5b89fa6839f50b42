"""ImageNet training (paper Sec. 3.4), one process or many through torchrun (DDP).

The run directory has the CIFAR loop's format (:mod:`resnet_repro.runs`): ``config.json``,
``metrics.jsonl`` with ``start``/``resume``, ``train``, ``eval``, ``end`` events,
``summary.json`` and ``checkpoints/``, so the tables and figures read both. ImageNet
adds ``val_top5_error`` to ``eval`` events (both errors are center-crop, the protocol of
the Fig. 4 curves), a ``plateau`` record in each ``eval`` event under the plateau rule,
``lr_drop`` events, and ``skipped_images`` (unreadable files) in ``train`` events and
the summary. ImageNet has no public test labels: ``test_error`` is absent.

Exactness: the batch order is a function of ``(seed, epoch)``
(:class:`~resnet_repro.train.distributed.ShardedBatchSampler`) and each image's
augmentation a function of ``(seed, epoch, index)``
(:class:`~resnet_repro.data.imagenet.TrainView`), so a resumed run continues as an
uninterrupted one would, for any number of DataLoader workers; with the same global
batch, W processes see the same images per iteration as one.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from pydantic import ValidationError

from resnet_repro import runs
from resnet_repro.data.imagenet import (
    CenterView,
    DataStats,
    ImageFolderSplit,
    TrainView,
    auto_workers,
    build_index,
    compute_stats,
    describe_stats,
    lighting_offsets,
    make_loader,
    normalize_batch,
    warn_bad,
)
from resnet_repro.errors import UserError
from resnet_repro.fsio import atomic_write_bytes
from resnet_repro.models import build
from resnet_repro.models.registry import resolve_shortcut, spec
from resnet_repro.train import checkpoint, distributed
from resnet_repro.train.config import RunConfig, provenance, resolve_device, resolve_precision
from resnet_repro.train.imagenet_schedule import (
    ImageNetSettings,
    PlateauRule,
    get_imagenet_schedule,
    paper_sizes,
)
from resnet_repro.train.loop import (
    StopFlag,
    check_existing,
    check_same_data,
    diverged_message,
    ensure_writable,
    missing_dirs,
    refuse_past_end,
    remove_empty_dirs,
    restore_training_state,
    summary_fields,
    train_step,
    write_failed,
)
from resnet_repro.train.schedule import lr_at

EventFn = Callable[[dict], None]


def make_imagenet_config(
    arch: str,
    data_dir: str,
    shortcut: str | None = None,
    schedule: str | None = None,
    iterations: int | None = None,
    seed: int = 0,
    precision: str = "auto",
    device: str = "auto",
    channels_last: bool | None = None,
    compile: bool = False,
    threads: int | None = None,
    stride_on: str | None = None,
    batch_size: int | None = None,
    lr: float = 0.1,
    workers: int | None = None,
    sync_bn: bool = False,
    scale_lr: bool = False,
) -> RunConfig:
    """A validated ImageNet :class:`RunConfig` (paper Sec. 3.4 defaults: global batch
    256, lr 0.1 divided by 10 on plateaus, up to 600k iterations, momentum 0.9, weight
    decay 1e-4, no dropout; shortcut A for 18/34 layers, B for 50/101/152). ``scale_lr``:
    ``lr`` times the batch over the schedule's (the linear-scaling rule; not the paper's).

    Raises:
        UserError: a CIFAR net, an unknown schedule, bad numbers.
    """
    s = spec(arch)
    if s.family != "imagenet":
        raise UserError(f"{s.name} is a CIFAR-10 net; ImageNet training takes the Table 1 nets: "
                        "plain/resnet 18, 34, 50, 101, 152 (e.g. resnet34)")
    if workers is not None and workers < 0:
        raise UserError(f"--workers must be >= 0, got {workers}")
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    sch = get_imagenet_schedule(schedule, iterations)
    if scale_lr and batch_size:
        from resnet_repro.train.config import scaled_lr

        lr = scaled_lr(lr, batch_size, "imagenet", sch.name)
    sizes = paper_sizes(sch.crop)
    dev = resolve_device(device)
    prec, _ = resolve_precision(precision, dev)
    try:
        settings = ImageNetSettings(crop=sizes["crop"], scale=sizes["scale"], test_short=sizes["test_short"],
                                    multiscale=sizes["multiscale"], lr_rule=sch.lr_rule,
                                    mean_images=sch.mean_images, sync_bn=sync_bn)
        return RunConfig(
            arch=s.name, shortcut=resolve_shortcut(s, shortcut), stride_on=stride_on, dataset="imagenet",
            data_dir=str(data_dir), schedule=sch.name, iterations=sch.iterations,
            lr_milestones=list(sch.milestones), lr=lr, batch_size=batch_size or sch.batch_size, seed=seed,
            precision=prec, channels_last=True if channels_last is None else bool(channels_last),
            compile=compile, eval_every=sch.eval_every, log_every=sch.log_every, eval_subset=sch.eval_subset,
            threads=threads, device=dev, imagenet=settings, workers=workers,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UserError(f"invalid value for {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def eval_subset_indices(n: int, k: int | None) -> list[int] | None:
    """``k`` evenly spaced indices of ``range(n)`` (every class of a class-sorted val set
    is represented), or None for all images."""
    if k is None or k >= n:
        return None
    return [i * n // k for i in range(k)]


def describe_event(ev: dict) -> str | None:
    """One line for the console for ImageNet events the CIFAR progress view does not
    know (``eval`` without test error, ``lr_drop``); None for the others."""
    kind = ev.get("event")
    if kind == "eval":
        plateau = ev.get("plateau")
        extra = (f"  (best {plateau['best']:.2f}%, {plateau['bad']} evals without improvement)"
                 if plateau else "")
        return (f"  iteration {ev['iteration']:>6}: train err {ev['train_error']:.2f}%  "
                f"val err {ev['val_error']:.2f}% top-1, {ev['val_top5_error']:.2f}% top-5 (center crop){extra}")
    if kind == "lr_drop":
        return f"  iteration {ev['iteration']:>6}: lr divided by 10 -> {ev['lr']:g} ({ev['reason']})"
    return None


def fit_imagenet(
    cfg: RunConfig,
    run_dir: str | Path,
    resume: bool = False,
    on_event: EventFn | None = None,
    stop_after: int | None = None,
) -> dict:
    """Train one ImageNet run (paper Sec. 3.4) into ``run_dir``; under torchrun, one
    DDP process of many (rank 0 writes, every rank returns the summary).

    Paper Sec. 3.4: scale augmentation (shorter side in [256, 480]), random 224 crop or
    its flip, per-pixel mean subtracted, PCA lighting noise, BN, He init, SGD with
    momentum 0.9 and weight decay 1e-4, global batch 256, lr 0.1 divided by 10 on
    plateaus (or at fixed iterations), no dropout.

    Args:
        cfg: an ImageNet config (:func:`make_imagenet_config`).
        run_dir: the run directory (created if missing).
        resume: continue from the newest intact checkpoint.
        on_event: called (on rank 0) with every logged event and ``{"event": "step"}``
            after every iteration.
        stop_after: stop as if interrupted after this many iterations (tests).

    Returns:
        The summary dict (``summary.json``); ``status`` complete, interrupted or
        diverged.

    Raises:
        UserError: bad data layout, a batch not divisible by the process count, a run
            directory with another config, an unwritable directory.
    """
    if cfg.dataset != "imagenet" or cfg.imagenet is None:
        raise UserError("fit_imagenet needs an ImageNet config (dataset imagenet); use train.loop.fit for CIFAR-10")
    run_dir = Path(run_dir)
    distributed.per_rank_batch(cfg.batch_size, distributed.env_world_size())  # before joining the group
    created = missing_dirs(run_dir)
    ctx, device = distributed.setup(cfg.device)
    emit = on_event if (on_event is not None and ctx.is_main) else (lambda ev: None)
    lock = runs.RunLock(run_dir)
    ok = False
    try:
        distributed.per_rank_batch(cfg.batch_size, ctx.world_size)

        def open_run() -> dict | None:
            ensure_writable(run_dir)
            lock.acquire()
            runs.prepare_run_dir(run_dir)  # refuses symlinked run files, removes temp files of killed writes
            return check_existing(run_dir, cfg, resume)

        done = distributed.run_on_main(ctx, open_run)
        if done is not None:
            emit({"event": "already_complete", "iteration": done.get("iterations_done", cfg.iterations)})
            ok = True
            return done
        result = _fit(cfg, run_dir, ctx, device, resume, emit, stop_after)
        ok = True
        return result
    finally:
        lock.release()
        if not ok and ctx.is_main:
            remove_empty_dirs(created)  # a run that failed before writing anything leaves no folder behind
        distributed.teardown(ctx)


def _fit(cfg: RunConfig, run_dir: Path, ctx: distributed.DistContext, device: str, resume: bool, emit: EventFn,
         stop_after: int | None) -> dict:
    from resnet_repro.evaluate import Normalizer, eval_loader, evaluate_loader

    s: ImageNetSettings = cfg.imagenet  # type: ignore[assignment]
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dev = torch.device(device)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    workers = cfg.workers if cfg.workers is not None else auto_workers(local_world)
    ckpt_dir = run_dir / "checkpoints"
    metrics_path = run_dir / "metrics.jsonl"
    kept_log = b""  # on resume, the log up to the checkpoint (rank 0 only)

    def load_data():
        nonlocal kept_log
        index = build_index(cfg.data_dir)
        check_same_data(run_dir, cfg, index.digest, "index digest")
        stats = compute_stats(index, s.crop, s.test_short, s.mean_images, workers=workers, seed=0)
        state = None
        if resume:
            state = checkpoint.load_latest(ckpt_dir, map_location="cpu")
            if state is not None:
                checkpoint.check_compatible(state, cfg.arch, cfg.shortcut, len(index.classes), ckpt_dir)
                refuse_past_end(state, cfg, ckpt_dir)  # before the model is built
                kept_log = checkpoint.log_prefix(metrics_path, state)  # checked against its digest
        return index, stats.to_state(), state

    index, stats_state, state = distributed.run_on_main(ctx, load_data)
    stats = DataStats.from_state(stats_state)
    n_classes = len(index.classes)
    cfg = cfg.model_copy(update={"data_checksum": index.digest})
    auto, auto_why = resolve_precision("auto", cfg.device)
    why = f"auto: {auto_why}" if auto == cfg.precision else "set explicitly"

    torch.manual_seed(cfg.seed)
    model = build(cfg.arch, cfg.shortcut, num_classes=n_classes, stride_on=cfg.stride_on)
    if s.sync_bn:  # also in one process: the same BN arithmetic for any number of processes
        model = distributed.convert_sync_bn(model, device)
    model = model.to(dev)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    start, wall_prev, train_s = 0, 0.0, 0.0
    win = [0.0, 0.0, 0]
    last_eval: dict = {}
    skipped_total = 0
    plateau = PlateauRule(s.plateau_patience, s.plateau_threshold)
    if state is not None:
        restore_training_state(model, opt, state, cfg, ckpt_dir)
        start, wall_prev, train_s = int(state["iteration"]), float(state["wall_s"]), float(state["train_s"])
        if ctx.is_main:  # the saved window is global; the other ranks add their parts from zero
            win = [float(state["window"][0]), float(state["window"][1]), int(state["window"][2])]
        last_eval = dict(state.get("last_eval") or {})
        skipped_total = int(state.get("skipped_images", 0))
        p = state.get("plateau") or {}
        plateau = PlateauRule(s.plateau_patience, s.plateau_threshold, p.get("best"), int(p.get("bad", 0)),
                              int(p.get("drops", 0)))
    kind = "resume" if state is not None else "start"
    if ctx.is_main:
        if state is not None:
            atomic_write_bytes(metrics_path, kept_log)
        else:
            if metrics_path.exists():
                atomic_write_bytes(metrics_path, b"")
            runs.write_config(run_dir, cfg.model_dump(), {
                **provenance(cfg, "image-folder"), "world_size": ctx.world_size,
                "data_stats": describe_stats(stats), "classes": n_classes})
    del state

    step_model = distributed.wrap_ddp(model, ctx, device)
    if cfg.compile:
        step_model = torch.compile(step_model)
    mean, eigval, eigvec = stats.mean.to(dev), stats.eigval.to(dev), stats.eigvec.to(dev)
    norm = Normalizer(stats.mean, None, "per-pixel mean image").to(dev)
    pin = dev.type == "cuda"

    train_ds = ImageFolderSplit(index, "train", TrainView(s.crop, s.scale, s.lighting_std, cfg.seed))
    sampler = distributed.ShardedBatchSampler(len(index.train), cfg.batch_size, ctx, cfg.seed, start, cfg.iterations)
    val_ds = ImageFolderSplit(index, "val", CenterView(s.crop, s.test_short),
                              eval_subset_indices(len(index.val), cfg.eval_subset))
    val_loader = eval_loader(val_ds, ctx, batch_size=max(1, cfg.batch_size // ctx.world_size) * 2,
                             workers=workers, pin_memory=pin, persistent=True)

    t0 = time.perf_counter()

    def wall() -> float:
        return wall_prev + time.perf_counter() - t0

    def log(ev: dict) -> None:
        if ctx.is_main:
            runs.log_event(run_dir, ev)
            emit(ev)

    log({"event": kind, "iteration": start, "wall_s": round(wall(), 3), "precision": cfg.precision,
         "precision_reason": why, "threads": torch.get_num_threads(), "device": device,
         "world_size": ctx.world_size, "backend": ctx.backend, "workers": workers,
         "train_images": len(index.train), "val_images": len(val_ds), "test_images": 0, "classes": n_classes,
         "iterations_per_epoch": sampler.iters_per_epoch, "lr_rule": s.lr_rule, "warmup_active": False})

    def current_lr(it: int) -> float:
        if s.lr_rule == "plateau":
            return float(f"{cfg.lr * cfg.lr_gamma ** plateau.drops:.12g}")
        return lr_at(it, cfg.lr, cfg.lr_milestones, cfg.lr_gamma)

    def summary(status: str, it: int, message: str | None = None) -> dict:
        out = {
            **summary_fields(status, it, cfg, last_eval, wall(), train_s, device, "image-folder"),
            "final_val_top5_error": last_eval.get("val_top5_error"),
            "world_size": ctx.world_size, "skipped_images": skipped_total,
            "lr_drops": plateau.drops if s.lr_rule == "plateau" else None,
        }
        if message:
            out["message"] = message
        if ctx.is_main:
            runs.write_summary(run_dir, out)
        return out

    def save_ckpt(it: int, window: list) -> None:
        if not ctx.is_main:
            return
        checkpoint.save(ckpt_dir, f"iter-{it:07d}.pt", {
            "model": model.state_dict(), "optimizer": opt.state_dict(), "iteration": it, "warmup_active": False,
            "window": list(window), "wall_s": wall(), "train_s": train_s,
            **checkpoint.log_position(metrics_path), "last_eval": last_eval, "arch": cfg.arch,
            "shortcut": cfg.shortcut, "num_classes": n_classes, "plateau": plateau.state(),
            "skipped_images": skipped_total,
        })

    stop = StopFlag()
    stop.install()
    acc = torch.tensor([win[0], win[1], float(win[2]), 0.0], dtype=torch.float64, device=dev)
    step_t0 = time.perf_counter()
    it = start
    loader = make_loader(train_ds, workers, pin, batch_sampler=sampler, persistent=False)
    try:
        step_model.train()
        for batch in loader:
            lr = current_lr(it)
            for g in opt.param_groups:
                g["lr"] = lr
            if batch["bad"]:
                warn_bad(batch["bad"])
                acc[3] += len(batch["bad"])
            if batch["x"] is None:
                raise UserError(f"every image of this process's share of iteration {it + 1} is unreadable; "
                                f"check the files under {cfg.data_dir}")
            x = batch["x"].to(dev, non_blocking=True)
            y = batch["y"].to(dev, non_blocking=True)
            alpha = batch["alpha"].to(dev, non_blocking=True)
            xf = normalize_batch(x, mean, offsets=lighting_offsets(alpha, eigval, eigvec))
            if cfg.channels_last:
                xf = xf.contiguous(memory_format=torch.channels_last)
            loss, out = train_step(step_model, opt, xf, y, cfg)  # the CIFAR loop's step: SGD under autocast
            acc[0] += loss.double() * len(y)
            acc[1] += (out.argmax(1) != y).sum()
            acc[2] += len(y)
            it += 1
            emit({"event": "step", "iteration": it, "lr": lr})

            if it % cfg.log_every == 0 or it == cfg.iterations:
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                train_s += time.perf_counter() - step_t0
                g_acc = distributed.all_reduce_sum(acc.clone(), ctx)
                skipped_total += int(g_acc[3].item())
                n = max(1.0, g_acc[2].item())
                w_loss, w_err = g_acc[0].item() / n, 100.0 * g_acc[1].item() / n
                acc.zero_()
                log({"event": "train", "iteration": it, "lr": lr, "train_loss": w_loss, "train_error": w_err,
                     "images_per_s": round(it * cfg.batch_size / train_s, 1) if train_s else None,
                     "skipped_images": skipped_total, "wall_s": round(wall(), 3)})
                if not math.isfinite(w_loss):
                    msg = diverged_message(w_loss, it, cfg, lr, "a lower --lr")
                    log({"event": "end", "iteration": it, "status": "diverged", "message": msg})
                    return summary("diverged", it, msg)
                if it % cfg.eval_every == 0 or it == cfg.iterations:
                    res = evaluate_loader(step_model, val_loader, "center", norm, ctx, dev, cfg.precision,
                                          cfg.channels_last)
                    step_model.train()
                    ev = {"event": "eval", "iteration": it, "train_error": w_err, "train_loss": w_loss,
                          "val_error": res.top1_error, "val_top5_error": res.top5_error,
                          "val_images": res.images, "protocol": "center"}
                    dropped = False
                    if s.lr_rule == "plateau":
                        dropped = plateau.update(res.top1_error)
                        ev["plateau"] = {**plateau.state(), "patience": s.plateau_patience,
                                         "threshold": s.plateau_threshold}
                    ev["wall_s"] = round(wall(), 3)
                    log(ev)
                    last_eval = {k: ev.get(k) for k in ("iteration", "train_error", "val_error", "val_top5_error")}
                    if dropped:
                        log({"event": "lr_drop", "iteration": it, "lr": current_lr(it),
                             "reason": f"val error did not improve on {plateau.best:.2f}% by more than "
                                       f"{s.plateau_threshold} points for {s.plateau_patience} evaluations"})
                    if it < cfg.iterations:
                        save_ckpt(it, [0.0, 0, 0])
                        summary("running", it)
                step_t0 = time.perf_counter()
            # A signal during the last iteration lets the run complete (no resume point at the end).
            want_stop = it < cfg.iterations and (stop.signum is not None or (stop_after is not None and stop_after <= it))
            if distributed.any_rank(want_stop, ctx, dev):
                train_s += time.perf_counter() - step_t0
                g_acc = distributed.all_reduce_sum(acc.clone(), ctx)
                why_stop = "signal" if stop.signum is not None else "stop_after"
                skipped_total += int(g_acc[3].item())
                save_ckpt(it, [g_acc[0].item(), g_acc[1].item(), int(g_acc[2].item())])
                log({"event": "end", "iteration": it, "status": "interrupted", "reason": why_stop})
                return summary("interrupted", it, f"stopped at iteration {it}; continue with --resume")
        if ctx.is_main:
            checkpoint.save(ckpt_dir, "final.pt", {
                "model": model.state_dict(), "iteration": it, "arch": cfg.arch, "shortcut": cfg.shortcut,
                "stride_on": cfg.stride_on, "num_classes": n_classes, "classes": list(index.classes),
                "stats": stats.to_state(), "imagenet": s.model_dump()}, latest=False)
        log({"event": "end", "iteration": it, "status": "complete", "wall_s": round(wall(), 3)})
        return summary("complete", it)
    except OSError as exc:
        raise write_failed(summary, it, exc) from None
    finally:
        stop.restore()
