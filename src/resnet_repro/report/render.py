"""Terminal rendering with rich: rebuilt tables, an experiment's run plan, and one
progress view over all the runs of ``resnet-repro run``."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table as RichTable
from rich.text import Text

from resnet_repro.report.tables import Table, _cell

NOTE_AFTER = 24  # cells longer than this with a "head: detail" text move the detail below


def print_table(console: Console, t: Table) -> None:
    """Print ``t`` as a rich table with its title and caption. A long cell of the form
    ``head: detail`` (e.g. ``not run yet: resnet-repro run ...``) shows ``head [k]`` and
    its detail is printed once below the table as note ``[k]``, so that a command stays
    on one line in a narrow terminal (the Markdown/CSV/LaTeX outputs keep the full cell).
    """
    shown = t.shown()
    head = f"{t.label}. {t.title}" if t.number else t.title
    rt = RichTable(title=escape(head), caption=escape(t.caption), caption_justify="left", show_lines=False,
                   header_style="bold")
    for c in shown.columns:
        rt.add_column(Text(str(c)), overflow="fold")
    notes: dict[str, int] = {}

    def cell(v) -> Text:
        text = _cell(v)
        first, sep, rest = text.partition(": ")
        if len(text) <= NOTE_AFTER or not sep or "\n" in first:
            return Text(text)
        k = notes.setdefault(rest, len(notes) + 1)
        return Text(f"{first} [{k}]")

    for row in shown.itertuples(index=False):
        rt.add_row(*(cell(v) for v in row))
    console.print(rt)
    for rest, k in notes.items():
        console.print(Text(f"[{k}] {rest}"), soft_wrap=True)
    for block in t.blocks:
        print_table(console, block)


STATUS_STYLE = {"complete": "green", "missing": "yellow", "interrupted": "cyan", "running": "cyan",
                "diverged": "red", "conflict": "bold red"}


def print_plan(console: Console, title: str, plans: list) -> None:
    """Print the runs of an experiment (:class:`resnet_repro.experiments.PlannedRun`) with
    their state: what ``run`` would do to each. The threads column is the count a run
    will use, or for a complete run the count it trained with."""
    from resnet_repro.runs import recorded_threads

    rt = RichTable(title=escape(title), header_style="bold")
    for c in ("run", "directory", "state", "threads", "note"):
        rt.add_column(c, overflow="fold")
    for p in plans:
        rt.add_row(Text(p.label), Text(str(p.run_dir)), Text(p.status, style=STATUS_STYLE.get(p.status, "")),
                   Text(str((recorded_threads(p.run_dir) if p.status == "complete" else None)
                            or p.config.threads or "")), Text(p.note))
    console.print(rt)


class ExperimentProgress:
    """One rich progress view over all the runs of an experiment: a bar per run (iteration,
    latest training error and test error, images/s) and one for the whole experiment.

    Use as a context manager and pass :meth:`on_event` as the ``on_event`` of
    :func:`resnet_repro.experiments.execute_local` / ``execute_submitit``.
    """

    def __init__(self, console: Console, plans: list) -> None:
        self.console = console
        self.plans = {p.label: p for p in plans if p.todo}
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, transient=False,
        )
        self.tasks: dict[str, int] = {}
        self.total = None
        self.done_its: dict[str, int] = {}
        self.started: set[str] = set()

    def __enter__(self) -> ExperimentProgress:
        self.progress.start()
        total = sum(p.config.iterations for p in self.plans.values())
        self.total = self.progress.add_task(f"[bold]all {len(self.plans)} runs", total=total or 1, info="")
        for label, p in self.plans.items():
            self.tasks[label] = self.progress.add_task(label, total=p.config.iterations, info="waiting", start=False)
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _advance(self, label: str, it: int) -> None:
        self.done_its[label] = it
        self.progress.update(self.tasks[label], completed=it)
        self.progress.update(self.total, completed=sum(self.done_its.values()))

    def on_event(self, label: str, ev: dict) -> None:
        """Update the view with one event of run ``label``."""
        if label not in self.tasks:
            return
        kind = ev.get("event")
        task = self.tasks[label]
        if label not in self.started:  # the clock of a run starts with its first event
            self.started.add(label)
            self.progress.start_task(task)
        if kind in ("step", "start", "resume", "already_complete"):
            self._advance(label, int(ev.get("iteration", 0)))
            if kind == "resume":
                self.progress.update(task, info=f"resumed at {ev['iteration']}")
            elif kind == "start":
                self.progress.update(task, info=f"{ev.get('threads')} threads, {ev.get('precision')}")
        elif kind == "train":
            self._advance(label, int(ev["iteration"]))
            err = ev.get("train_error")
            err_s = f"train err {err:.1f}%  " if isinstance(err, (int, float)) else ""
            self.progress.update(task, info=f"{err_s}{ev.get('images_per_s') or 0:.0f} img/s")
        elif kind == "eval":
            parts = [f"{name} err {ev[key]:.2f}%" for key, name in
                     (("train_error", "train"), ("val_error", "val"), ("test_error", "test"))
                     if isinstance(ev.get(key), (int, float))]
            self.progress.update(task, info="  ".join(parts))
        elif kind == "finished":
            status = ev.get("status")
            msg = f" — {ev['message']}" if ev.get("message") else ""
            self.progress.update(task, info=f"{status}")
            self.console.print(f"{label}: {status}{msg}", highlight=False, markup=False, soft_wrap=True)
