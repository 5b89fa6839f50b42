"""A rich progress view for one training run (iteration, lr, loss, training error,
images/s, ETA), fed by the events of :func:`resnet_repro.train.loop.fit`.

The live bar is drawn only on a terminal (:func:`interactive`); in a pipe or a log file
the start, evaluation and summary lines are the whole output, with no cut-off bar."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

WIDE = 150  # from this terminal width on, progress bars also show the run's name and elapsed time


def interactive(console: Console) -> bool:
    """Whether ``console`` can redraw a live progress view (a terminal that is not
    ``TERM=dumb``). Elsewhere (a pipe, a file, CI logs) rich would print the view once
    when it stops, cut to the width: there the views print lines instead."""
    return console.is_terminal and not console.is_dumb_terminal


def plural(n, word: str) -> str:
    """``"1 thread"``, ``"2 threads"`` (``n`` shown as given)."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def images_line(ev: dict, cfg) -> str:
    """The image counts of a start/resume event as they are used: training images, and
    the val/test images each evaluation actually scores (the smoke schedule evaluates
    only ``cfg.eval_subset`` evenly spaced images of each), e.g. ``45000 train images; evaluation on
    1000 of 5000 val, 1000 of 10000 test images``."""
    sub = getattr(cfg, "eval_subset", None)
    parts = []
    for split in ("val", "test"):
        n = ev.get(f"{split}_images")
        if not n:
            continue
        used = min(n, sub) if sub else n
        parts.append(f"{used} of {n} {split}" if used != n else f"{n} {split}")
    tail = f"; evaluation on {', '.join(parts)} images" if parts else ""
    return f"{ev.get('train_images')} train images{tail}"


def lr_text(cfg) -> str:
    """The learning rate a run starts with and how it changes, for the start line, e.g.
    ``lr 0.1 (warm-up 0.01 until train err < 80%, at most 500 iterations), /10 at 2000,
    3000; batch 128``."""
    parts = [f"lr {cfg.lr:g}"]
    if getattr(cfg, "warmup", False) and cfg.warmup_until_train_error <= 0:  # a preset's fixed warm-up
        parts[0] += f" (warm-up {cfg.warmup_lr:g} for the first {cfg.warmup_max_iterations} iterations)"
    elif getattr(cfg, "warmup", False):
        parts[0] += (f" (warm-up {cfg.warmup_lr:g} until train err < {cfg.warmup_until_train_error:g}%, at most "
                     f"{cfg.warmup_max_iterations} iterations)")
    elif cfg.dataset in ("cifar10", "cifar100"):
        parts[0] += " (no warm-up)"
    imagenet = getattr(cfg, "imagenet", None)
    if imagenet is not None and imagenet.lr_rule == "plateau":
        parts.append(f"/10 when val error plateaus ({imagenet.plateau_patience} evaluations)")
    elif cfg.lr_milestones:
        parts.append(f"/{1 / cfg.lr_gamma:g} at {', '.join(map(str, cfg.lr_milestones))}")
    return ", ".join(parts) + f"; batch {cfg.batch_size}"


class TrainProgress:
    """Context manager; pass :meth:`on_event` as ``fit(on_event=...)``."""

    def __init__(self, console: Console, cfg, run_dir: Path, warn=None) -> None:
        """``warn(line)`` receives, with the start (or resume) line, one line per way the
        run leaves the paper's recipe (:func:`resnet_repro.train.config.recipe_warnings`)."""
        self.console, self.cfg, self.run_dir, self.warn = console, cfg, run_dir, warn
        wide = console.width >= WIDE
        stats = ("lr {task.fields[lr]}  loss {task.fields[loss]}  train err {task.fields[err]}  {task.fields[ips]} img/s"
                 if wide else "lr {task.fields[lr]} loss {task.fields[loss]} err {task.fields[err]} "
                 "{task.fields[ips]} img/s")
        self.progress = Progress(
            *([TextColumn("[bold]{task.description}")] if wide else []),  # the start line names the run
            BarColumn(bar_width=40 if wide else None), MofNCompleteColumn(), TextColumn(stats),
            *([TimeElapsedColumn()] if wide else []), TextColumn("ETA"), TimeRemainingColumn(),
            console=console, transient=False, disable=not interactive(console), expand=not wide,
        )
        self.task = None

    def __enter__(self) -> TrainProgress:
        # The bar is drawn from the run's first event on (start or resume): an error
        # in the checks before it (data, run directory, extras) is then the only line
        # printed.
        return self

    def _ensure_started(self) -> None:
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task(self.cfg.run_name, total=self.cfg.iterations, lr="-", loss="-",
                                               err="-", ips="-")

    def __exit__(self, *exc: object) -> None:
        if self.task is not None:
            self.progress.stop()

    def on_event(self, ev: dict) -> None:
        kind = ev.get("event")
        if kind == "already_complete":
            self.console.print(f"{self.run_dir} is already complete; nothing to do", highlight=False)
            return
        self._ensure_started()
        if kind == "step":
            self.progress.update(self.task, completed=ev["iteration"], lr=f"{ev['lr']:g}")
        elif kind == "train":
            self.progress.update(self.task, completed=ev["iteration"], loss=f"{ev['train_loss']:.3f}",
                                 err=f"{ev['train_error']:.1f}%", ips=f"{ev['images_per_s'] or 0:.0f}")
        elif kind in ("start", "resume"):
            self.progress.update(self.task, completed=ev["iteration"])
            self.console.print(
                f"{kind} {self.run_dir} at iteration {ev['iteration']}: {self.cfg.arch} shortcut "
                f"{self.cfg.shortcut or '-'} ({'plain' if not self.cfg.shortcut else 'residual'}), {self.cfg.schedule} "
                f"schedule ({self.cfg.iterations} iterations), {lr_text(self.cfg)}, "
                f"{ev['precision']} ({ev['precision_reason']}), "
                f"{plural(ev['threads'], 'thread')} on {ev['device']}, {images_line(ev, self.cfg)}", highlight=False)
            if self.warn is not None:
                from resnet_repro.train.config import recipe_warnings

                for line in recipe_warnings(self.cfg):
                    self.warn(line)
        elif kind == "eval":
            val = f"val err {ev['val_error']:.2f}%  " if ev.get("val_error") is not None else ""
            self.console.print(f"  iteration {ev['iteration']:>6}: train err {ev['train_error']:.2f}%  {val}"
                               f"test err {ev['test_error']:.2f}%", highlight=False)
        elif kind == "warmup_end":
            self.console.print(f"  warm-up ended at iteration {ev['iteration']} ({ev['reason']}, "
                               f"train err {ev['train_error']:.1f}%)", highlight=False)

    def print_summary(self, s: dict) -> None:
        val = f", val {s['final_val_error']:.2f}%" if s.get("final_val_error") is not None else ""
        test = f"test {s['final_test_error']:.2f}%" if s.get("final_test_error") is not None else "test -"
        train = f"train {s['final_train_error']:.2f}%" if s.get("final_train_error") is not None else "train -"
        self.console.print(
            f"[bold]{s['status']}[/]: {self.run_dir} after {s['iterations_done']} iterations: {train}{val}, {test}; "
            f"{s['wall_s']:.0f} s wall, {s.get('images_per_s') or 0:.0f} images/s"
            + (f" — {s['message']}" if s.get("message") else ""), highlight=False)
