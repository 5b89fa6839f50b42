"""Paper Fig. 7: standard deviations of the layer responses on CIFAR-10 (Sec. 4.2).

Two panels, as in the paper: top, the std of each 3x3 layer in network order; bottom,
the same values sorted in descending order. Plain nets are dashed, ResNets solid. The
curves come from ``responses.json`` files written by ``resnet-repro responses``
(:mod:`resnet_repro.analysis.responses`; 6n+1 layers per 6n+2-layer net, stem
included). Reports never train nor measure: a run without ``responses.json`` is
reported with the command that makes it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from resnet_repro import paper
from resnet_repro.analysis.responses import RESPONSES_FILE, read_responses
from resnet_repro.errors import UserError
from resnet_repro.models import spec
from resnet_repro.report.figures import Drawn
from resnet_repro.report.figures import save as save_figure
from resnet_repro.runcheck import check_files, warning_line
from resnet_repro.runs import data_copy_name, find_runs, read_json

# Colours by depth, so plain-20 and ResNet-20 share one (dashed vs solid).
_DEPTH_COLOURS = {20: "tab:blue", 32: "tab:purple", 44: "tab:brown", 56: "tab:orange", 110: "tab:green",
                  1202: "tab:red"}
_OTHER_COLOURS = ("tab:gray", "tab:olive", "tab:cyan", "tab:pink")


def _label(name: str) -> str:
    """The paper's spelling of a net name (``plain-20``, ``ResNet-56``)."""
    return spec(name).paper_name


def collect_responses(runs_dirs: list[Path]) -> list[dict]:
    """The ``responses.json`` of the runs under ``runs_dirs`` that Fig. 7 draws: CIFAR-10
    runs, plain nets and option-A ResNets (the paper's), one run per net (the longest
    schedule, then the lowest seed), ordered by depth with the plain net first.

    Warns (``UserWarning``) about runs skipped: finished runs without ``responses.json``
    (naming the command that makes it), runs without it and without final weights (in
    progress, or logs stored without checkpoints: nothing to measure there), a ``responses.json`` that is unreadable or holds another
    number of layers than its net has (6n+1 for a 6n+2-layer net), other shortcut
    options, and the paper's Fig. 7 nets that have no responses: with the command that
    measures them where a run of the net exists (``resnet-repro responses RUN``), else
    the one that trains it first (further runs of a drawn net, e.g. other seeds, are
    not drawn and not warned about).

    Raises:
        UserError: if no run under ``runs_dirs`` has a usable ``responses.json``.
    """
    roots = [Path(runs_dirs)] if isinstance(runs_dirs, (str, Path)) else [Path(p) for p in runs_dirs]
    chosen: dict[str, tuple[tuple, dict]] = {}
    missing: list[str] = []  # finished runs (final.pt here) that `resnet-repro responses` can measure
    no_weights: list[str] = []  # runs in progress, or logs stored without checkpoints: nothing to measure here
    existing: dict[str, list[str]] = {}  # arch -> finished runs of it (final.pt) that Fig. 7 could draw
    for d in find_runs(roots):
        arch = _option_a_arch(d)
        if arch is not None and (d / "checkpoints" / "final.pt").is_file():
            existing.setdefault(arch, []).append(str(d))
        r = read_responses(d)
        if r is None:
            if (d / RESPONSES_FILE).exists():
                warnings.warn(f"{d}/{RESPONSES_FILE} is unreadable or malformed; left out (measure again with "
                              f"`resnet-repro responses {d}`)", stacklevel=2)
            elif (d / "checkpoints" / "final.pt").is_file():
                missing.append(str(d))
            else:
                no_weights.append(str(d))
            continue
        problems = check_files(d)  # the run tables would count: its own files agree (resnet_repro.runcheck)
        if problems:
            warnings.warn(warning_line(d, problems), stacklevel=2)
            continue
        n_layers = spec(r["arch"]).depth - 1  # every 3x3 conv, stem included: 6n+1 of a 6n+2-layer net
        if len(r["layers"]) != n_layers:
            warnings.warn(f"{d}/{RESPONSES_FILE} holds {len(r['layers'])} layers, but {_label(r['arch'])} has "
                          f"{n_layers}; left out (measure again with `resnet-repro responses {d}`)", stacklevel=2)
            continue
        if r.get("shortcut") not in (None, "A"):
            warnings.warn(f"{d}: option {r['shortcut']} run left out of Fig. 7 (the paper's uses option A)",
                          stacklevel=2)
            continue
        r = {**r, "run_dir": str(d)}
        key = (-int(r.get("iterations") or 0), int(r.get("seed") or 0), str(d))
        old = chosen.get(r["arch"])  # the longest schedule, then the lowest seed (as Figs. 1 and 6 draw)
        if old is None or key < old[0]:
            chosen[r["arch"]] = (key, r)
    if missing:
        shown = " ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        warnings.warn(f"{len(missing)} run(s) without responses.json left out; measure them with "
                      f"`resnet-repro responses {shown}`", stacklevel=2)
    if no_weights:
        shown = " ".join(no_weights[:3]) + (" ..." if len(no_weights) > 3 else "")
        warnings.warn(f"{len(no_weights)} run(s) without responses.json and without final weights "
                      f"(checkpoints/final.pt) left out: {shown} (in progress, or logs stored without "
                      "checkpoints; measure a run with `resnet-repro responses RUN_DIR` where it completed)",
                      stacklevel=2)
    if not chosen:
        if not roots:
            raise UserError("Figure 7 is drawn from runs only, and there are none here (no --runs given and no "
                            "results/ folder); train CIFAR-10 runs (`resnet-repro run cifar10-depth`), measure "
                            "them with `resnet-repro responses RUN_DIR...`, or give --runs")
        where = ", ".join(str(p) for p in roots)
        raise UserError(f"no run with responses.json under {where}; run `resnet-repro responses RUN_DIR...` "
                        "on finished CIFAR-10 runs first")
    want = [n.lower().replace("-", "") for n in paper.figure(7)["nets"]]
    absent = [n for n in want if n not in chosen]
    measurable = [n for n in absent if existing.get(n)]
    untrained = [n for n in absent if not existing.get(n)]
    if measurable:
        runs_ = " ".join(sorted(existing[n])[0] for n in measurable)
        warnings.warn("Fig. 7 nets without responses: " + ", ".join(_label(n) for n in measurable) +
                      f" (their runs exist: measure them with `resnet-repro responses {runs_}`)", stacklevel=2)
    if untrained:
        warnings.warn("Fig. 7 nets without responses: " + ", ".join(_label(n) for n in untrained) +
                      " (no finished run: train them, e.g. `resnet-repro train --arch " + untrained[0] +
                      "`, then `resnet-repro responses RUN_DIR`)", stacklevel=2)
    out = [r for _, r in chosen.values()]
    out.sort(key=lambda r: (spec(r["arch"]).depth, spec(r["arch"]).residual))
    return out


def _option_a_arch(run_dir: Path) -> str | None:
    """The arch of a CIFAR-10 run Fig. 7 could draw (a plain net or an option-A ResNet),
    read from its config.json; None for other runs or an unreadable config."""
    cfg = (read_json(Path(run_dir) / "config.json") or {}).get("config")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("arch"), str):
        return None
    if cfg.get("dataset", "cifar10") not in (None, "cifar10") or cfg.get("shortcut") not in (None, "A"):
        return None
    try:
        return spec(cfg["arch"]).name if spec(cfg["arch"]).family == "cifar" else None
    except UserError:
        return None


def _describe(rs: list[dict]) -> str:
    """Subtitle naming schedule(s), image set and data copy."""
    scheds = sorted({f"{r['schedule']} ({int(r['iterations']):,} iterations)" for r in rs})
    splits = sorted({f"{r['split']} set, {int(r['images']):,} images" for r in rs})
    copies = set()
    for r in rs:
        cfg = (read_json(Path(r["run_dir"]) / "config.json") or {}).get("config")
        copy = data_copy_name(cfg.get("data_dir") if isinstance(cfg, dict) else None, r.get("data_source_kind"))
        if copy:
            copies.add(copy)
    line = "Ours: CIFAR-10 " + "; ".join(splits) + "; schedule " + ", ".join(scheds) + "; lowest seed of each net"
    return line + ("\ndata: " + ", ".join(sorted(copies)) if copies else "")


def figure7(runs_dirs: list[Path], out_base: Path) -> list[Path]:
    """Draw paper Fig. 7 (see :func:`build_figure7`) and return ``[out_base.png,
    out_base.pdf]``.

    Raises:
        UserError: as :func:`build_figure7`.
    """
    return build_figure7(runs_dirs, out_base)[1]


def build_figure7(runs_dirs: list[Path], out_base: Path) -> tuple[Drawn, list[Path]]:
    """Draw paper Fig. 7 from the runs under ``runs_dirs`` and write ``out_base.png``
    and ``out_base.pdf``.

    Top panel: std of the response of each 3x3 layer (x: layer index, 1-based, network
    order, stem included); bottom panel: the same stds sorted in descending order (x:
    rank). Plain nets dashed, ResNets solid, one colour per depth. The subtitle names the
    schedule, the image set and the data copy of the runs. The files are written
    atomically and without dates in their metadata, so the same inputs rebuild them
    byte for byte.

    Args:
        runs_dirs: run directories or folders of runs (searched recursively).
        out_base: output path without suffix, e.g. ``figures/figure7``.

    Returns:
        The drawn figure (its title, as in the figure with a newline before the
        subtitle, and the run directories behind it) and ``[out_base.png, out_base.pdf]``.

    Raises:
        UserError: no run with ``responses.json`` (see :func:`collect_responses`), or an
            unwritable output location.
    """
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    rs = collect_responses(runs_dirs)
    out_base = Path(out_base)
    others = iter(_OTHER_COLOURS * 8)
    colours: dict[int, str] = {}
    with matplotlib.rc_context({"svg.hashsalt": "figure7", "font.size": 9}):
        fig = Figure(figsize=(6.4, 6.4), layout="constrained")  # Agg canvas, no pyplot state
        ax1, ax2 = fig.subplots(2, 1)
        for r in rs:
            s = spec(r["arch"])
            if s.depth not in colours:
                colours[s.depth] = _DEPTH_COLOURS.get(s.depth) or next(others)
            std = [float(layer["std"]) for layer in r["layers"]]
            idx = list(range(1, len(std) + 1))
            style = dict(color=colours[s.depth], linestyle="-" if s.residual else "--", linewidth=1.2,
                         label=s.paper_name)
            ax1.plot(idx, std, **style)
            ax2.plot(idx, sorted(std, reverse=True), **style)
        ax1.set_xlabel("layer index (original)")
        ax2.set_xlabel("layer index (sorted by magnitude)")
        for ax in (ax1, ax2):
            ax.set_ylabel("std")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlim(left=0)
            ax.set_ylim(bottom=0)
            ax.grid(True, linewidth=0.3, alpha=0.6)
            ax.legend(fontsize=8, ncol=2)
        title = "Fig. 7: std of the 3x3 layer responses (after BN, before ReLU/addition)\n" + _describe(rs)
        fig.suptitle(title, fontsize=9)
        paths = save_figure(fig, out_base, dpi=150)
    return Drawn(7, fig, title, sorted(r["run_dir"] for r in rs)), paths
