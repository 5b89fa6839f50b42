"""The paper's Tables 1 to 8 rebuilt from stored runs, with the paper's numbers beside ours.

Every table keeps the paper's column always. Our cells hold mean ± std over seeds (sample
std, ddof=1) with n, and the best run; a cell without runs names the command that would
fill it. The caption names the schedule, data copy and hardware of our numbers.

Which runs make a cell: complete runs of the cell's net (architecture and shortcut
option) on the cell's data set. Runs of one net trained with different recipes (another
schedule, another data copy) are never averaged together: the cell uses the group with
the most iterations and the caption counts the others. A run whose config differs from
the spec that names it (``experiments/*.toml``) is left out with a warning.

* Table 1 is measured from the code (:mod:`resnet_repro.report.table1`).
* Tables 2, 3, 4 read ImageNet runs' ``eval-<protocol>.json`` (``top1_error``,
  ``top5_error``, ``protocol``): 10-crop for Tables 2 and 3, multi-scale for Table 4.
* Table 6 reads CIFAR-10 runs' final test error (``summary.json``); below it, a block of
  reference checkpoints (published error and error on the copy in use) read from
  ``cifar10-reference/*.json`` evaluation records (:mod:`resnet_repro.report.reference`).
  Runs of a preset of another reproduction (``--schedule akamaster`` / ``fb``, not the
  paper's protocol) get rows of their own, labelled, holding each run's best test error
  over its per-epoch evaluations as those recipes report it; they are never averaged
  with paper or quick runs, and no cell chosen by "most iterations" ever takes them.
* ``table 6 --dataset cifar100``: the same nets trained on CIFAR-100 (not in the paper:
  its paper column is empty), from CIFAR-100 runs only; Table 6 itself reads CIFAR-10
  runs only.
* Tables 5, 7, 8 (ensembles, detection) show the paper's values; ours are not reproduced.
* ``cifar-shortcuts``: options A/B/C on CIFAR-10 (not in the paper; the CIFAR-10
  counterpart of Table 3).
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path

import pandas as pd

from resnet_repro import paper
from resnet_repro.errors import UserError
from resnet_repro.runs import check_roots, load_runs, read_json, read_metrics
from resnet_repro.train.schedule import PRESETS

FORMATS = ("rich", "markdown", "csv", "latex")
TABLE_KEYS = ("1", "2", "3", "4", "5", "6", "7", "8", "cifar-shortcuts")
# Numeric companions of the display columns; present in ``frame`` for tests and CSV users,
# hidden when rendered.
DISPLAY_DROP = ("mean", "std", "best", "top5_mean", "top5_std", "top5_best", "runs")


@dataclass
class Table:
    """A rebuilt table.

    Attributes:
        number: the paper's table number (0 for tables not in the paper).
        title: the paper's title (or ours).
        frame: one row per paper row; display columns are strings, and the numeric
            ``mean``/``std``/``best`` (and ``top5_*``) columns hold our statistics (NaN
            where there are no runs); ``n`` counts our runs.
        caption: schedule, data copy and hardware of our numbers, and the paper's protocol.
        runs: the run directories behind our numbers.
        notes: runs left out and why.
        key: the table key (``"6"``, ``"cifar-shortcuts"``).
        blocks: further tables shown below this one in every format (Table 6: the
            reference checkpoints of :mod:`resnet_repro.report.reference`).
    """

    number: int
    title: str
    frame: pd.DataFrame
    caption: str
    runs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    key: str = ""
    blocks: list[Table] = field(default_factory=list)

    @property
    def label(self) -> str:
        """``"Table 6"`` or, for tables not in the paper, the title."""
        return f"Table {self.number}" if self.number else "Table"

    def shown(self) -> pd.DataFrame:
        """The display columns only."""
        return self.frame.drop(columns=[c for c in DISPLAY_DROP if c in self.frame.columns])


def fmt_err(mean: float | None, std: float | None = None, n: int | None = None) -> str:
    """``"7.51"``, ``"6.61 ± 0.16 (n=5)"`` or ``"—"``."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    if n and n > 1 and std is not None and not math.isnan(std):
        return f"{mean:.2f} ± {std:.2f} (n={n})"
    return f"{mean:.2f}"


def _num(v: object) -> str:
    """A paper value: a number with 2 decimals, a string as is, None as ``—``."""
    if v is None:
        return "—"
    if isinstance(v, (int, float)):
        return f"{v:.2f}"
    return str(v)


def describe_runs(df: pd.DataFrame) -> str:
    """Caption text naming the schedules, data copies and hardware behind ``df``."""
    if df is None or df.empty:
        return "Ours: not run yet (no runs found); the table shows the paper's values."
    parts = []
    scheds = set()
    for _, r in df.iterrows():
        it = r.get("iterations")
        scheds.add(f"{r.get('schedule')} ({int(it):,} iterations)" if _present(it) else str(r.get("schedule")))
    parts.append("schedule: " + ", ".join(sorted(scheds)))
    if "data_copy" in df:
        copies = sorted({str(k) for k in df["data_copy"].dropna()})
        if copies:
            parts.append("data: " + ", ".join(copies))
    if "hardware" in df:
        hw = sorted({str(h) for h in df["hardware"].dropna()})
        if hw:
            parts.append("hardware: " + ", ".join(hw))
    return f"Ours ({len(df)} run{'s' if len(df) != 1 else ''}): " + "; ".join(parts) + "."


def _present(v: object) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


# ---------------------------------------------------------------------------- run selection
@dataclass
class RunSet:
    """All runs under the table's roots: ``df`` (rows of :func:`resnet_repro.runs.load_runs`),
    ``mismatched`` (``{run_dir: why}`` for runs whose config differs from their spec) and
    ``skipped`` (runs left out for a missing or damaged config.json, see ``load_runs``)."""

    df: pd.DataFrame
    mismatched: dict[str, str]
    skipped: list[dict] = field(default_factory=list)
    roots: list[Path] = field(default_factory=list)

    def fill_command(self, name: str) -> str:
        """The ``resnet-repro run`` command that adds runs of experiment ``name`` to these
        tables: the profile of the runs already here (``smoke``/``quick``/``paper``, the
        most common; ``quick`` if none), and ``--out`` when the table reads one folder
        other than ``results`` (where ``run`` writes by default)."""
        scheds = self.df["schedule"].dropna().astype(str) if not self.df.empty else pd.Series(dtype=str)
        scheds = scheds[scheds.isin(("smoke", "quick", "paper"))]
        profile = scheds.value_counts().idxmax() if len(scheds) else "quick"
        cmd = f"resnet-repro run {name} --profile {profile}"
        root = self.roots[0] if len(self.roots) == 1 else None
        if root is not None and root.resolve() != Path("results").resolve() and not (root / "config.json").exists():
            cmd += f" --out {root}"
        return cmd

    @classmethod
    def load(cls, runs_dir: Path | list[Path]) -> RunSet:
        """Every run directory under ``runs_dir`` (searched recursively), with the runs
        whose config differs from their experiment spec named in ``mismatched``.
        Damaged runs are named in warnings (see :func:`resnet_repro.runs.load_runs`)."""
        from resnet_repro.experiments import spec_mismatches

        skipped: list[dict] = []
        df = load_runs(runs_dir, skipped=skipped)
        mism = spec_mismatches(df.to_dict("records")) if not df.empty else {}
        roots = [Path(runs_dir)] if isinstance(runs_dir, (str, Path)) else [Path(p) for p in runs_dir]
        return cls(df, mism, skipped, roots)

    def damaged(self, dataset: str, arch: str, shortcut: str | None) -> list[str]:
        """The damaged files (``run/summary.json``, ``run/config.json``) of runs of one net
        that tables leave out: runs whose summary is missing, unreadable or has unusable
        fields, and runs skipped for their config.json whose directory name names the net."""
        out = []
        df = self.df
        if not df.empty and "problem" in df:
            for _, r in df.iterrows():
                why = r.get("problem")
                if (isinstance(why, str) and why and r.get("dataset") == dataset and r.get("arch") == arch
                        and _shortcut_of(r.get("shortcut")) == shortcut and r.get("status") != "diverged"):
                    file = why.split()[0].rstrip(":")  # the file the problem names (runs.load_runs)
                    out.append(f"{Path(str(r['run_dir'])).name}/{file if '.json' in file else 'summary.json'}")
        for sk in self.skipped:
            if sk.get("arch") == arch and _shortcut_of(sk.get("shortcut")) == shortcut and sk.get("dataset") in (
                    None, dataset):
                out.append(f"{Path(sk['run_dir']).name}/{sk['file']}")
        return sorted(out)


@dataclass
class Cell:
    """Our runs behind one table cell: ``runs`` (the chosen recipe group), ``values``
    (one number per run, same order), and ``others`` (notes on runs not mixed in)."""

    runs: pd.DataFrame
    values: list[float]
    others: list[str]

    @property
    def n(self) -> int:
        """Number of runs (seeds) in the cell."""
        return len(self.values)

    @property
    def mean(self) -> float:
        """Mean error (%) over the runs; NaN for none."""
        return float(sum(self.values) / self.n) if self.n else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof=1); NaN for fewer than 2 runs."""
        if self.n < 2:
            return math.nan
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (self.n - 1))

    @property
    def best(self) -> float:
        """Lowest error (%) of the runs (the paper's "best" of Table 6); NaN for none."""
        return float(min(self.values)) if self.n else math.nan

    def text(self) -> str:
        """``mean ± std (n=k)`` as the tables print it."""
        return fmt_err(self.mean, self.std, self.n)


def _shortcut_of(v: object) -> str | None:
    return v if isinstance(v, str) and v else None


def _group_key(row: dict) -> str:
    """Everything that makes runs comparable: the recipe without the seed, plus the data."""
    from resnet_repro.experiments import EXECUTION_FIELDS
    from resnet_repro.train.config import RunConfig

    keep = {k for k in RunConfig.model_fields if k not in EXECUTION_FIELDS and k != "seed"}
    rec = {k: _jsonable(row.get(k)) for k in sorted(keep) if k in row}
    rec["data_checksum"] = _jsonable(row.get("data_checksum"))
    return json.dumps(rec, sort_keys=True, default=str)


def _jsonable(v: object) -> object:
    from resnet_repro.experiments import _plain

    v = _plain(v)
    return v


def _net_mask(df: pd.DataFrame, dataset: str, arch: str, shortcut: str | None) -> pd.Series:
    """Rows of ``df`` that are runs of one net (architecture and shortcut option) on ``dataset``."""
    # (Series == None) is never True, and Series.map turns None into NaN: compare in Python.
    scs = df["shortcut"].tolist() if "shortcut" in df else [None] * len(df)
    same_sc = pd.Series([_shortcut_of(v) == shortcut for v in scs], index=df.index, dtype=bool)
    return (df["dataset"] == dataset) & (df["arch"] == arch) & same_sc


def in_progress(rs: RunSet, dataset: str, arch: str, shortcut: str | None, schedule: str) -> pd.DataFrame:
    """The runs of one net at ``schedule`` that are not finished (status ``running`` or
    ``interrupted``, e.g. a 64k-iteration run copied into ``results/`` between working
    sessions), sorted by seed. Tables and figures never count them in a mean; they may
    show how far they are."""
    df = rs.df
    if df.empty:
        return df
    m = _net_mask(df, dataset, arch, shortcut) & (df["schedule"] == schedule) & df["status"].isin(
        ("running", "interrupted"))
    sub = df[m]
    return sub.iloc[sorted(range(len(sub)), key=lambda i: (_plain_seed(sub.iloc[i].get("seed")),
                                                            str(sub.iloc[i]["run_dir"])))]


def progress_text(runs: pd.DataFrame) -> str:
    """``"in progress, not counted: s0 at 12,000 of 64,000 iterations (test 14.20%)"`` for
    the rows of :func:`in_progress` (the latest evaluation each run logged)."""
    parts = []
    for _, r in runs.iterrows():
        done, total = r.get("iterations_done"), r.get("iterations")
        where = (f"{int(done):,} of {int(total):,} iterations" if _present(done) and _present(total)
                 else "no evaluation yet")
        err = r.get("final_test_error")
        parts.append(f"s{_plain_seed(r.get('seed'))} at {where}" + (f" (test {float(err):.2f}%)" if _present(err) else ""))
    return "in progress, not counted: " + "; ".join(parts)


def select(rs: RunSet, dataset: str, arch: str, shortcut: str | None, value, notes: list[str],
           schedule: str | None = None) -> Cell:
    """The runs of one cell.

    Args:
        value: ``row -> float | None``: the number a run contributes (None: the run has
            none, e.g. no 10-crop evaluation; it is then left out and counted).
        notes: receives one line per run left out because its config differs from its
            spec.
        schedule: only runs of this schedule (``paper``, ``quick``, ``akamaster``, ...);
            None: all but the presets of other reproductions (:data:`PRESETS`, never
            mixed with the paper's protocol; a note counts them), the cell then takes the
            recipe with the most iterations.
    """
    df = rs.df
    if df.empty:
        return Cell(df, [], [])
    net = f"{arch}{' ' + shortcut if shortcut else ''}"
    preset_notes = []
    if schedule is not None:
        df = df[df["schedule"] == schedule]
    else:
        is_preset = df["schedule"].isin(PRESETS)
        for name, n in sorted(df[is_preset & _net_mask(df, dataset, arch, shortcut) & (df["status"] == "complete")]
                              ["schedule"].astype(str).value_counts().items()):
            preset_notes.append(f"{n} {net} run(s) of the {name} preset (not the paper's protocol) not mixed in")
        df = df[~is_preset]
    net_m = _net_mask(df, dataset, arch, shortcut)
    sub = df[net_m & (df["status"] == "complete")]
    n_div = int((net_m & (df["status"] == "diverged")).sum())
    diverged = [f"{n_div} diverged {net} run(s), not averaged in"] if n_div else []
    diverged += preset_notes
    rows = []
    n_ft = 0
    for _, r in sub.iterrows():
        if _present(r.get("init_weights_sha256")):  # fine-tuned from other weights: not trained from scratch
            n_ft += 1
            continue
        why = rs.mismatched.get(str(r["run_dir"]))
        if why:
            notes.append(f"{r['run_dir']}: {why}; not mixed in")
            continue
        rows.append(r)
    if n_ft:
        diverged.append(f"{n_ft} {net} run(s) fine-tuned from --init-weights, not mixed in")
    if not rows:
        return Cell(sub.iloc[0:0], [], diverged)
    groups: dict[str, list] = {}
    for r in rows:
        groups.setdefault(_group_key(r.to_dict()), []).append(r)

    def rank(item):
        key, rs_ = item
        it = rs_[0].get("iterations")
        return (float(it) if _present(it) else 0.0, len(rs_), key)

    ordered = sorted(groups.items(), key=rank, reverse=True)
    chosen = ordered[0][1]
    others = list(diverged)
    for _, g in ordered[1:]:
        others.append(f"{len(g)} {net} run(s) at schedule {g[0].get('schedule')} not mixed in")
    vals, used = [], []
    missing = 0
    for r in sorted(chosen, key=lambda r: (int(_plain_seed(r.get("seed"))), str(r["run_dir"]))):
        v = value(r)
        if v is None:
            missing += 1
            continue
        vals.append(float(v))
        used.append(r)
    if missing:
        others.append(f"{missing} {net} run(s) without this evaluation")
    return Cell(pd.DataFrame(used), vals, others)


def _plain_seed(v: object) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def _not_run(dataset: str, arch: str, shortcut: str | None, rs: RunSet | None = None) -> str:
    """The text of a cell without usable runs: the command that fills it, or, where runs
    of the net exist but their logs are damaged, which files (never "not run yet")."""
    from resnet_repro.experiments import spec_for

    bad = rs.damaged(dataset, arch, shortcut) if rs is not None else []
    if bad:
        shown = ", ".join(bad[:2]) + (f" and {len(bad) - 2} more" if len(bad) > 2 else "")
        return f"run(s) found, log damaged: {shown} (see warnings)"
    name = spec_for(dataset, arch, shortcut)
    if name:
        return "not run yet: " + (rs.fill_command(name) if rs is not None else f"resnet-repro run {name} --profile quick")
    data = " --dataset cifar100" if dataset == "cifar100" else ""
    return f"not run yet: resnet-repro train{data} --arch {arch}" + (f" --shortcut {shortcut}" if shortcut else "")


def _used(cells: list[Cell]) -> pd.DataFrame:
    frames = [c.runs for c in cells if c.n]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _finish(number: int, key: str, title: str, rows: list[dict], cells: list[Cell], notes: list[str],
            paper_note: str, extra: str = "") -> Table:
    used = _used(cells)
    for n in notes:
        warnings.warn(n, stacklevel=3)
    cap = describe_runs(used)
    others = sorted({o for c in cells for o in c.others})
    if others:
        cap += " Also found: " + "; ".join(others) + "."
    if notes:
        cap += f" {len(notes)} run(s) left out: their config differs from their spec (see warnings)."
    if extra:
        cap += " " + extra
    cap += " " + paper_note
    runs = sorted({str(d) for d in used.get("run_dir", [])}) if not used.empty else []
    return Table(number, title, pd.DataFrame(rows), cap, runs, notes, key)


# ---------------------------------------------------------------------------- Table 1
def table1(runs_dir: Path | list[Path] | None = None) -> Table:
    """Paper Table 1 (architectures for ImageNet) measured from the code: block shapes per
    stage, parameters and multiply-adds beside the paper's FLOPs row. Reads no runs."""
    from resnet_repro.report.table1 import TABLE1_CAPTION

    return Table(1, paper.table(1)["title"] + " (from the code)", _table1_display().copy(), TABLE1_CAPTION, [], [],
                 "1")


@lru_cache(maxsize=1)
def _table1_display() -> pd.DataFrame:
    """Table 1's frame with floats as text (measured once per process: it depends on the
    code only)."""
    from resnet_repro.report.table1 import table1_frame

    f = table1_frame().drop(columns=["name", "depth"])
    for c in f.columns:
        if pd.api.types.is_float_dtype(f[c]):
            f[c] = f[c].map(lambda v: f"{v:.3f}")
    return f


# ---------------------------------------------------------------------------- ImageNet tables
_NET = re.compile(r"^(plain|ResNet)-(\d+)(?: ([ABC]))?$")


def parse_net(name: str) -> tuple[str, str | None] | None:
    """``"ResNet-34 B"`` -> ``("resnet34", "B")``; ``"plain-18"`` -> ``("plain18", None)``;
    ``"ResNet-50"`` -> ``("resnet50", "B")`` (the paper's default option); None for
    other methods (``"VGG-16"``)."""
    from resnet_repro.models.registry import resolve_shortcut, spec

    m = _NET.match(name.strip())
    if not m:
        return None
    arch = f"{m.group(1).lower()}{m.group(2)}"
    return arch, resolve_shortcut(spec(arch), m.group(3))


def protocol_name(text: str) -> str:
    """Normalise an evaluation protocol name: ``10-crop``, ``multi-scale``, ``center`` or
    the lower-cased text."""
    s = re.sub(r"[^a-z0-9]", "", str(text).lower())
    if "10crop" in s or "tencrop" in s:
        return "10-crop"
    if "multiscale" in s or "fullyconv" in s or s.startswith("fcn"):
        return "multi-scale"
    if "center" in s or "centre" in s or s in ("1crop", "single", "singlecrop"):
        return "center"
    return s


def read_evals(run_dir: str | Path) -> dict[str, dict]:
    """``{protocol: {"top1_error": .., "top5_error": .., ...}}`` from a run's
    ``eval-<protocol>.json`` files (protocol from the file's ``protocol`` key, else its
    name; see :func:`protocol_name`)."""
    out = {}
    for f in sorted(Path(run_dir).glob("eval-*.json")):
        obj = read_json(f)
        if obj is None:
            warnings.warn(f"{f}: unreadable evaluation file skipped", stacklevel=2)
            continue
        out[protocol_name(obj.get("protocol") or f.stem.removeprefix("eval-"))] = obj
    return out


def _eval_value(protocol: str, key: str):
    def get(row) -> float | None:
        ev = read_evals(row["run_dir"]).get(protocol)
        v = None if ev is None else ev.get(key)
        return float(v) if isinstance(v, (int, float)) else None

    return get


def _imagenet_rows(rs: RunSet, names: list[str], paper_vals: dict[str, tuple], protocol: str,
                   notes: list[str], cells: list[Cell], reproducible: set[str]) -> list[dict]:
    rows = []
    for name in names:
        ptop1, ptop5 = paper_vals[name]
        row = {"net": name, "paper top-1 error (%)": _num(ptop1), "paper top-5 error (%)": _num(ptop5)}
        parsed = parse_net(name) if name in reproducible else None
        if parsed is None:
            row.update({"our top-1 error (%)": "— (not trained here)", "our top-5 error (%)": "—", "our best top-1 error (%)": "—",
                        "n": 0, "schedule": ""})
            row.update({k: math.nan for k in DISPLAY_DROP if k != "runs"})
            rows.append(row)
            continue
        arch, sc = parsed
        c1 = select(rs, "imagenet", arch, sc, _eval_value(protocol, "top1_error"), notes)
        c5 = select(rs, "imagenet", arch, sc, _eval_value(protocol, "top5_error"), [])
        cells.append(c1)
        if c1.n == 0:
            trained = len(select(rs, "imagenet", arch, sc, lambda r: 0.0, []).values)
            miss = (f"trained ({trained}), no {protocol} evaluation yet" if trained
                    else _not_run("imagenet", arch, sc, rs))
            row.update({"our top-1 error (%)": miss, "our top-5 error (%)": "—", "our best top-1 error (%)": "—", "n": 0,
                        "schedule": ""})
        else:
            row.update({"our top-1 error (%)": c1.text(), "our top-5 error (%)": c5.text() if c5.n else "—",
                        "our best top-1 error (%)": f"{c1.best:.2f}", "n": c1.n,
                        "schedule": ", ".join(sorted(set(map(str, c1.runs["schedule"]))))})
        row.update({"mean": c1.mean, "std": c1.std, "best": c1.best, "top5_mean": c5.mean, "top5_std": c5.std,
                    "top5_best": c5.best})
        rows.append(row)
    return rows


IMAGENET_NOTE = ("Paper: ImageNet 2012 val, 10-crop testing, ~60e4 iterations (Sec. 3.4). Our top-1/top-5 errors come "
                 "from each run's eval-<protocol>.json.")


def table2(runs_dir: Path | list[Path]) -> Table:
    """Paper Table 2: top-1 error (%, 10-crop) on ImageNet val of plain-18/34 and
    ResNet-18/34 (option A), ours beside the paper's."""
    rs = RunSet.load(runs_dir)
    t = paper.table(2)
    names = list(t["rows"])
    vals = {k: (v, None) for k, v in t["rows"].items()}
    notes: list[str] = []
    cells: list[Cell] = []
    rows = _imagenet_rows(rs, names, vals, "10-crop", notes, cells, set(names))
    for r in rows:
        del r["paper top-5 error (%)"], r["our top-5 error (%)"]
    return _finish(2, "2", t["title"], rows, cells, notes, IMAGENET_NOTE)


def table3(runs_dir: Path | list[Path]) -> Table:
    """Paper Table 3: top-1 and top-5 error (%, 10-crop) on ImageNet val: other methods
    (paper only), plain-34, ResNet-34 with options A/B/C, ResNet-50/101/152 (option B)."""
    rs = RunSet.load(runs_dir)
    t = paper.table(3)
    names = [r[0] for r in t["rows"]]
    vals = {r[0]: (r[1], r[2]) for r in t["rows"]}
    notes: list[str] = []
    cells: list[Cell] = []
    rows = _imagenet_rows(rs, names, vals, "10-crop", notes, cells, set(t["reproducible_rows"]))
    return _finish(3, "3", t["title"], rows, cells, notes, IMAGENET_NOTE,
                   "The CIFAR-10 counterpart (options A/B/C at 20-56 layers): `resnet-repro table cifar-shortcuts`.")


def table4(runs_dir: Path | list[Path]) -> Table:
    """Paper Table 4: single-model top-1/top-5 error (%) on ImageNet val with multi-scale
    fully-convolutional testing (ResNet-34 B/C, 50, 101, 152); other methods paper only."""
    rs = RunSet.load(runs_dir)
    t = paper.table(4)
    names = [r[0] for r in t["rows"]]
    vals = {r[0]: (r[1], r[2]) for r in t["rows"]}
    repro = {n for n in names if parse_net(n) is not None}
    notes: list[str] = []
    cells: list[Cell] = []
    rows = _imagenet_rows(rs, names, vals, "multi-scale", notes, cells, repro)
    scales = ", ".join(map(str, t["test_scales_shorter_side"]))
    return _finish(4, "4", t["title"], rows, cells, notes,
                   f"Paper: ImageNet 2012 val, fully-convolutional testing averaged over shorter sides {scales}. "
                   "Our numbers come from each run's eval-<protocol>.json (multi-scale protocol).")


# ---------------------------------------------------------------------------- not reproduced
def _paper_only(number: int, why: str) -> Table:
    t = paper.table(number)
    cols = t.get("columns") or ["top-5 error (%)"]
    rows = []
    for r in t["rows"]:
        row = {"method": r[0]}
        for c, v in zip(cols, r[1:], strict=False):
            row[f"paper {c}"] = _num(v)
        row["ours"] = f"not reproduced: {why}"
        rows.append(row)
    cap = f"Ours: not reproduced ({why}); the table shows the paper's values."
    if t.get("note"):
        cap += f" Paper: {t['note']}."
    return Table(number, t["title"], pd.DataFrame(rows), cap, [], [], str(number))


def table5(runs_dir: Path | list[Path] | None = None) -> Table:
    """Paper Table 5 (ensembles, ImageNet test top-5 error): paper values only."""
    return _paper_only(5, "ensembles of ImageNet models and the ImageNet test server are not part of this project")


def table7(runs_dir: Path | list[Path] | None = None) -> Table:
    """Paper Table 7 (PASCAL VOC detection mAP with Faster R-CNN): paper values only."""
    return _paper_only(7, "object detection (Faster R-CNN) is not implemented")


def table8(runs_dir: Path | list[Path] | None = None) -> Table:
    """Paper Table 8 (COCO detection mAP with Faster R-CNN): paper values only."""
    return _paper_only(8, "object detection (Faster R-CNN) is not implemented")


# ---------------------------------------------------------------------------- CIFAR-10
@cache
def _cifar_params_m(arch: str, shortcut: str | None, num_classes: int = 10) -> float:
    """Parameters (millions) of a CIFAR net with ``num_classes`` outputs (10: CIFAR-10,
    100: CIFAR-100), counted on the meta device."""
    import torch

    from resnet_repro.models import build, count_params

    with torch.device("meta"):
        return count_params(build(arch, shortcut, num_classes=num_classes)) / 1e6


def _test_error(row) -> float | None:
    v = row.get("final_test_error")
    return float(v) if _present(v) else None


def best_epoch_test_error(row) -> float | None:
    """The lowest test error (%) over a run's ``eval`` events (``metrics.jsonl``): what the
    presets' recipes report (their best test epoch; chosen on the test set). None for a
    run without a logged test error."""
    with warnings.catch_warnings():  # a corrupt line is reported by the commands that draw the log
        warnings.simplefilter("ignore")
        events = read_metrics(Path(str(row["run_dir"])))
    errs = [float(e["test_error"]) for e in events if e.get("event") == "eval"
            and isinstance(e.get("test_error"), (int, float)) and not isinstance(e.get("test_error"), bool)
            and math.isfinite(e["test_error"])]
    return min(errs) if errs else None


CIFAR_PAPER_NOTE = ("Paper: 64k iterations on the original CIFAR-10, 45k/5k split for tuning, single-view test "
                    "error (Sec. 4.2; ResNet-110: best of 5 runs and mean ± std).")
CIFAR100_NOTE = ("Paper: reports no CIFAR-100 results (its CIFAR experiments, Sec. 4.2, are on CIFAR-10 only), so "
                 "the paper column is empty; these are the nets of Table 6 with a 100-way fc, trained and tested "
                 "as our CIFAR-10 runs are (45k/5k split of the 50k training images, per-pixel mean, single-view "
                 "test error on the 10k test images).")


def schedule_label(schedule: str) -> str:
    """The schedule column of a CIFAR row: the schedule's name, and for a preset of
    another reproduction that it is their recipe and what its error is."""
    if schedule in PRESETS:
        return f"{schedule} (their recipe, not the paper's; best test epoch)"
    return schedule


def _preset_caption(rows: list[dict]) -> str:
    """The caption sentence for preset rows (empty without any)."""
    from resnet_repro import published

    names = sorted({str(r["schedule_key"]) for r in rows if r.get("schedule_key") in PRESETS})
    if not names:
        return ""
    what = "; ".join(f"{n}: {published.recipe(n)['name']}, {PRESETS[n].iterations:,} iterations "
                     f"({PRESETS[n].iterations // PRESETS[n].epoch_iterations} epochs of "
                     f"{PRESETS[n].epoch_iterations})" for n in names)
    return (f"Rows of the presets of other reproductions ({what}) follow those recipes, not the paper's "
            "protocol: all 50,000 training images, no validation split; their error is each run's best test "
            "error over its per-epoch evaluations, as those recipes report it (chosen on the test set), never "
            "averaged with paper or quick runs.")


def _cifar_net_rows(rs: RunSet, dataset: str, notes: list[str], cells: list[Cell], progress: list[str],
                    paper_cols: bool) -> list[dict]:
    """Table 6's rows of our nets on ``dataset``: ResNet-20..1202 (option A), then the
    plain nets (110/1202 only where they have runs), one row per schedule
    (:func:`schedule_cells`). ``paper_cols``: fill the paper's columns from Table 6
    (CIFAR-10); else they hold "—"."""
    ref = paper.cifar_table6()
    classes = 100 if dataset == "cifar100" else 10
    rows = []
    for residual in (True, False):
        for depth in (20, 32, 44, 56, 110, 1202):
            arch = f"{'resnet' if residual else 'plain'}{depth}"
            sc = "A" if residual else None
            found = schedule_cells(rs, dataset, arch, sc, _test_error, notes)
            if not residual and not found and depth in (110, 1202):
                continue
            p = ref[depth] if residual else {}
            if not paper_cols:
                p_err, p_best = "— (not in the paper)", "—"
            elif residual:
                p_err = fmt_err(p["mean"], p["std"], p.get("runs") or 5) if p.get("mean") else _num(p.get("error"))
                p_best = f"{p['best']:.2f}" if p.get("best") else "—"
            else:
                p_err, p_best = "(Fig. 6 only)", "—"
            base = {"net": f"{'ResNet' if residual else 'plain'}-{depth}",
                    "params (M)": f"{_cifar_params_m(arch, 'A', classes):.2f}",
                    "paper params (M)": f"{p['params'] / 1e6:.2f}" if residual and paper_cols else "—",
                    "paper error (%)": p_err, "paper best error (%)": p_best}
            if not found:
                found = [("", Cell(rs.df.iloc[0:0], [], []), None)]
            for sched, c, running in found:
                cells.append(c)  # an empty cell still brings its notes (diverged runs) to the caption
                if running is not None:
                    progress.append(f"{len(running)} {arch} run(s) at schedule {sched}")
                ours = (c.text() if c.n else progress_text(running) if running is not None
                        else _not_run(dataset, arch, sc, rs))
                rows.append({**base, "our error (%)": ours, "our best error (%)": f"{c.best:.2f}" if c.n else "—",
                             "n": c.n, "schedule": schedule_label(sched), "schedule_key": sched,
                             "mean": c.mean, "std": c.std, "best": c.best})
    return rows


def _schedules_extra(rows: list[dict], progress: list[str]) -> str:
    keys = {r.get("schedule_key") for r in rows}
    extra = ("Rows per schedule (paper: 64,000 iterations; quick: 4,000), never averaged together. "
             if "paper" in keys and "quick" in keys else "")
    pre = _preset_caption(rows)
    if pre:
        extra += pre + " "
    if progress:
        extra += "In progress, not counted in any mean: " + ", ".join(progress) + "."
    for r in rows:
        r.pop("schedule_key", None)
    return extra.strip()


def table6(runs_dir: Path | list[Path]) -> Table:
    """Paper Table 6: CIFAR-10 test error (%) of ResNet-20..1202 (option A), ours beside
    the paper's; the paper's other methods (paper values only) above, and the plain nets
    of the same depths below (the paper shows them only in Fig. 6).

    Our cells: mean ± std over seeds (sample std, ddof=1), n, and the best run; the
    hidden columns ``mean``, ``std``, ``best`` hold the numbers. Only complete CIFAR-10
    runs count (CIFAR-100 runs have their own table: :func:`table6_cifar100`), and only
    runs of one recipe per row: one row per schedule (paper, quick), and labelled rows
    for the presets of other reproductions (their best test epoch).
    """
    rs = RunSet.load(runs_dir)
    notes: list[str] = []
    cells: list[Cell] = []
    rows = []
    nan = math.nan
    for name, layers, params, err in paper.table(6)["rows"]:
        if name == "ResNet":
            continue
        p_err = fmt_err(err["mean"], err["std"], 5) if isinstance(err, dict) else _num(err)
        rows.append({"net": f"{name}" + (f"-{layers}" if layers else ""), "params (M)": "—",
                     "paper params (M)": f"{params / 1e6:.2f}" if params else "—", "paper error (%)": p_err,
                     "paper best error (%)": f"{err['best']:.2f}" if isinstance(err, dict) else "—",
                     "our error (%)": "— (other method)", "our best error (%)": "—", "n": 0, "schedule": "",
                     "mean": nan, "std": nan, "best": nan})
    progress: list[str] = []
    rows += _cifar_net_rows(rs, "cifar10", notes, cells, progress, paper_cols=True)
    extra = _schedules_extra(rows, progress)
    t = _finish(6, "6", paper.table(6)["title"], rows, cells, notes, CIFAR_PAPER_NOTE, extra)
    t.blocks.append(_reference_block(runs_dir, cells))
    return t


def table6_cifar100(runs_dir: Path | list[Path]) -> Table:
    """``table 6 --dataset cifar100``: CIFAR-100 test error (%) of the nets of Table 6
    (ResNet-20..1202 option A, the plain nets below), from CIFAR-100 runs only, one row
    per schedule as in :func:`table6`. Not in the paper: the paper columns hold "—" and
    the caption says the paper reports no CIFAR-100 results."""
    rs = RunSet.load(runs_dir)
    notes: list[str] = []
    cells: list[Cell] = []
    progress: list[str] = []
    rows = _cifar_net_rows(rs, "cifar100", notes, cells, progress, paper_cols=False)
    extra = _schedules_extra(rows, progress)
    return _finish(0, "6-cifar100", "CIFAR-100 test error of the nets of Table 6 (not in the paper)", rows, cells,
                   notes, CIFAR100_NOTE, extra)


def _reference_block(runs_dir: Path | list[Path], cells: list[Cell]) -> Table:
    """Table 6's reference block: published checkpoints on the copy the cells' runs used."""
    from resnet_repro.report.reference import reference_block

    return reference_block(runs_dir, _used(cells))


# The project's two CIFAR-10 protocols: each gets its own row of Table 6 where it has runs.
ROW_SCHEDULES = ("paper", "quick")


def schedule_cells(rs: RunSet, dataset: str, arch: str, shortcut: str | None, value,
                   notes: list[str]) -> list[tuple[str, Cell, pd.DataFrame | None]]:
    """The rows one CIFAR net gets in Table 6: ``[(schedule, cell, in_progress_runs)]``.

    One row per schedule of :data:`ROW_SCHEDULES` (paper first) that has complete runs or
    runs in progress (``in_progress_runs``, None if none; a row with only those has an
    empty cell and shows :func:`progress_text`). Where neither schedule has runs, the one row of :func:`select`
    (the recipe with the most iterations: smoke or custom runs; never a preset), also when it holds only
    notes (diverged runs). Then one row per preset of another reproduction
    (:data:`resnet_repro.train.schedule.PRESETS`) that has runs, whose value is each run's
    :func:`best_epoch_test_error` (their recipes' number) instead of ``value``. Empty where the net has no runs at all. Runs of other schedules beside paper/quick rows are named in the
    cells' ``others`` notes, never mixed in."""
    out: list[tuple[str, Cell, pd.DataFrame | None]] = []
    for sched in ROW_SCHEDULES:
        c = select(rs, dataset, arch, shortcut, value, notes, schedule=sched)
        running = in_progress(rs, dataset, arch, shortcut, sched)
        if c.n or len(running):
            out.append((sched, c, running if len(running) else None))
    presets: list[tuple[str, Cell, pd.DataFrame | None]] = []
    for sched in PRESETS:
        c = select(rs, dataset, arch, shortcut, best_epoch_test_error, notes, schedule=sched)
        running = in_progress(rs, dataset, arch, shortcut, sched)
        if c.n or len(running):
            presets.append((sched, c, running if len(running) else None))
    if not out:
        c = select(rs, dataset, arch, shortcut, value, notes)
        if presets:  # the presets have rows of their own: no note about them in this one
            c.others = [o for o in c.others if " preset (not the paper's protocol) " not in o]
        if c.n or c.others:  # runs of another schedule, or only notes (e.g. diverged runs) for the caption
            out.append((", ".join(sorted(set(map(str, c.runs["schedule"])))) if c.n else "", c, None))
        return out + presets
    df = rs.df
    shown = [s for s, _, _ in out] + list(PRESETS)
    rest = df[_net_mask(df, dataset, arch, shortcut) & (df["status"] == "complete")
              & ~df["schedule"].isin(shown)] if not df.empty else df
    net = f"{arch}{' ' + shortcut if shortcut else ''}"
    tuned = (rest["init_weights_sha256"].map(_present) if len(rest) and "init_weights_sha256" in rest
             else pd.Series(False, index=rest.index, dtype=bool))
    if tuned.any():
        out[0][1].others.append(f"{int(tuned.sum())} {net} run(s) fine-tuned from --init-weights, not mixed in")
    rest = rest[~tuned]
    for sched, n in sorted(rest["schedule"].astype(str).value_counts().items()) if len(rest) else []:
        out[0][1].others.append(f"{n} {net} run(s) at schedule {sched} not mixed in")
    return out + presets


def table_cifar_shortcuts(runs_dir: Path | list[Path]) -> Table:
    """CIFAR-10 test error (%) of ResNet-20/32/44/56 with shortcut options A, B, C (Sec.
    3.3): not in the paper, the CIFAR-10 counterpart of Table 3. The paper column holds
    Table 6's option-A error."""
    ref = paper.cifar_table6()
    rs = RunSet.load(runs_dir)
    notes: list[str] = []
    cells: list[Cell] = []
    rows = []
    for depth in (20, 32, 44, 56):
        for sc in ("A", "B", "C"):
            arch = f"resnet{depth}"
            c = select(rs, "cifar10", arch, sc, _test_error, notes)
            cells.append(c)
            rows.append({
                "net": f"ResNet-{depth} {sc}",
                "params (M)": f"{_cifar_params_m(arch, sc):.3f}",
                "paper error (%)": _num(ref[depth]["error"]) if sc == "A" else "— (not in the paper)",
                "our error (%)": c.text() if c.n else _not_run("cifar10", arch, sc, rs),
                "our best error (%)": f"{c.best:.2f}" if c.n else "—",
                "n": c.n,
                "schedule": ", ".join(sorted(set(map(str, c.runs["schedule"])))) if c.n else "",
                "mean": c.mean, "std": c.std, "best": c.best,
            })
    return _finish(0, "cifar-shortcuts", "CIFAR-10 test error with shortcut options A, B, C (not in the paper)",
                   rows, cells, notes, "Paper: option A only (Table 6); B and C are the ImageNet ablation of Table 3.")


NO_RUNS_TABLES = ("1", "5", "7", "8")  # measured from the code or paper values only
BUILDERS = {"1": table1, "2": table2, "3": table3, "4": table4, "5": table5, "6": table6, "7": table7,
            "8": table8, "cifar-shortcuts": table_cifar_shortcuts}


def get_table(n: int | str, runs_dir: Path | list[Path], dataset: str | None = None) -> Table:
    """Table ``n`` (1..8, or ``"cifar-shortcuts"``) rebuilt from the runs under ``runs_dir``;
    ``dataset`` (Table 6 only): ``cifar10`` (the default, the paper's) or ``cifar100``
    (:func:`table6_cifar100`, not in the paper).

    Warns (``UserWarning``) once per run left out because its config differs from its
    spec, and per damaged run (see :func:`resnet_repro.runs.load_runs`).

    Raises:
        UserError: for a table the paper does not have, a ``dataset`` given to another
            table or not cifar10/cifar100, or (tables that read runs) a ``runs_dir``
            that does not exist.
    """
    key = str(n).strip().lower().removeprefix("table").strip()
    if key not in BUILDERS:
        raise UserError(f"the paper has Tables 1 to 8, not {n!r}; also available: cifar-shortcuts")
    if dataset is not None and key != "6":
        raise UserError(f"--dataset applies to Table 6 only (cifar10 or cifar100), not to table {n}; drop --dataset")
    if dataset not in (None, "cifar10", "cifar100"):
        raise UserError(f"unknown --dataset {dataset!r} for Table 6; choose cifar10 (the paper's) or cifar100")
    if key not in NO_RUNS_TABLES:
        check_roots(runs_dir)
    if dataset == "cifar100":
        return table6_cifar100(runs_dir)
    return BUILDERS[key](runs_dir)


# ---------------------------------------------------------------------------- text output
def to_text(t: Table, fmt: str) -> str:
    """``t`` as Markdown, CSV or LaTeX text (with title and caption where the format
    allows). Deterministic: the same table gives the same bytes on every machine.

    Raises:
        UserError: for another format.
    """
    if fmt not in FORMATS or fmt == "rich":
        raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    shown = t.shown()
    head = f"{t.label}. {t.title}" if t.number else t.title
    if fmt == "markdown":
        text = f"**{head}**\n\n{_md(shown)}\n\n_{t.caption}_\n"
    elif fmt == "csv":
        frame = t.frame.drop(columns=[c for c in ("runs",) if c in t.frame.columns])
        text = frame.rename(columns=_csv_names(frame)).to_csv(index=False)
    elif fmt == "latex":
        text = f"% {head}\n% {t.caption}\n{_latex(shown)}"
    else:
        raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    for b in t.blocks:  # below the table, separated by a blank line (CSV: a second header row follows)
        text += "\n" + to_text(b, fmt)
    return text


def _csv_names(frame: pd.DataFrame) -> dict[str, str]:
    """CSV headers for the numeric companions of the display columns: a CSV has no
    caption, so each says which error it holds (top-1 where the table has top-5 too)."""
    what = "top-1 error" if "top5_mean" in frame.columns else "error"
    return {"mean": f"our {what} mean (%)", "std": f"our {what} std (points)", "best": f"our {what} min (%)",
            "top5_mean": "our top-5 error mean (%)", "top5_std": "our top-5 error std (points)",
            "top5_best": "our top-5 error min (%)"}


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v)


def _md(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(df.columns) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def _latex(df: pd.DataFrame) -> str:
    def esc(s: str) -> str:
        out = []
        for ch in s:
            out.append({"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$",
                        "{": r"\{", "}": r"\}", "±": r"$\pm$", "—": "---", "~": r"\textasciitilde{}",
                        "^": r"\textasciicircum{}"}.get(ch, ch))
        return "".join(out)

    cols = "l" * len(df.columns)
    lines = [rf"\begin{{tabular}}{{{cols}}}", r"\toprule", " & ".join(esc(str(c)) for c in df.columns) + r" \\",
             r"\midrule"]
    lines += [" & ".join(esc(_cell(v)) for v in row) + r" \\" for row in df.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"
