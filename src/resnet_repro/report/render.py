"""Terminal rendering with rich: rebuilt tables, an experiment's run plan, and one
progress view over all the runs of ``resnet-repro run``.

Every table goes through :func:`fit_table`: at any terminal width (80 columns in a plain
terminal, CI logs or ``| less``) no word is broken across lines; only free text wraps, at
spaces, and what does not fit is left out with a line saying so. Progress views are live
only on a terminal (:func:`resnet_repro.report.progress.interactive`); in a pipe they
print whole lines.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
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

from resnet_repro.report.progress import WIDE, interactive, plural

if TYPE_CHECKING:  # tables (pandas) is imported by print_table only: `arch` stays light
    from resnet_repro.report.tables import Table

NOTE_AFTER = 24  # cells longer than this with a "head: detail" text move the detail below
EMPTY_CELLS = frozenset({"", "—", "-", "0"})  # a column of only these holds nothing (no runs: n = 0)
# A cell that is a number, or mean ± std with (n=k): it may wrap only before "(".
_VALUE = re.compile(r"^[0-9.,+\-−—–±x%/ ]*(\([^()]*\))?$")


def _plain(console: Console, cell: object) -> str | None:
    """The text a table cell shows (None for a renderable that is not text)."""
    if isinstance(cell, Text):
        return cell.plain
    if isinstance(cell, str):
        return console.render_str(cell).plain
    return None


def _longest(words: list[str]) -> int:
    return max((len(w) for w in words), default=0)


def _min_width(text: str, rigid: bool) -> int:
    """The narrowest width that shows ``text`` without breaking a word: its longest
    line for a rigid cell, its longest value part (split before ``(``) for a number,
    else its longest word."""
    lines = text.splitlines() or [""]
    if rigid:
        return _longest(lines)
    if all(_VALUE.match(ln) for ln in lines):
        return _longest([part for ln in lines for part in re.split(r" (?=\()", ln)])
    return _longest([w for ln in lines for w in ln.split()])


def _overhead(rt: RichTable) -> int:
    """Columns of ``rt`` taken by borders and padding (rich's own accounting)."""
    n = len(rt.columns)
    _, right, _, left = rt.padding
    pad = n * (left + right) - (0 if rt.pad_edge else left + right)
    return pad + ((2 if rt.show_edge else 0) + n - 1 if rt.box else 0)


def fit_table(console: Console, rt: RichTable, *, drop_empty: bool = False,
              essential: Callable[[str], bool] | None = None, width: int | None = None) -> list[str]:
    """Make ``rt`` fit ``width`` (default the console's) without breaking a word, and
    return lines that say what was left out (print them below the table).

    Every column gets at least the width of its longest word (the first column, and
    columns marked ``no_wrap``, their longest line: names and values never wrap; a
    ``mean ± std (n=k)`` cell may wrap before ``(n=k)``). What does not fit is handled in
    this order: columns holding nothing (only ``—``, ``0`` or blank; with
    ``drop_empty``, at any width) are left out; the box is replaced by a header rule and
    two spaces between columns; a column whose cells all show one value becomes a line
    below the table; then columns are left out from the right, those for which
    ``essential(header)`` is true last, the first column never, nor a column that tells
    apart rows of the same name. Space left over goes first to the columns that need
    least to stop wrapping, so only the longest (free) texts wrap.
    """
    width = width or console.width
    cols = rt.columns
    if not cols:
        return []
    texts: list[list[str]] = []
    for col in cols:
        cells = [_plain(console, c) for c in col.cells]
        if any(c is None for c in cells):
            return []  # a nested renderable: leave the table to rich
        texts.append(cells)
    headers = [_plain(console, c.header) or "" for c in cols]
    nrows = len(texts[0])
    out: list[str] = []

    def remove(i: int) -> None:
        cols.pop(i)
        texts.pop(i)
        headers.pop(i)
        for k, col in enumerate(cols):  # rich pads the first and last column by this index
            col._index = k

    # Columns that tell apart rows whose first cell is the same (e.g. one row per schedule).
    first = texts[0]
    dup = {v for v in first if first.count(v) > 1}

    def distinguishes(i: int) -> bool:
        return any(len({texts[i][r] for r in range(nrows) if first[r] == v}) > 1 for v in dup)

    if drop_empty and nrows:
        empty = [i for i in range(1, len(cols)) if all(t.strip() in EMPTY_CELLS for t in texts[i])]
        if empty:
            out.append("Columns without values, not shown: " + ", ".join(headers[i] for i in empty) + ".")
            for i in reversed(empty):
                remove(i)

    def bounds(i: int) -> tuple[int, int]:
        rigid = i == 0 or bool(cols[i].no_wrap)
        lo = max([_min_width(headers[i], False)] + [_min_width(t, rigid) for t in texts[i]])
        hi = max([_longest(headers[i].splitlines())] + [_longest(t.splitlines()) for t in texts[i]])
        lo = max(lo, min(cols[i].min_width or 0, hi))
        return lo, max(lo, hi)

    def need() -> int:
        return sum(bounds(i)[0] for i in range(len(cols))) + _overhead(rt)

    if need() > width:  # a header rule and two spaces between columns instead of the box
        rt.box, rt.show_edge, rt.pad_edge, rt.padding = box.SIMPLE_HEAD, False, False, (0, 1, 0, 0)
    if need() > width and nrows > 1:
        const = [i for i in range(1, len(cols)) if not distinguishes(i)
                 and len({t for t in texts[i] if t.strip()}) == 1]
        for i in reversed(const):
            if need() <= width:
                break
            value = next(t for t in texts[i] if t.strip())
            blank = any(not t.strip() for t in texts[i])
            out.insert(0, f"{headers[i]}: {value}" + (" (in every row that has one)." if blank else
                                                         " (in every row)."))
            remove(i)
    left_out = []
    for keep in (False, True):
        for i in range(len(cols) - 1, 0, -1):
            if need() <= width or len(cols) <= 2:
                break
            if (essential is not None and essential(headers[i])) != keep or distinguishes(i):
                continue
            left_out.insert(0, headers[i])
            remove(i)
    if left_out:
        out.append(f"Not shown at {width} columns: {', '.join(left_out)} (a wider terminal or "
                   "--format markdown shows them).")
    _allocate(cols, texts, headers, [bounds(i) for i in range(len(cols))], width - need())
    return out


def _lines(text: str, w: int) -> int:
    """Lines that ``text`` takes when wrapped at spaces to ``w`` columns."""
    return sum(len(textwrap.wrap(ln, w, break_long_words=False, break_on_hyphens=False)) or 1
               for ln in (text.splitlines() or [""]))


def _allocate(cols: list, texts: list[list[str]], headers: list[str], bounds: list[tuple[int, int]],
              spare: int) -> None:
    """Set each column's width: its minimum, plus the ``spare`` columns given out one
    step at a time to the column whose widening saves most table lines per column
    spent (so short texts stop wrapping before long free texts do)."""
    w = [lo for lo, _ in bounds]
    n = len(cols)
    if sum(hi - lo for lo, hi in bounds) <= spare:  # room for every column's natural width
        w = [hi for _, hi in bounds]
        spare = 0
    rows = max((len(t) for t in texts), default=0)

    def height(widths: list[int]) -> int:
        """Table lines (first) and then all cells' lines: a column is widened where it
        shortens the table, or else where it unwraps its own cells."""
        cells = [[_lines(headers[i], widths[i])] + [_lines(texts[i][r], widths[i]) for r in range(rows)]
                 for i in range(n)]
        lines = sum(max(c[r] for c in cells) for r in range(rows + 1))
        return lines * 10_000 + sum(map(sum, cells))

    while spare > 0:
        now, best = height(w), None
        for i in range(n):
            for extra in range(1, min(spare, bounds[i][1] - w[i]) + 1):
                trial = w[:i] + [w[i] + extra] + w[i + 1:]
                saved = now - height(trial)
                if saved > 0:
                    if best is None or saved / extra > best[0]:
                        best = (saved / extra, i, extra)
                    break
        if best is None:
            break
        _, i, extra = best
        w[i] += extra
        spare -= extra
    for col, width in zip(cols, w, strict=True):
        col.width = width


def print_table(console: Console, t: Table) -> None:
    """Print ``t`` as a rich table that fits the terminal without breaking a word (see
    :func:`fit_table`): its title, the table, the caption, notes, and what was left out.

    A long cell of the form ``head: detail`` (e.g. ``not run yet: resnet-repro run ...``)
    shows ``head [k]`` and its detail is printed once below the table as note ``[k]``, so
    that a command stays on one line in a narrow terminal. Columns without values (no
    runs yet: our best, n, schedule) are not shown. The Markdown/CSV/LaTeX outputs keep
    every column and the full cells.
    """
    from resnet_repro.report.tables import _cell

    shown = t.shown()
    head = f"{t.label}. {t.title}" if t.number else t.title
    rt = RichTable(show_lines=False, header_style="bold")
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
    left_out = fit_table(console, rt, drop_empty=True, essential=_essential)
    print_text(console, head, style="bold")
    console.print(rt)
    print_text(console, t.caption)
    for rest, k in notes.items():
        if rest.startswith("resnet-repro "):  # a command: one line, to copy whole
            console.print(Text(f"[{k}] {rest}"), soft_wrap=True)
        else:
            print_text(console, f"[{k}] {rest}")
    for line in left_out:
        print_text(console, line)
    for block in t.blocks:
        print_table(console, block)


def print_text(console: Console, text: str, style: str = "") -> None:
    """Print free text wrapped at spaces to the console width (never inside a word or at
    a hyphen; no trailing spaces)."""
    lines = textwrap.wrap(text, max(console.width, 20), break_long_words=False, break_on_hyphens=False)
    console.print(Text("\n".join(lines), style=style), soft_wrap=True)


def _essential(header: str) -> bool:
    """The paper's numbers and ours are the last columns a narrow terminal drops."""
    h = header.lower()
    return (h.startswith("paper ") or h.startswith("our ")) and "best" not in h


def print_fitted(console: Console, rt: RichTable, **kwargs) -> None:
    """Print any rich table through :func:`fit_table` (no word broken; what was left out
    said below)."""
    left_out = fit_table(console, rt, **kwargs)
    console.print(rt)
    for line in left_out:
        print_text(console, line)


STATUS_STYLE = {"complete": "green", "missing": "yellow", "interrupted": "cyan", "running": "cyan",
                "diverged": "red", "conflict": "bold red"}


def print_plan(console: Console, title: str, plans: list) -> None:
    """Print the runs of an experiment (:class:`resnet_repro.experiments.PlannedRun`) with
    their state: what ``run`` would do to each. The threads column is the count a run
    will use, or for a complete run the count it trained with."""
    from resnet_repro.runs import recorded_threads

    parents = {str(p.run_dir.parent) for p in plans}
    same = len(parents) == 1 and all(p.run_dir.name == p.label for p in plans)
    if same:  # the directory is the parent + the run's name: say the parent once
        title += f"; runs in {next(iter(parents))}/"
    print_text(console, title, style="bold")
    rt = RichTable(header_style="bold")
    for c in ("run",) + (() if same else ("directory",)) + ("state", "threads", "note"):
        rt.add_column(c, overflow="fold")
    for p in plans:
        cells = [Text(p.label)] + ([] if same else [Text(str(p.run_dir))])
        rt.add_row(*cells, Text(p.status, style=STATUS_STYLE.get(p.status, "")),
                   Text(str((recorded_threads(p.run_dir) if p.status == "complete" else None)
                            or p.config.threads or "")), Text(p.note))
    print_fitted(console, rt)


class ExperimentProgress:
    """One rich progress view over all the runs of an experiment: a bar per run (iteration,
    latest training error and test error, images/s) and one for the whole experiment.

    Use as a context manager and pass :meth:`on_event` as the ``on_event`` of
    :func:`resnet_repro.experiments.execute_local` / ``execute_submitit``.
    """

    def __init__(self, console: Console, plans: list) -> None:
        self.console = console
        self.plans = {p.label: p for p in plans if p.todo}
        self.live = interactive(console)  # else one line per start, evaluation and end
        wide = console.width >= WIDE  # narrower: % done, no elapsed time, a bar that takes what is left
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(bar_width=40 if wide else None),
            MofNCompleteColumn() if wide else TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[info]}"), *([TimeElapsedColumn()] if wide else []), TimeRemainingColumn(),
            console=console, transient=False, disable=not self.live, expand=not wide,
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

    def _line(self, text: str) -> None:
        """Outside a terminal, where no live view is drawn: print ``text`` as a line."""
        if not self.live:
            self.console.print(text, highlight=False, markup=False, soft_wrap=True)

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
            info = None
            if kind == "resume":
                info = f"resumed at {ev['iteration']}"
            elif kind == "start":
                info = f"{plural(ev.get('threads'), 'thread')}, {ev.get('precision')}"
            if info is not None:
                self.progress.update(task, info=info)
                self._line(f"{label}: {'started, ' if kind == 'start' else ''}{info}")
        elif kind == "train":
            self._advance(label, int(ev["iteration"]))
            err = ev.get("train_error")
            err_s = f"train {err:.1f}%, " if isinstance(err, (int, float)) else ""
            self.progress.update(task, info=f"{err_s}{ev.get('images_per_s') or 0:.0f} img/s")
        elif kind == "eval":
            found = [(name, ev[key]) for key, name in
                     (("train_error", "train"), ("val_error", "val"), ("test_error", "test"))
                     if isinstance(ev.get(key), (int, float))]
            parts = [f"{name} err {v:.2f}%" for name, v in found]
            self.progress.update(task, info=", ".join(f"{name} {v:.1f}%" for name, v in found))
            self._line(f"{label}: iteration {ev.get('iteration')}: " + ", ".join(parts))
        elif kind == "finished":
            status = ev.get("status")
            msg = f" — {ev['message']}" if ev.get("message") else ""
            self.progress.update(task, info=f"{status}")
            self.console.print(f"{label}: {status}{msg}", highlight=False, markup=False, soft_wrap=True)
