"""``resnet-repro report``: one Markdown report with every table and figure rebuilt from
stored runs, the runs behind each, and the commands that rerun them.

The report holds no timestamps: rebuilt from the same runs it has the same bytes.
``results/REPORT.md`` is ignored by git (a local rollup of the committed tables and
figures; ``git add -f`` it to commit one, which then changes only when the runs do). A
figure without runs behind it gets a line naming the command that fills it, not a
placeholder image.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pandas as pd

from resnet_repro import paper
from resnet_repro.errors import UserError
from resnet_repro.fsio import atomic_write_text
from resnet_repro.report import figures as figs
from resnet_repro.report.tables import TABLE_KEYS, get_table, to_text
from resnet_repro.runs import check_roots, load_runs

DEFAULT_OUT = Path("results/REPORT.md")
FIGURE_COMMANDS = {1: "resnet-repro run cifar10-depth --profile quick",
                   4: "resnet-repro run imagenet-plain-vs-residual --profile quick",
                   6: "resnet-repro run cifar10-depth --profile quick"}


def _rel(path: str | Path, start: Path) -> str:
    try:
        return os.path.relpath(Path(path), start)
    except ValueError:  # another drive (Windows)
        return str(path)


def _runs_line(runs: list[str], start: Path) -> str:
    if not runs:
        return "Runs behind it: none (paper values only)."
    shown = ", ".join(f"`{_rel(r, start)}`" for r in runs[:12])
    more = f" and {len(runs) - 12} more" if len(runs) > 12 else ""
    return f"Runs behind it ({len(runs)}): {shown}{more}."


def _experiments_section() -> list[str]:
    from resnet_repro.experiments import PROFILES, load_all_specs

    lines = ["## How to rerun", "",
             "Each experiment is a spec in `experiments/`; `resnet-repro run NAME --profile P` trains its runs "
             "into `results/<dataset>/<run>/` (complete runs are skipped, interrupted ones resumed; "
             "`--jobs N` runs N at once). Then `resnet-repro report` rebuilds this file.", "",
             "| experiment | paper | feeds | runs (paper / quick / smoke) | command |", "|---|---|---|---|---|"]
    try:
        specs = load_all_specs()
    except UserError as exc:
        return lines + [f"| (specs unreadable: {exc}) | | | | |", ""]
    for s in specs:
        feeds = ", ".join([f"Table {t}" if t.isdigit() else t for t in s.tables] + [f"Fig. {f}" for f in s.figures])
        counts = " / ".join(str(len(s.expand(p))) for p in PROFILES)
        lines.append(f"| {s.name} | {s.paper} | {feeds} | {counts} | `resnet-repro run {s.name} --profile quick` |")
    lines += ["", "`make reproduce-cifar-quick` runs every CIFAR-10 experiment at the quick schedule and "
              "rebuilds this report; `make reproduce-cifar-paper` does it at the paper's.", ""]
    return lines


def _num(v: object, fmt: str) -> str:
    return format(float(v), fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v else "—"


def _runs_index(df: pd.DataFrame, start: Path) -> list[str]:
    """One row per run: its directory, net, seed, schedule, status, the final training,
    validation and test errors of its last evaluation, wall time, training images/s,
    CPU threads (as the run's summary recorded them, else its config's; "default"
    where neither says), data copy and hardware (what each run recorded itself)."""
    lines = ["## Runs", ""]
    if df.empty:
        return lines + ["Not run yet: no run directories found.", ""]
    lines += ["| run | data set | net | shortcut | seed | schedule | status | training error (%) | val error (%) | "
              "test error (%) | wall time (s) | images/s | threads | data | hardware |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in df.sort_values("run_dir").iterrows():
        sc = r.get("shortcut") if isinstance(r.get("shortcut"), str) else "—"
        its = r.get("iterations")
        sched = f"{r.get('schedule')} ({int(its):,})" if isinstance(its, (int, float)) and its == its else str(r.get("schedule"))
        threads = r.get("threads_used")  # what the run recorded using; else what its config asked for
        if not (isinstance(threads, (int, float)) and threads == threads):
            threads = r.get("threads")
        threads_s = str(int(threads)) if isinstance(threads, (int, float)) and threads == threads else "default"
        lines.append(f"| `{_rel(r['run_dir'], start)}` | {r.get('dataset')} | {r.get('arch')} | {sc} | {r.get('seed')} | "
                     f"{sched} | {r.get('status')} | {_num(r.get('final_train_error'), '.2f')} | "
                     f"{_num(r.get('final_val_error'), '.2f')} | {_num(r.get('final_test_error'), '.2f')} | "
                     f"{_num(r.get('wall_s'), ',.0f')} | {_num(r.get('images_per_s'), ',.1f')} | {threads_s} | "
                     f"{r.get('data_copy') or '—'} | {r.get('hardware') or '—'} |")
    return lines + [""]


def build_report(runs_dir: Path | list[Path], out: Path = DEFAULT_OUT, figures_dir: Path | None = None) -> dict:
    """Write the Markdown report to ``out`` and the figures (PNG + PDF) to ``figures_dir``
    (default ``<out folder>/figures``).

    Returns:
        ``{"report": Path, "figures": [Path, ...], "warnings": [str, ...]}``.

    Raises:
        UserError: if a ``runs_dir`` does not exist (nothing is written then), or ``out``
            or the figures folder is not writable.
    """
    check_roots(runs_dir)
    out = Path(out)
    start = out.parent
    fig_dir = Path(figures_dir) if figures_dir is not None else start / "figures"
    meta = paper.load()["paper"]
    roots = runs_dir if isinstance(runs_dir, (list, tuple)) else [runs_dir]
    where = (f"from the run logs under {', '.join(f'`{r}`' for r in roots)}" if roots else
             "with no run logs (no `--runs` given and no `results/` folder)")
    lines = [f"# Reproduction report: {meta['title']}", "",
             f"{', '.join(meta['authors'])}, arXiv {meta['arxiv']}. Rebuilt by `resnet-repro report` {where}. "
             "Every table shows the paper's values "
             "beside ours: mean ± std over seeds (sample std) with n, and the best run; a cell without runs names "
             "the command that fills it. Each caption names the schedule, data copy and hardware of our numbers.",
             ""]
    lines += _experiments_section()
    written: list[Path] = []
    caught_all: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lines += ["## Tables", ""]
        for key in TABLE_KEYS:
            t = get_table(key, runs_dir)
            head = f"{t.label}. {t.title}" if t.number else t.title
            lines += [f"### {head}", "", to_text(t, "markdown").split("\n", 2)[2].rstrip(), "",
                      _runs_line(t.runs, start), ""]
        t = get_table("6", runs_dir, dataset="cifar100")
        if t.runs:  # CIFAR-100 runs (not in the paper): their own table, only where there are some
            lines += [f"### {t.title}", "", to_text(t, "markdown").split("\n", 2)[2].rstrip(), "",
                      _runs_line(t.runs, start), ""]
        lines += ["## Figures", ""]
        for n in figs.FIGURES:
            if n == 7:
                from resnet_repro.report.figure7 import build_figure7

                try:
                    d, paths = build_figure7([Path(r) for r in roots], fig_dir / "figure7")
                except UserError as exc:
                    lines += ["### Figure 7", "", f"Not available: {exc}.", ""]
                    continue
            else:
                d = figs.draw(n, runs_dir)
                if not d.runs:  # nothing of ours to draw: say so, write no placeholder files
                    title = d.title.replace("\n", " — ")
                    lines += [f"### Figure {n}", "", f"{title}: not drawn, no runs behind it yet; "
                              f"`{FIGURE_COMMANDS.get(n, 'resnet-repro run')}` adds them "
                              f"(`resnet-repro figure {n}` draws the empty axes with the paper's values).", ""]
                    continue
                paths = figs.save(d.figure, fig_dir / f"figure{n}")
            written += paths
            title = d.title.replace("\n", " — ")
            lines += [f"### Figure {n}", "", f"![{title}]({_rel(paths[0], start)})", "",
                      f"{title}. PDF: `{_rel(paths[1], start)}`.", "", _runs_line(d.runs, start), ""]
        df = load_runs(runs_dir)
        caught_all = sorted({str(w.message) for w in caught})
    lines += _runs_index(df, start)
    if caught_all:
        lines += ["## Warnings", ""] + [f"- {w}" for w in caught_all] + [""]
    try:
        atomic_write_text(out, "\n".join(lines).rstrip() + "\n")
    except OSError as exc:
        raise UserError(f"cannot write {out} ({exc.strerror}); choose a writable --out") from None
    return {"report": out, "figures": written, "warnings": caught_all}
