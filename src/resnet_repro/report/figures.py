"""The paper's training-curve figures rebuilt from stored runs (matplotlib, Agg; no
pyplot state): Fig. 1 and Fig. 6 (CIFAR-10), Fig. 4 (ImageNet); Fig. 7 is dispatched to
:mod:`resnet_repro.report.figure7`. Beside them, the gradient norms per stage that Sec. 4.1
states but does not show (:func:`draw_gradients`, from the runs' ``grad_norms`` events).

Our curves come from the ``eval`` events of each run's ``metrics.jsonl``:
``train_error`` (%, the training error of the last logging window, on augmented
mini-batches), ``test_error`` (CIFAR-10) and ``val_error`` (ImageNet center crop), at
``iteration``. The x axis counts iterations in units of 1e4, as the paper's does. One run
draws each net: the lowest seed of the runs a table would use for it (complete runs of
the recipe with the most iterations). A figure drawn from runs shorter than the paper's
schedule says so in its title.

Output is deterministic: PNG without the ``Software`` chunk and PDF without creation
date or producer, so a figure rebuilt from the same runs has the same bytes.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator

from resnet_repro import paper
from resnet_repro.errors import UserError
from resnet_repro.fsio import atomic_write_bytes
from resnet_repro.report.tables import RunSet, in_progress, parse_net, select
from resnet_repro.runs import check_roots, metrics_frame, read_metrics

FIGURES = (1, 4, 6, 7)
GRADIENTS = "gradients"  # `resnet-repro figure gradients`: not a figure of the paper (Sec. 4.1 states, shows none)
DEFAULT_OUT_DIR = Path("results/figures")
PNG_META = {"Software": None}
PDF_META = {"CreationDate": None, "Producer": None, "Creator": None}
COLORS = ("#e6a000", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


@dataclass
class Curve:
    """One net's curve: ``frame`` has columns ``iteration`` and the error columns of the
    run's ``eval`` events (%)."""

    net: str
    run_dir: str
    schedule: str
    iterations: int
    frame: pd.DataFrame
    data: str | None = None
    done: int | None = None  # iterations done, for a run still in progress (None: complete)

    @property
    def label(self) -> str:
        """The legend entry: the net, and for a run in progress how far it is."""
        if self.done is None:
            return self.net
        return f"{self.net} (in progress: {self.done / 1e3:g}k of {self.iterations / 1e3:g}k)"


@dataclass
class Drawn:
    """A drawn figure: the matplotlib ``figure``, its ``title``, and the run directories
    behind it."""

    number: int | str
    figure: Figure
    title: str
    runs: list[str] = field(default_factory=list)


def eval_curve(run_dir: str | Path) -> pd.DataFrame:
    """The ``eval`` events of a run as a frame sorted by iteration (columns
    ``iteration``, ``train_error``, and ``test_error`` and/or ``val_error`` where
    logged). A corrupt line of ``metrics.jsonl`` is skipped with a warning naming the file
    and line."""
    df = metrics_frame(Path(run_dir), "eval")
    if df.empty or "iteration" not in df:
        return pd.DataFrame(columns=["iteration", "train_error", "test_error"])
    return df.sort_values("iteration").reset_index(drop=True)


def curve_for(rs: RunSet, dataset: str, net: str, notes: list[str], schedule: str | None = None,
              reader: Callable[[str | Path], pd.DataFrame] = eval_curve, event: str = "eval") -> Curve | None:
    """The curve of paper net ``net`` (``"plain-20"``, ``"ResNet-110"``): the lowest-seed
    run of the runs a table would use that has ``event`` events; None without one.

    Args:
        notes: receives one line per run left out (config differs from its spec, or a
            ``metrics.jsonl`` that is missing or holds no ``event`` events), for the
            figure's warnings.
        schedule: only runs of this schedule; where it has no complete run of the net,
            the lowest-seed run still in progress is drawn (``Curve.done`` set: it is
            labelled as in progress, and never counted by a table).
        reader: ``run_dir -> frame`` with an ``iteration`` column (:func:`eval_curve`,
            :func:`grad_curve`); an empty frame means the run has no such events.
        event: the name of those events, for the notes.
    """
    parsed = parse_net(net)
    if parsed is None:
        return None
    cell = select(rs, dataset, parsed[0], parsed[1], lambda r: 0.0, notes, schedule=schedule)
    candidates = [(r, None) for _, r in cell.runs.iterrows()]
    if not candidates and schedule is not None:
        for _, r in in_progress(rs, dataset, parsed[0], parsed[1], schedule).iterrows():
            if r["run_dir"] not in rs.mismatched:
                candidates.append((r, int(r.get("iterations_done") or 0)))
    for r, done in candidates:
        frame = reader(r["run_dir"])
        if frame.empty:
            log = Path(str(r["run_dir"])) / "metrics.jsonl"
            what = "is missing" if not log.exists() else f"holds no {event} events"
            notes.append(f"{log} {what}; {net} curve of run {r['run_dir']} not drawn")
            continue
        data = r.get("data_copy")
        if done is not None:
            done = int(frame["iteration"].max())
        return Curve(net, str(r["run_dir"]), str(r.get("schedule")), int(r.get("iterations") or 0),
                     frame, data if isinstance(data, str) else None, done)
    return None


def figure_schedule(rs: RunSet, dataset: str, nets: list[str],
                    having: Callable[[pd.Series], bool] | None = None) -> str | None:
    """The schedule a figure is drawn at when none is asked for: that of the complete run
    with the most iterations among ``nets`` (so one figure never mixes schedules), else
    that of the longest run in progress; None without runs of these nets. ``having``
    (a test on the run's row) limits the runs considered, e.g. to runs that logged
    gradient norms. Runs of a preset of another reproduction (``akamaster``, ``fb``: not
    the paper's protocol) are drawn only when their schedule is asked for."""
    from resnet_repro.train.schedule import PRESETS

    df = rs.df
    if df.empty:
        return None
    df = df[~df["schedule"].isin(PRESETS)]
    keys = {k for k in (parse_net(n) for n in nets) if k is not None}
    best: tuple[int, int, str] | None = None
    for _, r in df.iterrows():
        sc = r.get("shortcut") if isinstance(r.get("shortcut"), str) and r.get("shortcut") else None
        if r.get("dataset") != dataset or (r.get("arch"), sc) not in keys:
            continue
        if having is not None and not having(r):
            continue
        status = r.get("status")
        if status not in ("complete", "running", "interrupted"):
            continue
        it = r.get("iterations")
        rank = (int(status == "complete"), int(it) if isinstance(it, (int, float)) and it == it else 0,
                str(r.get("schedule")))
        if best is None or rank > best:
            best = rank
    return None if best is None else best[2]


def _schedule_iterations(curves: list[Curve]) -> int | None:
    """The schedule length of ``curves`` (the x axis ends there), None if they differ."""
    its = {c.iterations for c in curves}
    return its.pop() if len(its) == 1 else None


def _schedule_note(curves: list[Curve], paper_iterations: int) -> str:
    """A second title line naming our schedule(s) and data copies, e.g. ``ours: quick
    schedule, 4,000 iterations (paper: 64,000); data: cifar10-jpeg.tar.gz (...)``;
    empty without curves."""
    if not curves:
        return ""
    scheds = sorted({(c.schedule, c.iterations) for c in curves})
    what = ", ".join(f"{s} schedule, {i:,} iterations" for s, i in scheds)
    if any(i < paper_iterations for _, i in scheds):
        what += f" (paper: {paper_iterations:,})"
    if any(c.done is not None for c in curves):
        what += "; runs in progress drawn thin and labelled"
    copies = sorted({c.data for c in curves if c.data})
    return f"\nours: {what}" + ("; data: " + ", ".join(copies) if copies else "")


class CompressedAxis:
    """The paper's compressed error axis (Fig. 6): the ticks (e.g. 0, 5, 10, 20) sit at
    equal distances, linear in between and beyond the ends."""

    def __init__(self, ticks: list[float]) -> None:
        self.t = np.asarray(ticks, dtype=float)
        self.p = np.arange(len(ticks), dtype=float)

    @staticmethod
    def _map(y, src: np.ndarray, dst: np.ndarray):
        y = np.asarray(y, dtype=float)
        out = np.interp(y, src, dst)
        lo, hi = y < src[0], y > src[-1]
        out = np.where(lo, dst[0] + (y - src[0]) * (dst[1] - dst[0]) / (src[1] - src[0]), out)
        return np.where(hi, dst[-1] + (y - src[-1]) * (dst[-1] - dst[-2]) / (src[-1] - src[-2]), out)

    def forward(self, y):
        return self._map(y, self.t, self.p)

    def inverse(self, p):
        return self._map(p, self.p, self.t)

    def apply(self, ax) -> None:
        ax.set_yscale("function", functions=(self.forward, self.inverse))
        ax.set_ylim(float(self.t[0]), float(self.t[-1]))
        ax.set_yticks(list(self.t))
        ax.set_yticklabels([f"{v:g}" for v in self.t])
        ax.yaxis.set_minor_locator(NullLocator())


def _warn(notes: list[str]) -> None:
    """Warn once per run left out (config differs from its spec, no curve in its log)."""
    for n in sorted(set(notes)):
        warnings.warn(n, stacklevel=3)


def _finish_axes(ax, top: float, extend: bool = False) -> None:
    """Iterations axis from 0 with at most 6 plain ticks; a note where every plotted point
    lies above the paper's error axis (e.g. runs of a few iterations). With ``extend`` (a
    linear error axis), the axis instead grows to show curves above the paper's range, and
    says so."""
    ax.set_xlim(left=0)
    ax.xaxis.set_major_locator(MaxNLocator(6))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ys = [np.asarray(ln.get_ydata(), dtype=float) for ln in ax.lines]
    ys = [y for y in ys if y.size]
    if extend and ys and max(float(np.nanmax(y)) for y in ys) > top:
        high = min(100.0, float(np.ceil(max(float(np.nanmax(y)) for y in ys) / 10.0) * 10.0))
        ax.set_ylim(0, high)
        ax.text(0.99, top / high, f"paper's axis ends at {top:g}%", transform=ax.transAxes, ha="right",
                va="bottom", fontsize=6, color="0.35")
        return
    if ys and min(float(np.nanmin(y)) for y in ys) > top:
        ax.text(0.5, 0.5, f"all curves above {top:g}%\n(off the paper's axis)", transform=ax.transAxes,
                ha="center", va="center", fontsize=7, color="0.35")


def _x(frame: pd.DataFrame) -> np.ndarray:
    return frame["iteration"].to_numpy(dtype=float) / 1e4


def _empty_note(ax, command: str, paper_end: dict | None = None) -> None:
    text = f"not run yet:\n{command}"
    if paper_end:
        text += "\npaper (read off, end): " + ", ".join(f"{k} {v:g}%" for k, v in paper_end.items())
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=7, color="0.35", wrap=True)


def _plot_net(ax, curve: Curve, column: str, color: str, style: str, width: float, label: str | None) -> None:
    f = curve.frame
    if column not in f or f[column].isna().all():
        return
    ok = f[column].notna()
    if curve.done is not None:  # a run in progress: thinner and paler, its label says so
        width, alpha = width * 0.6, 0.7
    else:
        alpha = 1.0
    ax.plot(_x(f[ok]), f.loc[ok, column].to_numpy(dtype=float), linestyle=style, linewidth=width, color=color,
            label=label, alpha=alpha)


def _x_to_schedule(ax, curves: list[Curve]) -> None:
    """End the iterations axis where the schedule ends (6.4 x 1e4 for the paper's), so a
    run in progress shows how far it has come."""
    total = _schedule_iterations(curves)
    if total:
        ax.set_xlim(0, total / 1e4)


def _command(dataset_spec: str, schedule: str | None = None) -> str:
    profile = schedule if schedule in ("paper", "quick", "smoke") else "quick"
    return f"resnet-repro run {dataset_spec} --profile {profile}"


def _cifar_paper_iterations() -> int:
    return int(paper.recipe("cifar10")["lr"]["stop_iter"])


def draw_figure1(runs_dir: Path | list[Path], schedule: str | None = None) -> Drawn:
    """Paper Fig. 1: training error (left) and test error (right) of plain-20 and plain-56
    on CIFAR-10 against iterations (1e4); linear error axis 0-20%. Drawn at one schedule:
    ``schedule``, or by default that of :func:`figure_schedule`."""
    rs = RunSet.load(runs_dir)
    desc = paper.figure(1)
    notes: list[str] = []
    schedule = schedule or figure_schedule(rs, "cifar10", desc["nets"])
    curves = [c for c in (curve_for(rs, "cifar10", n, notes, schedule) for n in desc["nets"]) if c is not None]
    fig = Figure(figsize=(8, 3.2))
    axes = fig.subplots(1, 2)
    for ax, (column, ylabel) in zip(axes, (("train_error", "training error (%)"), ("test_error", "test error (%)")),
                                    strict=True):
        for i, net in enumerate(desc["nets"]):
            c = next((c for c in curves if c.net == net), None)
            if c is not None:
                _plot_net(ax, c, column, COLORS[i], "-", 1.6, c.label)
        ax.set_xlabel("iter. (1e4)")
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, 20)
        _finish_axes(ax, 20, extend=True)
        _x_to_schedule(ax, curves)
        ax.grid(True, linewidth=0.3)
        if curves:
            ax.legend(fontsize=8)
        else:
            ends = desc["read_off_end_values_approx"]
            key = "train" if column == "train_error" else "test"
            _empty_note(ax, _command("cifar10-depth", schedule), {n: v[key] for n, v in ends.items()})
    title = "Figure 1: plain-20 and plain-56 on CIFAR-10" + _schedule_note(curves, _cifar_paper_iterations())
    _warn(notes)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return Drawn(1, fig, title, sorted(c.run_dir for c in curves))


def draw_figure6(runs_dir: Path | list[Path], schedule: str | None = None) -> Drawn:
    """Paper Fig. 6: CIFAR-10 training (dashed) and test (bold) error of plain nets (left),
    ResNets 20-110 (middle) and ResNet-110 vs 1202 (right), on the paper's compressed error
    axis (ticks 0, 5, 10, 20; the right panel adds 1). Where a curve ends above 20% (short
    schedules), the panel's axis grows by equally spaced ticks 50 (and 100) and marks
    where the paper's ends. Drawn at one schedule: ``schedule``, or by default that of
    :func:`figure_schedule`."""
    rs = RunSet.load(runs_dir)
    desc = paper.figure(6)
    notes: list[str] = []
    schedule = schedule or figure_schedule(rs, "cifar10", [n for nets in desc["panels"].values() for n in nets])
    fig = Figure(figsize=(12, 3.4))
    axes = fig.subplots(1, 3)
    used: list[Curve] = []
    specs = {"left": "cifar10-depth", "middle": "cifar10-depth", "right": "cifar10-1202"}
    for ax, (panel, nets) in zip(axes, desc["panels"].items(), strict=True):
        got = 0
        for i, net in enumerate(nets):
            c = curve_for(rs, "cifar10", net, notes, schedule)
            if c is None:
                continue
            got += 1
            used.append(c)
            _plot_net(ax, c, "train_error", COLORS[i % len(COLORS)], "--", 0.9, None)
            _plot_net(ax, c, "test_error", COLORS[i % len(COLORS)], "-", 2.0, c.label)
        ticks = [0, 1, 5, 10, 20] if panel == "right" else [0, 5, 10, 20]
        ends = [float(y[-1]) for y in (np.asarray(ln.get_ydata(), dtype=float) for ln in ax.lines) if y.size]
        if ends and max(ends) > 20:  # curves that end above the paper's axis (short schedules): grow it
            ticks += [50, 100] if max(ends) > 50 else [50]
        CompressedAxis(ticks).apply(ax)
        if ticks[-1] > 20:
            ax.text(0.01, ticks.index(20) / (len(ticks) - 1), "paper's axis ends at 20%", transform=ax.transAxes,
                    ha="left", va="bottom", fontsize=6, color="0.35")
        _finish_axes(ax, ticks[-1])
        ax.set_xlabel("iter. (1e4)")
        ax.set_ylabel("error (%)")
        ax.grid(True, axis="y", linewidth=0.3)
        if got:  # the paper's corner, or below the curves where they sit above its axis
            ax.legend(fontsize=7, loc="lower left" if ticks[-1] > 20 else "upper right")
        else:
            ends = desc["read_off_end_values_approx_test"]
            _empty_note(ax, _command(specs[panel], schedule), {n: ends[n] for n in nets if n in ends})
    for ax in axes:
        _x_to_schedule(ax, used)
    title = ("Figure 6: CIFAR-10, dashed = training error, bold = test error"
             + _schedule_note(used, _cifar_paper_iterations()))
    _warn(notes)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return Drawn(6, fig, title, sorted({c.run_dir for c in used}))


def draw_figure4(runs_dir: Path | list[Path]) -> Drawn:
    """Paper Fig. 4: ImageNet training error (thin) and center-crop validation error
    (bold) of plain-18/34 (left) and ResNet-18/34 (right) against iterations (1e4);
    error axis 20-60%."""
    rs = RunSet.load(runs_dir)
    desc = paper.figure(4)
    notes: list[str] = []
    fig = Figure(figsize=(9, 3.4))
    axes = fig.subplots(1, 2)
    used: list[Curve] = []
    for ax, (_panel, nets) in zip(axes, desc["panels"].items(), strict=True):
        got = 0
        for i, net in enumerate(nets):
            c = curve_for(rs, "imagenet", net, notes)
            if c is None:
                continue
            got += 1
            used.append(c)
            _plot_net(ax, c, "train_error", COLORS[i], "-", 0.8, None)
            _plot_net(ax, c, "val_error", COLORS[i], "-", 2.2, net)
        ax.set_ylim(20, 60)
        _finish_axes(ax, 60)
        ax.set_xlabel("iter. (1e4)")
        ax.set_ylabel("error (%)")
        ax.grid(True, linewidth=0.3)
        if got:
            ax.legend(fontsize=8)
        else:
            ends = desc["read_off_end_values_approx_val_center_crop"]
            _empty_note(ax, _command("imagenet-plain-vs-residual"), {n: ends[n] for n in nets if n in ends})
    iters = int(paper.recipe("imagenet")["max_iterations"])
    title = ("Figure 4: ImageNet, thin = training error, bold = center-crop validation error"
             + _schedule_note(used, iters))
    _warn(notes)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return Drawn(4, fig, title, sorted({c.run_dir for c in used}))


GRADIENT_NETS = ("plain-20", "ResNet-20", "plain-56", "ResNet-56")
# the parts of the net in the log's order, each with one colour in both rows
GRADIENT_PARTS = ("conv1+bn1", "layer1", "layer2", "layer3", "fc")
GRADIENT_KINDS = (("weight", "weights"), ("input", "input"))


def grad_curve(run_dir: str | Path) -> pd.DataFrame:
    """The ``grad_norms`` events of a run (:func:`resnet_repro.train.loop.fit`) as a frame
    sorted by iteration: columns ``iteration``, ``loss`` and one per norm,
    ``weight.<part>`` (``weight.conv1+bn1``, ``weight.layer1``, ...) and
    ``input.<module>`` (``input.layer1``, ..., ``input.fc``); a value that is no number
    reads NaN. Empty (no columns) for a run without such events. A corrupt line of
    ``metrics.jsonl`` is skipped with a warning naming the file and line."""
    rows = []
    for e in read_metrics(Path(run_dir)):
        if e.get("event") != "grad_norms" or not isinstance(e.get("iteration"), int):
            continue
        row = {"iteration": e["iteration"], "loss": e.get("loss")}
        for kind, _ in GRADIENT_KINDS:
            part = e.get(kind)
            for k, v in (part.items() if isinstance(part, dict) else ()):
                row[f"{kind}.{k}"] = v
        rows.append(row)
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    for c in df.columns:
        if c != "iteration":
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    return df.sort_values("iteration", kind="stable").reset_index(drop=True)


def _logged_grad_norms(row: pd.Series) -> bool:
    """Whether a run's config asks for ``grad_norms`` events (a config from before the
    option has no such field)."""
    v = row.get("grad_norms_every")
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(float(v)) and v > 0


def draw_gradients(runs_dir: Path | list[Path], schedule: str | None = None) -> Drawn:
    """The per-stage gradient norms of plain-20/56 and ResNet-20/56 on CIFAR-10 against
    iterations (1e4), from the runs' ``grad_norms`` events (paper Sec. 4.1 states that the
    plain nets' gradients "exhibit healthy norms with BN" and shows none; see
    :mod:`resnet_repro.analysis.gradients`). Top row: the L2 norm of the loss gradient
    w.r.t. the weights of ``conv1+bn1``, ``layer1``-``layer3`` and ``fc``; bottom row:
    w.r.t. the tensor entering ``layer1``-``layer3`` and ``fc``. Left column 20 layers,
    right 56; one colour per part, plain nets dashed, ResNets solid; log y axis.

    The runs are chosen as for Figures 1 and 6 (:func:`curve_for`: the lowest seed of the
    runs a table would use, a run in progress drawn thin and labelled where the schedule
    has no complete one), at ``schedule``, or by default at that of the longest complete
    run that logged gradient norms (:func:`figure_schedule`). A chosen run without
    ``grad_norms`` events gives way to the next seed, with a warning."""
    rs = RunSet.load(runs_dir)
    notes: list[str] = []
    nets = list(GRADIENT_NETS)
    schedule = schedule or figure_schedule(rs, "cifar10", nets, _logged_grad_norms) or figure_schedule(
        rs, "cifar10", nets)
    curves = {n: c for n in nets if (c := curve_for(rs, "cifar10", n, notes, schedule, grad_curve, "grad_norms"))}
    fig = Figure(figsize=(9, 6.6))
    axes = fig.subplots(2, 2, sharex=True)
    colors = {p: COLORS[i] for i, p in enumerate(GRADIENT_PARTS)}
    for row, (kind, what) in enumerate(GRADIENT_KINDS):
        for col, depth in enumerate((20, 56)):
            ax = axes[row][col]
            handles = []
            for net, style in ((f"plain-{depth}", "--"), (f"ResNet-{depth}", "-")):
                c = curves.get(net)
                if c is None:
                    continue
                for part in GRADIENT_PARTS:
                    column = f"{kind}.{part}"
                    if column in c.frame:
                        f = c.frame[c.frame[column] > 0]  # a log axis: zero or non-finite norms are not drawn
                        f = f[np.isfinite(f[column].to_numpy(dtype=float))]
                        _plot_net(ax, Curve(c.net, c.run_dir, c.schedule, c.iterations, f, c.data, c.done), column,
                                  colors[part], style, 1.3, f"{net} {part}")
                handles.append(Line2D([], [], color="0.2", linestyle=style, linewidth=1.3, label=c.label))
            if handles:
                ax.set_yscale("log")
                ax.legend(handles=handles, fontsize=7, loc="upper right")
            else:
                _empty_note(ax, _command("cifar10-depth", schedule))
            ax.set_xlim(left=0)
            ax.xaxis.set_major_locator(MaxNLocator(6))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
            ax.grid(True, which="major", linewidth=0.3)
            ax.set_title(f"{depth} layers: gradient w.r.t. the {what}", fontsize=8)
            if col == 0:
                ax.set_ylabel("L2 norm of the gradient" + (" w.r.t. weights" if kind == "weight" else
                                                         " w.r.t. stage input"), fontsize=8)
            if row == 1:
                ax.set_xlabel("iter. (1e4)")
    used = list(curves.values())
    for ax in axes.flat:
        _x_to_schedule(ax, used)
    fig.legend(handles=[Line2D([], [], color=colors[p], linewidth=2, label=p) for p in GRADIENT_PARTS],
               loc="lower center", ncol=len(GRADIENT_PARTS), fontsize=8, frameon=False)
    title = ("Gradient norms per stage, CIFAR-10 (paper Sec. 4.1 states they are healthy in plain nets with BN, "
             "and shows none):\nL2 norm of the gradient of the batch-mean cross-entropy on one training mini-batch, "
             "in the run's precision,\nw.r.t. each part's weights (top) and the tensor entering it (bottom); "
             "dashed = plain, solid = ResNet" + _schedule_note(used, _cifar_paper_iterations()))
    _warn(notes)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return Drawn(GRADIENTS, fig, title, sorted(c.run_dir for c in used))


DRAWERS = {1: draw_figure1, 4: draw_figure4, 6: draw_figure6, GRADIENTS: draw_gradients}


SCHEDULED = (1, 6, GRADIENTS)  # the figures drawn at one chosen schedule (``--schedule``)


def out_base_for(n: int | str, out: Path | None, schedule: str | None = None) -> Path:
    """``results/figures/figureN`` by default (``figureN-SCHEDULE`` for a figure drawn at a
    chosen schedule; ``gradients``, ``gradients-SCHEDULE`` for the gradient-norm figure);
    a given path loses a ``.png``/``.pdf`` suffix (both files are written)."""
    name = (GRADIENTS if n == GRADIENTS else f"figure{n}") + (f"-{schedule}" if schedule else "")
    if out is None:
        return DEFAULT_OUT_DIR / name
    out = Path(out)
    if out.suffix.lower() in (".png", ".pdf"):
        out = out.with_suffix("")
    if out.is_dir():
        return out / name
    return out


def save(fig: Figure, base: Path, dpi: int = 150) -> list[Path]:
    """Write ``base.png`` and ``base.pdf`` atomically, without timestamps or version
    strings, and return their paths.

    Raises:
        UserError: if the folder is not writable.
    """
    paths = []
    for ext, meta in (("png", PNG_META), ("pdf", PDF_META)):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=dpi, metadata=meta)
        path = base.with_name(base.name + f".{ext}")
        try:
            atomic_write_bytes(path, buf.getvalue())
        except OSError as exc:
            raise UserError(f"cannot write {path} ({exc.strerror}); choose a writable --out") from None
        paths.append(path)
    return paths


def draw(n: int | str, runs_dir: Path | list[Path], schedule: str | None = None) -> Drawn:
    """Draw paper Figure ``n`` (1, 4 or 6), or the gradient-norm figure (``"gradients"``,
    :func:`draw_gradients`), from the runs under ``runs_dir``; Figures 1 and 6 and the
    gradients at ``schedule`` (default: see :func:`figure_schedule`).

    Raises:
        UserError: for another figure number (Figure 7: see :func:`figure`).
    """
    if n not in DRAWERS:
        raise UserError(f"figure {n} is not a training-curve figure; reproducible figures are "
                        f"{', '.join(map(str, FIGURES))} and {GRADIENTS}")
    return DRAWERS[n](runs_dir, schedule) if n in SCHEDULED else DRAWERS[n](runs_dir)


def check_schedule(n: int, schedule: str | None) -> None:
    """Refuse a ``--schedule`` for a figure that is not drawn at one (4, 7) or a name that
    is not a CIFAR-10 schedule.

    Raises:
        UserError: naming the problem and the fix.
    """
    if schedule is None:
        return
    from resnet_repro.train.schedule import PRESETS, SCHEDULES

    if n not in SCHEDULED:
        raise UserError(f"--schedule applies to Figures 1 and 6 and the {GRADIENTS} figure (CIFAR-10), not "
                        f"Figure {n}; drop --schedule")
    if schedule not in (*SCHEDULES, "custom", *PRESETS):
        raise UserError(f"unknown --schedule {schedule!r}; choose one of {', '.join((*SCHEDULES, 'custom', *PRESETS))}")


def figure(n: int | str, runs_dir: Path | list[Path], out: Path | None = None,
           schedule: str | None = None) -> list[Path]:
    """Rebuild paper Figure ``n`` (1, 4, 6 or 7), or the gradient-norm figure
    (``"gradients"``: :func:`draw_gradients`; default file ``results/figures/gradients``),
    from stored runs as PNG and PDF.

    Args:
        out: a base path (``results/figures/figure6`` -> ``.png`` and ``.pdf``) or a folder.
        schedule: Figures 1 and 6 and the gradients only: draw the runs of this schedule
            (``paper``, ``quick``, ...), runs in progress included and labelled; the
            default file name then ends in ``-SCHEDULE``.

    Returns:
        The written files.

    Raises:
        UserError: for a figure the project does not rebuild, a ``runs_dir`` that does not
            exist, Figure 7 without runs that hold ``responses.json``, or an unwritable
            ``out``.
    """
    if n in FIGURES or n == GRADIENTS:
        check_schedule(n, schedule)
        check_roots(runs_dir)
    if n == 7:
        from resnet_repro.report.figure7 import figure7  # imports this module's save()

        roots = [Path(r) for r in runs_dir] if isinstance(runs_dir, (list, tuple)) else [Path(runs_dir)]
        return figure7(roots, out_base_for(7, out))
    if n not in FIGURES and n != GRADIENTS:
        raise UserError(f"the paper's reproducible figures are {', '.join(map(str, FIGURES))} (and {GRADIENTS}: "
                        f"the gradient norms of Sec. 4.1), not {n}")
    d = draw(n, runs_dir, schedule)
    return save(d.figure, out_base_for(n, out, schedule))


def yticklabels(fig: Figure) -> list[list[str]]:
    """The y tick labels of every axes of ``fig``, e.g. for Fig. 6
    ``[["0", "5", "10", "20"], ["0", "5", "10", "20"], ["0", "1", "5", "10", "20"]]``."""
    return [[t.get_text() for t in ax.get_yticklabels()] for ax in fig.axes]
