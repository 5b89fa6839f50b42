"""Tables rebuilt from stored runs, with the paper's numbers beside ours.

Each ``tableN_frame`` returns a pandas DataFrame plus a caption that names the schedule,
data copy and hardware of our numbers; :func:`render` prints it with rich or writes
Markdown / CSV / LaTeX.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from resnet_repro import paper
from resnet_repro.errors import UserError
from resnet_repro.models import build, count_params
from resnet_repro.runs import load_runs

FORMATS = ("rich", "markdown", "csv", "latex")


@dataclass
class Table:
    """A rebuilt table: ``frame`` (one row per paper row), ``title`` and ``caption``."""

    number: int
    title: str
    frame: pd.DataFrame
    caption: str


def fmt_err(mean: float | None, std: float | None = None, n: int | None = None) -> str:
    """``"7.51"``, ``"6.61 ± 0.16 (n=5)"`` or ``"—"``."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    if n and n > 1 and std is not None and not math.isnan(std):
        return f"{mean:.2f} ± {std:.2f} (n={n})"
    return f"{mean:.2f}"


def describe_runs(df: pd.DataFrame) -> str:
    """Caption text naming the schedules, data copies and hardware behind ``df``."""
    if df.empty:
        return "No runs found: the table shows the paper's values only."
    parts = []
    scheds = sorted({f"{s} ({int(i):,} iterations)" for s, i in zip(df["schedule"], df["iterations"], strict=True)})
    parts.append("schedule: " + ", ".join(scheds))
    kinds = sorted({str(k) for k in df["data_source_kind"].dropna()})
    if kinds:
        names = [("original CIFAR-10 batches" if k == "cifar-10-batches-py" else f"re-encoded copy, {k}") for k in kinds]
        parts.append("data: " + ", ".join(names))
    hw = sorted({str(h) for h in df["hardware"].dropna()})
    if hw:
        parts.append("hardware: " + ", ".join(hw))
    return "Ours: " + "; ".join(parts) + "."


def _cifar_runs(runs_dir: Path | list[Path]) -> pd.DataFrame:
    df = load_runs(runs_dir)
    if df.empty:
        return df
    df = df[(df["dataset"] == "cifar10") & (df["status"] == "complete")]
    return df


def table6(runs_dir: Path | list[Path]) -> Table:
    """Paper Table 6: CIFAR-10 test error (%) of ResNet-20..1202 (option A), ours beside
    the paper's; plain nets of the same depths are added below (the paper shows them
    only in Fig. 6).

    Our cells: mean ± std over seeds (sample std, ddof=1), n, and the best run. Only
    complete runs with shortcut A trained with the 45k/5k split or on all 50k count;
    the schedule of each row is named in the ``schedule`` column.
    """
    ref = paper.cifar_table6()
    df = _cifar_runs(runs_dir)
    rows = []
    for residual in (True, False):
        for depth in (20, 32, 44, 56, 110, 1202):
            name = f"{'resnet' if residual else 'plain'}{depth}"
            sub = df[(df["arch"] == name) & ((df["shortcut"] == "A") | (not residual))] if not df.empty else df
            p = ref[depth] if residual else {}
            n = len(sub)
            errs = sub["final_test_error"].astype(float) if n else pd.Series(dtype=float)
            mean = float(errs.mean()) if n else None
            std = float(errs.std(ddof=1)) if n > 1 else None
            best = float(errs.min()) if n else None
            if not residual and n == 0 and depth in (110, 1202):
                continue
            if residual:
                p_err = fmt_err(p.get("mean"), p.get("std"), 5) if p.get("mean") else fmt_err(p.get("error"))
                p_best = f"{p['best']:.2f}" if p.get("best") else "—"
            else:
                p_err, p_best = "(Fig. 6 only)", "—"
            rows.append({
                "net": f"{'ResNet' if residual else 'plain'}-{depth}",
                "params (M)": round(count_params(build(name, "A")) / 1e6, 2),
                "paper params (M)": round(p["params"] / 1e6, 2) if residual else None,
                "paper error (%)": p_err,
                "paper best (%)": p_best,
                "our error (%)": fmt_err(mean, std, n) if n else f"not run: train --arch {name}",
                "our best (%)": "—" if n == 0 else f"{best:.2f}",
                "n": n,
                "schedule": ", ".join(sorted(set(sub["schedule"]))) if n else "",
                "mean": mean, "std": std, "best": best,
            })
    frame = pd.DataFrame(rows)
    cap = describe_runs(df) + " Empty cells: `resnet-repro run cifar10-depth --profile quick` fills them all." + " Paper: 64k iterations on original CIFAR-10 (Table 6; ResNet-110: mean ± std over 5 runs, best)."
    return Table(6, paper.table(6)["title"], frame, cap)


DISPLAY_DROP = ("mean", "std", "best")


def get_table(n: int, runs_dir: Path | list[Path]) -> Table:
    """Table ``n`` rebuilt from the runs under ``runs_dir``.

    Raises:
        UserError: for a table number the paper does not have or that is not built yet.
    """
    builders = {6: table6}
    if n not in range(1, 9):
        raise UserError(f"the paper has Tables 1 to 8, not {n}")
    if n not in builders:
        raise UserError(f"table {n} is not implemented yet; available: {', '.join(map(str, sorted(builders)))}")
    return builders[n](runs_dir)


def to_text(t: Table, fmt: str) -> str:
    """``t`` as Markdown, CSV or LaTeX text (with title and caption where the format
    allows)."""
    shown = t.frame.drop(columns=[c for c in DISPLAY_DROP if c in t.frame.columns])
    if fmt == "markdown":
        return f"**Table {t.number}. {t.title}**\n\n{shown.to_markdown(index=False) if _has_tabulate() else _md(shown)}\n\n_{t.caption}_\n"
    if fmt == "csv":
        return shown.to_csv(index=False)
    if fmt == "latex":
        body = shown.to_latex(index=False, escape=True) if _has_jinja() else _latex(shown)
        return f"% Table {t.number}. {t.title}\n% {t.caption}\n{body}"
    raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


def _has_jinja() -> bool:
    try:
        import jinja2  # noqa: F401
    except ImportError:
        return False
    return True


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
        for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                     ("±", r"$\pm$")):
            s = s.replace(a, b)
        return s

    cols = "l" * len(df.columns)
    lines = [rf"\begin{{tabular}}{{{cols}}}", r"\toprule", " & ".join(esc(c) for c in df.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(_cell(v)) for v in row) + r" \\" for row in df.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"
